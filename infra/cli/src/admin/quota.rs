//! `tollgate quota list|set`: upstream token quotas, one per provider model, shared by every
//! tenant so that one tenant cannot exhaust the deployment's provider rate limit.

use tollgate::domain::limits::{MAX_LIMIT, UpstreamQuota};
use tollgate::ports::store::Catalog;

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
    #[command(after_help = "Example:\n  tollgate quota set openai gpt-4o --tpm 800000")]
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
    },
}

pub async fn execute<S>(store: &S, command: QuotaCommand) -> anyhow::Result<Output>
where
    S: Catalog + ?Sized,
{
    match command {
        QuotaCommand::List => list(store).await,
        QuotaCommand::Set {
            provider,
            model,
            tpm,
        } => {
            let quota = UpstreamQuota {
                provider: provider.into(),
                model: parse::model_name(&model).map_err(anyhow::Error::msg)?,
                tokens_per_minute: tpm,
            };
            set(store, &quota).await
        }
    }
}

pub async fn list<S>(store: &S) -> anyhow::Result<Output>
where
    S: Catalog + ?Sized,
{
    let mut quotas = store.upstream_quotas().await?;
    if quotas.is_empty() {
        return Ok(Output::stdout("").note(
            "no upstream quotas: every provider model is limited per tenant only \
             (set one with `tollgate quota set`)",
        ));
    }
    quotas.sort_by(|a, b| (a.provider, &a.model).cmp(&(b.provider, &b.model)));
    let rows: Vec<Vec<String>> = quotas
        .into_iter()
        .map(|q| {
            vec![
                q.provider.to_string(),
                q.model,
                q.tokens_per_minute.to_string(),
            ]
        })
        .collect();
    Ok(Output::stdout(table(&["PROVIDER", "MODEL", "TPM"], &rows)))
}

pub async fn set<S>(store: &S, quota: &UpstreamQuota) -> anyhow::Result<Output>
where
    S: Catalog + ?Sized,
{
    store.put_upstream_quota(quota).await?;
    Ok(Output::stdout(format!(
        "upstream quota for {} `{}` set to {} tokens per minute\n",
        quota.provider, quota.model, quota.tokens_per_minute
    ))
    .note("running gateways load quotas at cold start; new containers use this quota"))
}
