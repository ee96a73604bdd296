//! The built `tollgate` binary, as operators and tenants run it: one test binary, a module per
//! command family (`cargo test -p tollgate-cli --test cli operator_cli::`); `tls` runs the
//! operator commands against moto behind TLS.

mod ingest_cmd;
mod operator_cli;
mod serve_admin;
mod tls;
mod usage_cli;

use std::process::Command;

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

/// The binary with an environment that can reach AWS only at `endpoint`: test credentials,
/// no profile, no instance metadata, no service-specific endpoint from the caller's shell.
fn tollgate_at(endpoint: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tollgate"));
    for var in [
        "AWS_PROFILE",
        "AWS_SESSION_TOKEN",
        "AWS_ENDPOINT_URL_DYNAMODB",
        "AWS_ENDPOINT_URL_CLOUDWATCH",
        "AWS_ENDPOINT_URL_SECRETS_MANAGER",
        "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
        "TOLLGATE_TABLE_PREFIX",
        "RUST_BACKTRACE",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("AWS_CONFIG_FILE", "/nonexistent")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_ENDPOINT_URL", endpoint);
    cmd
}
