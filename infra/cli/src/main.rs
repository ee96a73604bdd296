//! `tollgate`: the operator CLI and the local gateway.
//!
//! `tollgate serve` runs every function's routes in one process on the embedded default.

mod loadtest;
mod serve;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "tollgate",
    version,
    about = "Tollgate: a multi-tenant LLM gateway"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole gateway locally on the embedded default (no AWS, no network, no keys).
    Serve(serve::ServeArgs),
    /// Closed-loop load test of a running gateway over loopback (keep-alive HTTP/1.1).
    Loadtest(loadtest::LoadtestArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve::run(args).await,
        Command::Loadtest(args) => loadtest::run(args).await,
    }
}
