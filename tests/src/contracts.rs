//! Contract suites: each port's promises as async functions over a backend, and the one
//! macro, [`contract_suite!`], that runs a suite against every backend.
//!
//! A suite file (`tests/tests/suite/*_contract.rs`, the profile, anomaly-scheduler and provider suites)
//! holds its contract functions, `async fn case(backend: &B)`, and one `async fn` per backend
//! returning `Option<B>`. `None` means the backend is not available here and the test passes
//! as skipped, with a line saying so; the emulator-backed openers (`moto::endpoint`, the
//! Qdrant URL) panic instead when `CI=true`, so CI can never skip a backend.
//!
//! ```ignore
//! tollgate_tests::contract_suite! {
//!     backends: [memory, dynamodb],
//!     cases: {
//!         keys_are_found_by_prefix => contract::keys,
//!     }
//! }
//! ```
//!
//! expands to `memory::keys_are_found_by_prefix` and `dynamodb::keys_are_found_by_prefix`,
//! each opening its backend, running the case and then [`Backend::finish`].

use std::future::Future;
use std::sync::Arc;

use tollgate::adapters::dynamodb::DynamoStore;
use tollgate::adapters::memory::MemoryStore;
use tollgate::ports::LimiterStore;

/// A backend a contract suite runs on: opened for each test, finished after a passing one.
pub trait Backend: Sized {
    /// Cleans up after a passing test (a real Qdrant's test collection). Nothing by default.
    fn finish(self) -> impl Future<Output = ()> {
        async {}
    }
}

impl Backend for MemoryStore {}
impl Backend for DynamoStore {}
impl Backend for Arc<dyn LimiterStore> {}

/// Runs every case of a suite against every backend, as `<backend>::<case>` tests (see the
/// module docs).
#[macro_export]
macro_rules! contract_suite {
    (backends: [$($backend:ident),+ $(,)?], cases: $cases:tt $(,)?) => {
        $( $crate::contract_suite!(@backend $backend $cases); )+
    };
    (@backend $backend:ident { $($name:ident => $case:path),* $(,)? }) => {
        mod $backend {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[tokio::test]
                async fn $name() {
                    let Some(backend) = super::$backend().await else {
                        return;
                    };
                    $case(&backend).await;
                    $crate::contracts::Backend::finish(backend).await;
                }
            )*
        }
    };
}
