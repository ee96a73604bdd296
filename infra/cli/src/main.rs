//! `tollgate`: the operator CLI and the local gateway.
//!
//! `tollgate serve` runs every function's routes in one process on the embedded default.

mod admin;
mod ingest_cmd;
mod init;
mod loadtest;
mod serve;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "tollgate",
    version,
    about = "Tollgate: a multi-tenant LLM gateway",
    long_about = admin::LONG_ABOUT
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
    /// Create the DynamoDB tables at the endpoint the AWS_* environment selects (existing
    /// tables are kept), or print them as CloudFormation with --cloudformation.
    Init(init::InitArgs),
    /// Send a folder of .txt and .md files to a gateway's `POST /v1/documents`, in batches.
    Ingest(ingest_cmd::IngestArgs),
    #[command(flatten)]
    Admin(admin::AdminCommand),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve::run(args).await,
        Command::Loadtest(args) => loadtest::run(args).await,
        Command::Init(args) => init::run(args).await,
        Command::Ingest(args) => ingest_cmd::run(args).await,
        Command::Admin(command) => admin::run(command).await,
    }
}
