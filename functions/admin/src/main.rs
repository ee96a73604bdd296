//! Lambda entry point: wiring only. The store is opened once, at cold start, with no network
//! call; the routes live in `lib.rs`.

use tollgate::adapters::aws::AwsConfigSource;
use tollgate::bootstrap::Stores;
use tollgate::config::{ProviderMode, Settings};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    tollgate::telemetry::init_json_logs();
    let settings = Settings::from_env(ProviderMode::Real, AwsConfigSource::LAMBDA)?;
    let stores = Stores::from_settings(&settings).await?;
    tollgate::lambda::serve(admin::AdminState::build(&stores)).await
}
