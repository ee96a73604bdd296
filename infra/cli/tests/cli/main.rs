//! The built `tollgate` binary, as operators and tenants run it: one test binary, a module per
//! command family (`cargo test -p tollgate-cli --test cli operator_cli::`).

mod ingest_cmd;
mod operator_cli;
mod usage_cli;
