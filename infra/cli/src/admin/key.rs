//! `tollgate key create|list|revoke`.
//!
//! A new key's plaintext is printed to stdout exactly once (and nothing else goes to stdout,
//! so `KEY=$(tollgate key create acme)` captures just the key); the store keeps only its
//! SHA-256 hash. Listings show prefixes and dates, never hashes.

use anyhow::bail;
use tollgate::domain::ids::TenantId;
use tollgate::domain::keys::{KeyPrefix, issue_key};
use tollgate::ports::store::{ApiKeyLookup, StoreError, TenantAdmin, TenantConfigSource};

use super::parse;
use super::tenant::load;
use super::{Output, StoreArgs, table};

#[derive(clap::Args, Debug)]
pub struct KeyArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(subcommand)]
    pub command: KeyCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum KeyCommand {
    /// Issue a new API key for a tenant and print it once. Only its hash is stored: copy it
    /// now, it cannot be shown again. The key alone goes to stdout, notes go to stderr.
    #[command(after_help = "Example:\n  KEY=$(tollgate key create acme)")]
    Create {
        /// The tenant the key authenticates as (must exist).
        #[arg(value_parser = parse::tenant_id)]
        tenant: TenantId,
    },
    /// List a tenant's keys: prefix, created, revoked (never the key or its hash).
    List {
        /// The tenant id.
        #[arg(value_parser = parse::tenant_id)]
        tenant: TenantId,
    },
    /// Revoke a key by its prefix: requests with it get 401 once running gateways refresh
    /// their directory cache (TOLLGATE_DIRECTORY_CACHE_SECS, 30 s by default). Revoking is
    /// permanent.
    Revoke {
        /// The 12-character prefix shown by `tollgate key list` (with or without `tg_`).
        #[arg(value_parser = parse::key_prefix)]
        prefix: KeyPrefix,
    },
}

pub async fn execute<S>(store: &S, command: KeyCommand) -> anyhow::Result<Output>
where
    S: TenantAdmin + TenantConfigSource + ApiKeyLookup + ?Sized,
{
    match command {
        KeyCommand::Create { tenant } => create(store, tenant, chrono::Utc::now()).await,
        KeyCommand::List { tenant } => list(store, &tenant).await,
        KeyCommand::Revoke { prefix } => revoke(store, &prefix).await,
    }
}

pub async fn create<S>(
    store: &S,
    tenant: TenantId,
    now: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<Output>
where
    S: TenantAdmin + TenantConfigSource + ?Sized,
{
    let config = load(store, &tenant).await?;
    let issued = issue_key(tenant.clone(), now);
    let prefix = issued.record.prefix.clone();
    store.put_key(issued.record.clone()).await?;
    let mut out = Output::stdout(format!("{}\n", issued.expose())).note(format!(
        "created API key {prefix} for tenant `{tenant}`. This is the only time the key is \
         shown: store it now (only its hash is kept). Revoke it with `tollgate key revoke {prefix}`."
    ));
    if config.disabled {
        out = out.note(format!(
            "warning: tenant `{tenant}` is disabled; the key is refused until `tollgate tenant enable {tenant}`"
        ));
    }
    Ok(out)
}

pub async fn list<S>(store: &S, tenant: &TenantId) -> anyhow::Result<Output>
where
    S: TenantAdmin + TenantConfigSource + ?Sized,
{
    load(store, tenant).await?;
    let keys = store.keys_for(tenant).await?;
    if keys.is_empty() {
        return Ok(Output::stdout("").note(format!(
            "tenant `{tenant}` has no keys: issue one with `tollgate key create {tenant}`"
        )));
    }
    let time = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%d %H:%M:%S UTC").to_string();
    let rows: Vec<Vec<String>> = keys
        .iter()
        .map(|k| {
            vec![
                k.prefix.to_string(),
                time(k.created_at),
                k.revoked_at.map_or_else(|| "-".to_owned(), time),
            ]
        })
        .collect();
    Ok(Output::stdout(table(
        &["PREFIX", "CREATED", "REVOKED"],
        &rows,
    )))
}

pub async fn revoke<S>(store: &S, prefix: &KeyPrefix) -> anyhow::Result<Output>
where
    S: TenantAdmin + ApiKeyLookup + ?Sized,
{
    let Some(key) = store.find_key(prefix).await? else {
        bail!("no key with prefix {prefix}");
    };
    if let Some(at) = key.revoked_at {
        return Ok(Output::stdout(format!(
            "key {prefix} of tenant `{}` was already revoked at {}\n",
            key.tenant_id,
            at.format("%Y-%m-%d %H:%M:%S UTC")
        )));
    }
    match store.revoke_key(prefix).await {
        Ok(()) => Ok(Output::stdout(format!(
            "revoked key {prefix} of tenant `{}`\n",
            key.tenant_id
        ))),
        Err(StoreError::NotFound(_)) => bail!("no key with prefix {prefix}"),
        Err(err) => Err(err.into()),
    }
}
