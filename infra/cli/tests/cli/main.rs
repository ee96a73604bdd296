//! The built `tollgate` binary, as operators and tenants run it: one test binary, a module per
//! command family (`cargo test -p tollgate-cli --test cli operator_cli::`).

mod ingest_cmd;
mod operator_cli;
mod usage_cli;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use tollgate::domain::ids::RequestId;
use tollgate::domain::usage::UsageEvent;

/// A successful 100 + 20 token call of `tenant` on `gpt-4o-mini` (alias `fast`).
fn usage_event(
    request_id: RequestId,
    tenant: &str,
    at: DateTime<Utc>,
    cost: Decimal,
) -> UsageEvent {
    UsageEvent {
        request_id,
        model_requested: "fast".into(),
        ..tollgate_tests::fixtures::ok_event(tenant, "gpt-4o-mini", at, cost)
    }
}
