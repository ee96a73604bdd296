//! `tollgate key create|list|rotate|revoke`, over `tollgate::service::key_admin` (the rules
//! live there, shared with the admin API).
//!
//! A new key's plaintext is printed to stdout exactly once (and nothing else goes to stdout,
//! so `KEY=$(tollgate key create acme)` captures just the key); the store keeps only its
//! SHA-256 hash. Listings show prefixes, names, scopes and dates, never hashes.

use std::collections::BTreeSet;

use tollgate::domain::ids::TenantId;
use tollgate::domain::keys::{IssuedKey, KeyPrefix, KeyScope, KeySpec};
use tollgate::ports::store::{ApiKeyLookup, KeyUsage, TenantAdmin, TenantConfigSource};
use tollgate::service::audit::Auditor;
use tollgate::service::key_admin::{self, KeyAdminError};

use super::parse;
use super::tenant::load;
use super::{Output, StoreArgs, UsageError, table};

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
    #[command(after_help = "Examples:\n  KEY=$(tollgate key create acme)\n  \
                            KEY=$(tollgate key create acme --name billing --scope chat --scope usage:read --expires-in 90d)")]
    Create {
        /// The tenant the key authenticates as (must exist).
        #[arg(value_parser = parse::tenant_id)]
        tenant: TenantId,
        /// A name for operators (at most 64 characters).
        #[arg(long, value_parser = parse::key_name)]
        name: Option<String>,
        /// What the key may be used for (repeat for several): chat, embeddings, documents,
        /// usage:read, profiles. Without it the key may be used for everything.
        #[arg(long = "scope", value_name = "SCOPE", value_parser = parse::key_scope)]
        scopes: Vec<KeyScope>,
        /// The key stops working this long from now (90s, 30m, 24h, 7d).
        #[arg(long, value_name = "SPAN", value_parser = parse::span)]
        expires_in: Option<chrono::Duration>,
    },
    /// List a tenant's keys: prefix, name, scopes, created, expiry, last use (recorded at most
    /// every 5 minutes), state (never the key or its hash).
    List {
        /// The tenant id.
        #[arg(value_parser = parse::tenant_id)]
        tenant: TenantId,
    },
    /// Rotate a live key: issue its successor (same name and scopes, printed once) and keep
    /// the old key working for the overlap, then expire it.
    #[command(after_help = "Example:\n  NEW=$(tollgate key rotate Ab12Cd34Ef56 --overlap 24h)")]
    Rotate {
        /// The prefix of the key to rotate (with or without `tg_`).
        #[arg(value_parser = parse::key_prefix)]
        prefix: KeyPrefix,
        /// How long the old key keeps working (at most 30d).
        #[arg(long, value_name = "SPAN", value_parser = parse::span, default_value = "24h")]
        overlap: chrono::Duration,
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

pub async fn execute<S>(
    store: &S,
    audit: &Auditor<'_>,
    command: KeyCommand,
) -> anyhow::Result<Output>
where
    S: TenantAdmin + TenantConfigSource + ApiKeyLookup + KeyUsage + ?Sized,
{
    let now = chrono::Utc::now();
    match command {
        KeyCommand::Create {
            tenant,
            name,
            scopes,
            expires_in,
        } => {
            let spec = KeySpec {
                name,
                scopes: (!scopes.is_empty()).then(|| scopes.into_iter().collect::<BTreeSet<_>>()),
                expires_at: expires_in.map(|span| now + span),
            };
            create(store, audit, tenant, spec, now).await
        }
        KeyCommand::List { tenant } => list(store, &tenant, now).await,
        KeyCommand::Rotate { prefix, overlap } => rotate(store, audit, &prefix, overlap, now).await,
        KeyCommand::Revoke { prefix } => revoke(store, audit, &prefix, now).await,
    }
}

/// The CLI's words for a refused change: a bad argument exits 2, like clap's own errors.
fn refused(err: KeyAdminError) -> anyhow::Error {
    match err {
        KeyAdminError::Invalid(message) => UsageError::new(message).into(),
        other => other.into(),
    }
}

fn time(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

pub async fn create<S>(
    store: &S,
    audit: &Auditor<'_>,
    tenant: TenantId,
    spec: KeySpec,
    now: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<Output>
where
    S: TenantAdmin + TenantConfigSource + ?Sized,
{
    let config = load(store, &tenant).await?;
    let issued = key_admin::create(store, audit, &tenant, spec, now)
        .await
        .map_err(refused)?;
    let prefix = issued.record.prefix.clone();
    let mut out = shown_once(&issued).note(format!(
        "created API key {prefix} for tenant `{tenant}` ({}). This is the only time the key is \
         shown: store it now (only its hash is kept). Revoke it with `tollgate key revoke {prefix}`.",
        describe(&issued)
    ));
    if config.disabled {
        out = out.note(format!(
            "warning: tenant `{tenant}` is disabled; the key is refused until `tollgate tenant enable {tenant}`"
        ));
    }
    Ok(out)
}

fn shown_once(issued: &IssuedKey) -> Output {
    Output::stdout(format!("{}\n", issued.expose()))
}

/// Name, scopes and expiry, as a note says them.
fn describe(issued: &IssuedKey) -> String {
    let key = &issued.record;
    let mut parts = Vec::new();
    if let Some(name) = &key.name {
        parts.push(format!("name `{name}`"));
    }
    parts.push(format!("scopes {}", key.scope_list()));
    parts.push(key.expires_at.map_or_else(
        || "no expiry".to_owned(),
        |at| format!("expires {}", time(at)),
    ));
    parts.join(", ")
}

pub async fn list<S>(
    store: &S,
    tenant: &TenantId,
    now: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<Output>
where
    S: TenantAdmin + TenantConfigSource + KeyUsage + ?Sized,
{
    load(store, tenant).await?;
    let keys = store.keys_for(tenant).await?;
    if keys.is_empty() {
        return Ok(Output::stdout("").note(format!(
            "tenant `{tenant}` has no keys: issue one with `tollgate key create {tenant}`"
        )));
    }
    let prefixes: Vec<KeyPrefix> = keys.iter().map(|k| k.prefix.clone()).collect();
    let used = store.keys_last_used(&prefixes).await?;
    let rows: Vec<Vec<String>> = keys
        .iter()
        .map(|k| {
            vec![
                k.prefix.to_string(),
                // Names may hold spaces; the table's columns are split on whitespace.
                k.name
                    .as_deref()
                    .map_or_else(|| "-".to_owned(), |n| n.replace(char::is_whitespace, "_")),
                k.scope_list(),
                time(k.created_at),
                k.expires_at.map_or_else(|| "-".to_owned(), time),
                used.get(&k.prefix)
                    .map_or_else(|| "-".to_owned(), |at| time(*at)),
                k.state(now).as_str().to_owned(),
            ]
        })
        .collect();
    Ok(Output::stdout(table(
        &[
            "PREFIX",
            "NAME",
            "SCOPES",
            "CREATED",
            "EXPIRES",
            "LAST USED",
            "STATE",
        ],
        &rows,
    )))
}

pub async fn rotate<S>(
    store: &S,
    audit: &Auditor<'_>,
    prefix: &KeyPrefix,
    overlap: chrono::Duration,
    now: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<Output>
where
    S: TenantAdmin + ApiKeyLookup + ?Sized,
{
    let rotated = key_admin::rotate(store, audit, prefix, overlap, now)
        .await
        .map_err(refused)?;
    Ok(shown_once(&rotated.key).note(format!(
        "rotated key {prefix} of tenant `{}`: its successor is {} ({}), shown only now. \
         {prefix} keeps working until {}, then it is refused.",
        rotated.key.record.tenant_id,
        rotated.key.record.prefix,
        describe(&rotated.key),
        time(rotated.old_until)
    )))
}

pub async fn revoke<S>(
    store: &S,
    audit: &Auditor<'_>,
    prefix: &KeyPrefix,
    now: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<Output>
where
    S: TenantAdmin + ApiKeyLookup + ?Sized,
{
    let key = key_admin::revoke(store, audit, prefix, now)
        .await
        .map_err(refused)?;
    Ok(Output::stdout(match key.revoked_at {
        Some(at) => format!(
            "key {prefix} of tenant `{}` was already revoked at {}\n",
            key.tenant_id,
            time(at)
        ),
        None => format!("revoked key {prefix} of tenant `{}`\n", key.tenant_id),
    }))
}
