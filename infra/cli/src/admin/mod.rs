//! The operator commands: `tenant`, `key`, `price`, `quota`, `replay`, `usage`, `user`,
//! `anomalies` and `audit`. Every change they make is recorded in the audit log, as
//! [`actor`].
//!
//! Each command is a function over the store ports it needs (so it runs against the embedded
//! `MemoryStore` in tests and against DynamoDB in production) and returns an [`Output`]: what
//! to print. Only [`emit`] prints. Bad flags are clap usage errors (exit code 2, before any
//! store is touched); store and validation failures are one-line errors (exit code 1).

pub mod anomalies;
pub mod audit;
pub mod key;
pub mod parse;
pub mod price;
pub mod quota;
pub mod replay;
pub mod tenant;
pub mod usage;
pub mod user;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod usage_tests;

use tollgate::adapters::alerts::MemoryAlerts;
use tollgate::adapters::aws::AwsConfigSource;
use tollgate::adapters::cloudwatch::CloudWatchAlerts;
use tollgate::bootstrap::Stores;
use tollgate::config::StoreKind;
use tollgate::config::anomaly::AnomalySettings;
use tollgate::ports::alerts::AnomalyAlerts;

/// `tollgate --help`: what the binary does, with a first session as the example.
pub const LONG_ABOUT: &str = "\
Tollgate: a multi-tenant LLM gateway.

`tollgate serve` runs the gateway locally on an in-memory store. The operator commands (tenant,
key, price, quota, replay, usage, anomalies, audit) manage a deployment's DynamoDB tables, found through
the standard AWS
environment (AWS_REGION, AWS_PROFILE or keys, AWS_ENDPOINT_URL for an emulator) and
--table-prefix. Every command has --help.

Example:
  export AWS_REGION=eu-west-1
  tollgate init
  tollgate tenant create acme --name 'Acme Rockets' --tier pro \\
    --system-prompt 'You help {{tenant_name}} customers. Today is {{date}}.' \\
    --route gpt-4o-mini=openai:gpt-4o-mini --route claude=anthropic:claude-haiku-4-5
  KEY=$(tollgate key create acme)
  tollgate tenant update acme --tpm 50000 --cache on
  tollgate tenant list";

/// Every port of one store, so one store value serves every operator command (the
/// composition root's [`Backend`](tollgate::bootstrap::Backend)). Each command function still
/// names only the ports it touches.
pub use tollgate::bootstrap::Backend as AdminStore;

/// Where the operator commands read and write.
#[derive(clap::Args, Debug, Clone)]
pub struct StoreArgs {
    /// Which store to use: `dynamodb` (the tables `{table-prefix}-*`, at the endpoint the
    /// standard AWS environment selects: AWS_REGION, the credentials chain, AWS_ENDPOINT_URL
    /// for an emulator) or `memory` (an empty in-process store, thrown away when the command
    /// exits: a dry run of `tenant create` or `price set` that validates the input without
    /// touching DynamoDB).
    #[arg(long, default_value = "dynamodb", global = true, display_order = 1000)]
    pub store: StoreKind,
    /// DynamoDB table name prefix: tables are `{prefix}-tenants`, `-usage`, `-limits`, `-cache`
    /// (the same prefix `tollgate init --prefix` used).
    #[arg(
        long,
        env = "TOLLGATE_TABLE_PREFIX",
        default_value = "tollgate",
        global = true,
        display_order = 1001
    )]
    pub table_prefix: String,
}

/// The operator subcommands, flattened into the top-level `tollgate` command.
#[derive(clap::Subcommand, Debug)]
pub enum AdminCommand {
    /// Create, inspect, change, disable and enable tenants.
    Tenant(Box<tenant::TenantArgs>),
    /// Issue, list and revoke tenant API keys.
    Key(key::KeyArgs),
    /// Show the price table, set operator prices.
    Price(price::PriceArgs),
    /// Show and set upstream token quotas shared by all tenants.
    Quota(quota::QuotaArgs),
    /// Record usage events from `MeteringFailure` log lines, idempotently by request id.
    Replay(replay::ReplayArgs),
    /// Usage across every tenant: top tenants by cost, recorded anomalies (operators only).
    Usage(usage::UsageArgs),
    /// A tenant's limits on its own end users (the `user` of its requests).
    User(user::UserArgs),
    /// Read the audit log: every operator change, who made it, before and after.
    Audit(audit::AuditArgs),
    /// Run the anomaly scheduler by hand for one hour.
    Anomalies(anomalies::AnomaliesArgs),
}

impl AdminCommand {
    fn store_args(&self) -> &StoreArgs {
        match self {
            Self::Tenant(args) => &args.store,
            Self::Key(args) => &args.store,
            Self::Price(args) => &args.store,
            Self::Quota(args) => &args.store,
            Self::Replay(args) => &args.store,
            Self::Usage(args) => &args.store,
            Self::User(args) => &args.store,
            Self::Audit(args) => &args.store,
            Self::Anomalies(args) => &args.store,
        }
    }
}

/// What a command prints: `stdout` is its result (tables, JSON, a new key), `stderr` holds
/// notes and warnings for the operator. `complete` is false when the command did part of its
/// work and must exit non-zero after printing (replay with unrecorded events).
#[derive(Debug)]
pub struct Output {
    pub stdout: String,
    pub stderr: Vec<String>,
    pub complete: bool,
}

impl Output {
    pub fn stdout(text: impl Into<String>) -> Self {
        Self {
            stdout: text.into(),
            stderr: Vec::new(),
            complete: true,
        }
    }

    pub fn note(mut self, note: impl Into<String>) -> Self {
        self.stderr.push(note.into());
        self
    }
}

/// Bad input that only the command logic can see (a flag repeated with the same key, an update
/// with nothing to change): reported like clap's own usage errors, with exit code 2.
#[derive(Debug)]
pub struct UsageError(String);

impl UsageError {
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Runs one operator command and prints its output. Failures end the process here with one
/// line on stderr (not through `main`'s `Result`, which would add a backtrace when
/// RUST_BACKTRACE is set): exit code 2 for a [`UsageError`], 1 for everything else.
pub async fn run(command: AdminCommand) -> anyhow::Result<()> {
    let outcome = async {
        let args = command.store_args().clone();
        // Operator commands read the store directly: no cache in front of it.
        let stores = Stores::open(
            args.store,
            AwsConfigSource::DEFAULT_CHAIN,
            &args.table_prefix,
            std::time::Duration::ZERO,
        )
        .await;
        execute(stores.backend().as_ref(), command).await
    }
    .await;
    match outcome {
        Ok(output) => {
            emit(&output);
            if !output.complete {
                exit(1);
            }
            Ok(())
        }
        Err(err) => match err.downcast_ref::<UsageError>() {
            Some(usage) => clap::Error::raw(
                clap::error::ErrorKind::ValueValidation,
                format!("{usage}\n"),
            )
            .exit(),
            None => fail(&err),
        },
    }
}

/// Dispatches a parsed command against `store`.
pub async fn execute(store: &dyn AdminStore, command: AdminCommand) -> anyhow::Result<Output> {
    let audit = auditor(store);
    let audit = &audit;
    match command {
        AdminCommand::Tenant(args) => tenant::execute(store, audit, args.command).await,
        AdminCommand::Key(args) => key::execute(store, audit, args.command).await,
        AdminCommand::Price(args) => price::execute(store, audit, args.command).await,
        AdminCommand::Quota(args) => quota::execute(store, audit, args.command).await,
        AdminCommand::Audit(args) => audit::execute(store, args).await,
        AdminCommand::Replay(args) => replay::execute(store, args).await,
        AdminCommand::Usage(args) => usage::execute(store, args.command).await,
        AdminCommand::User(args) => user::execute(store, audit, args.command).await,
        AdminCommand::Anomalies(args) => {
            // The same thresholds as the function (TOLLGATE_ANOMALY_*), and its alerts: the
            // deployment's CloudWatch metrics, or kept in memory with the in-memory store.
            let settings = AnomalySettings::from_env()?;
            let alerts: Box<dyn AnomalyAlerts> = match args.store.store {
                StoreKind::Dynamodb => Box::new(
                    CloudWatchAlerts::from_env(
                        AwsConfigSource::DEFAULT_CHAIN,
                        args.store.table_prefix.clone(),
                    )
                    .await,
                ),
                StoreKind::Memory => Box::new(MemoryAlerts::default()),
            };
            anomalies::execute(store, alerts.as_ref(), &settings, args.command).await
        }
    }
}

/// Who the CLI's changes are recorded as in the audit log: `TOLLGATE_ACTOR` when set (a CI
/// job's name, say), else `local:{user}` from the login environment.
pub fn actor() -> String {
    match std::env::var("TOLLGATE_ACTOR") {
        Ok(actor) if !actor.trim().is_empty() => actor.trim().to_owned(),
        _ => {
            let user = std::env::var("USER")
                .or_else(|_| std::env::var("USERNAME"))
                .unwrap_or_else(|_| "unknown".to_owned());
            format!("local:{user}")
        }
    }
}

/// An auditor for one CLI invocation: its changes share one fresh request id.
pub fn auditor(log: &dyn tollgate::ports::AuditLog) -> tollgate::service::audit::Auditor<'_> {
    tollgate::service::audit::Auditor::new(
        log,
        actor(),
        tollgate::domain::ids::RequestId::generate(),
    )
}

/// The one place operator commands print their results.
#[allow(clippy::print_stdout, clippy::print_stderr)]
fn emit(output: &Output) {
    print!("{}", output.stdout);
    for line in &output.stderr {
        eprintln!("{line}");
    }
}

/// Prints a failure as one line (the cause chain joined with `: `) and exits with code 1.
#[allow(clippy::print_stderr)]
fn fail(err: &anyhow::Error) -> ! {
    eprintln!("error: {err:#}");
    exit(1)
}

fn exit(code: i32) -> ! {
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    std::process::exit(code)
}

/// Lays out rows as left-aligned columns separated by two spaces.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}
