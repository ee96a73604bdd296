//! `tollgate audit`: the audit log, newest first, one JSON record per line (who, what,
//! before and after, when, request id), for a tenant or for the deployment-wide changes.

use tollgate::domain::ids::TenantId;
use tollgate::ports::store::AuditLog;

use super::parse;
use super::{Output, StoreArgs};

#[derive(clap::Args, Debug)]
#[command(
    after_help = "Examples:\n  tollgate audit --tenant acme --limit 20\n  \
                        tollgate audit --operator          # prices and quotas\n  \
                        tollgate audit --tenant acme --cursor '<next cursor printed on stderr>'"
)]
pub struct AuditArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// The tenant whose log to read.
    #[arg(long, value_parser = parse::tenant_id, required_unless_present = "operator", conflicts_with = "operator")]
    pub tenant: Option<TenantId>,
    /// Read the deployment-wide log (prices, upstream quotas) instead.
    #[arg(long)]
    pub operator: bool,
    /// Records per page (1-1000).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub limit: u16,
    /// Continue after this position (the cursor a previous page printed).
    #[arg(long)]
    pub cursor: Option<String>,
}

pub async fn execute<S>(store: &S, args: AuditArgs) -> anyhow::Result<Output>
where
    S: AuditLog + ?Sized,
{
    let page = store
        .audit_page(
            args.tenant.as_ref(),
            args.cursor.as_deref(),
            usize::from(args.limit),
        )
        .await?;
    let mut stdout = String::new();
    for record in &page.records {
        stdout.push_str(&serde_json::to_string(record)?);
        stdout.push('\n');
    }
    let mut out = Output::stdout(stdout);
    if page.records.is_empty() {
        out = out.note("no audit records");
    }
    if let Some(next) = page.next {
        out = out.note(format!("more: --cursor '{next}'"));
    }
    Ok(out)
}
