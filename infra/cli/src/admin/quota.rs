//! `tollgate quota list|set`: upstream token quotas, one per provider model (and, for a key
//! pool, one per key), shared by every tenant so that one tenant cannot exhaust the
//! deployment's provider rate limit.

use tollgate::domain::limits::{MAX_LIMIT, UpstreamQuota};
use tollgate::ports::store::Catalog;
use tollgate::service::audit::Auditor;
use tollgate::service::catalog_admin;

use super::price::refused;

use super::parse::{self, ProviderArg};
use super::{Output, StoreArgs, table};

#[derive(clap::Args, Debug)]
pub struct QuotaArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(subcommand)]
    pub command: QuotaCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum QuotaCommand {
    /// List the upstream quotas. Provider models without one are limited only per tenant.
    List,
    /// Set the tokens per minute all tenants together may send to one provider model (set it a
    /// little under the provider account's own TPM limit). Gateways pick it up at their next
    /// cold start.
    #[command(
        after_help = "Examples:\n  tollgate quota set openai gpt-4o --tpm 800000\n  \
                      tollgate quota set openai gpt-4o --key 1 --tpm 30000   # the pool's second key"
    )]
    Set {
        /// The provider.
        #[arg(value_enum)]
        provider: ProviderArg,
        /// The provider's model id, exactly as routes name it.
        model: String,
        /// Tokens per minute (prompt + completion, sliding window) across all tenants; at
        /// most 10^15.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=MAX_LIMIT))]
        tpm: u64,
        /// The quota of one key of the provider's key pool instead: its position in
        /// `OPENAI_API_KEY=sk-a,sk-b` or the secret's value, from 0. Once any key of a model
        /// has a quota, every call of that model goes out on a key with one (the one with the
        /// most room), so give each key of the pool its own.
        #[arg(long, value_name = "POSITION")]
        key: Option<u16>,
    },
}

pub async fn execute<S>(
    store: &S,
    audit: &Auditor<'_>,
    command: QuotaCommand,
) -> anyhow::Result<Output>
where
    S: Catalog + ?Sized,
{
    match command {
        QuotaCommand::List => list(store).await,
        QuotaCommand::Set {
            provider,
            model,
            tpm,
            key,
        } => {
            let quota = UpstreamQuota {
                provider: provider.into(),
                model: parse::model_name(&model).map_err(anyhow::Error::msg)?,
                key,
                tokens_per_minute: tpm,
            };
            set(store, audit, &quota).await
        }
    }
}

pub async fn list<S>(store: &S) -> anyhow::Result<Output>
where
    S: Catalog + ?Sized,
{
    let quotas = catalog_admin::quotas(store).await.map_err(refused)?;
    if quotas.is_empty() {
        return Ok(Output::stdout("").note(
            "no upstream quotas: every provider model is limited per tenant only \
             (set one with `tollgate quota set`)",
        ));
    }
    let rows: Vec<Vec<String>> = quotas
        .into_iter()
        .map(|q| {
            vec![
                q.provider.to_string(),
                q.model,
                q.key.map_or_else(|| "all".to_owned(), |k| k.to_string()),
                q.tokens_per_minute.to_string(),
            ]
        })
        .collect();
    Ok(Output::stdout(table(
        &["PROVIDER", "MODEL", "KEY", "TPM"],
        &rows,
    )))
}

pub async fn set<S>(store: &S, audit: &Auditor<'_>, quota: &UpstreamQuota) -> anyhow::Result<Output>
where
    S: Catalog + ?Sized,
{
    catalog_admin::set_quota(store, audit, quota.clone(), chrono::Utc::now())
        .await
        .map_err(refused)?;
    let through = quota
        .key
        .map_or_else(String::new, |k| format!(" through key {k}"));
    Ok(Output::stdout(format!(
        "upstream quota for {} `{}`{through} set to {} tokens per minute\n",
        quota.provider, quota.model, quota.tokens_per_minute
    ))
    .note("running gateways load quotas at cold start; new containers use this quota"))
}
