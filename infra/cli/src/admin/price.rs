//! `tollgate price list|set`: the global price table, in USD per 1M tokens.
//!
//! The gateway prices a call with the tenant's override if it has one, else the operator's
//! entry from the store, else the table bundled with Tollgate. `price set` writes operator
//! entries; tenant overrides are set with `tollgate tenant update --price-override`.

use rust_decimal::Decimal;
use tollgate::domain::pricing::{ModelPrice, PriceEntry};
use tollgate::ports::store::Catalog;
use tollgate::service::audit::Auditor;
use tollgate::service::catalog_admin::{self, CatalogAdminError, PriceInForce};

use super::parse::{self, ProviderArg};
use super::{Output, StoreArgs, UsageError, table};

#[derive(clap::Args, Debug)]
pub struct PriceArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(subcommand)]
    pub command: PriceCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum PriceCommand {
    /// Show the price table in force: the bundled prices merged with the operator's entries
    /// (SOURCE says which). USD per 1M tokens; `-` means "same as input".
    List,
    /// Set the operator's price for a provider model (adds a model or overrides the bundled
    /// price), in USD per 1M tokens. Gateways pick it up at their next cold start.
    #[command(
        after_help = "Example:\n  tollgate price set openai gpt-4o --input 2.50 --output 10 --cached-input 1.25 \\\n    --alias gpt-4o-2024-08-06 --alias gpt-4o-2024-11-20"
    )]
    Set(SetArgs),
}

#[derive(clap::Args, Debug)]
pub struct SetArgs {
    /// The provider.
    #[arg(value_enum)]
    pub provider: ProviderArg,
    /// The provider's model id. A dated snapshot is priced only by an entry of its own or as
    /// an --alias of one; otherwise its requests are refused.
    pub model: String,
    /// Another model id billed exactly as this one (a dated snapshot that costs the same).
    /// Repeat for several. Replaces the entry's stored aliases; aliases the bundled table
    /// lists for this model still apply.
    #[arg(long = "alias", value_name = "MODEL", value_parser = parse::model_name)]
    pub aliases: Vec<String>,
    /// Price of uncached input (prompt) tokens.
    #[arg(long, value_name = "USD", value_parser = parse::price, allow_negative_numbers = true)]
    pub input: Decimal,
    /// Price of output (completion) tokens.
    #[arg(long, value_name = "USD", value_parser = parse::price, allow_negative_numbers = true)]
    pub output: Decimal,
    /// Price of prompt tokens read from the provider's prompt cache. Default: --input.
    #[arg(long, value_name = "USD", value_parser = parse::price, allow_negative_numbers = true)]
    pub cached_input: Option<Decimal>,
    /// Price of prompt tokens written to the provider's prompt cache (Anthropic).
    /// Default: --input.
    #[arg(long, value_name = "USD", value_parser = parse::price, allow_negative_numbers = true)]
    pub cache_write: Option<Decimal>,
}

pub async fn execute<S>(
    store: &S,
    audit: &Auditor<'_>,
    command: PriceCommand,
) -> anyhow::Result<Output>
where
    S: Catalog + ?Sized,
{
    match command {
        PriceCommand::List => list(store).await,
        PriceCommand::Set(args) => set(store, audit, args).await,
    }
}

pub async fn list<S>(store: &S) -> anyhow::Result<Output>
where
    S: Catalog + ?Sized,
{
    let in_force = catalog_admin::prices(store).await.map_err(refused)?;
    let price =
        |p: Option<Decimal>| p.map_or_else(|| "-".to_owned(), |d| d.normalize().to_string());
    let rows: Vec<Vec<String>> = in_force
        .prices
        .into_iter()
        .map(|PriceInForce { entry, source }| {
            vec![
                entry.provider.to_string(),
                entry.model,
                price(Some(entry.price.input)),
                price(Some(entry.price.output)),
                price(entry.price.cached_input),
                price(entry.price.cache_write),
                if entry.aliases.is_empty() {
                    "-".to_owned()
                } else {
                    entry.aliases.join(",")
                },
                source.describe().to_owned(),
            ]
        })
        .collect();
    let mut out = Output::stdout(table(
        &[
            "PROVIDER",
            "MODEL",
            "INPUT",
            "OUTPUT",
            "CACHED_INPUT",
            "CACHE_WRITE",
            "ALIASES",
            "SOURCE",
        ],
        &rows,
    ));
    if let Some(as_of) = in_force.bundled_as_of {
        out = out.note(format!(
            "USD per 1M tokens; bundled prices as of {as_of}; `-`: same as input"
        ));
    }
    Ok(out)
}

/// A refused catalog change: bad input is a usage error (exit 2), the rest fail the command.
pub fn refused(err: CatalogAdminError) -> anyhow::Error {
    match err {
        CatalogAdminError::Invalid(message) => UsageError::new(message).into(),
        other => other.into(),
    }
}

pub async fn set<S>(store: &S, audit: &Auditor<'_>, args: SetArgs) -> anyhow::Result<Output>
where
    S: Catalog + ?Sized,
{
    let model = parse::model_name(&args.model).map_err(anyhow::Error::msg)?;
    let entry = PriceEntry {
        provider: args.provider.into(),
        model,
        aliases: args.aliases,
        price: ModelPrice {
            input: args.input,
            output: args.output,
            cached_input: args.cached_input,
            cache_write: args.cache_write,
        },
    };
    catalog_admin::set_price(store, audit, entry.clone(), chrono::Utc::now())
        .await
        .map_err(refused)?;
    let aliases = if entry.aliases.is_empty() {
        String::new()
    } else {
        format!(" (also for {})", entry.aliases.join(", "))
    };
    Ok(Output::stdout(format!(
        "price for {} `{}`{aliases} set: input {}, output {} USD per 1M tokens\n",
        entry.provider,
        entry.model,
        entry.price.input.normalize(),
        entry.price.output.normalize()
    ))
    .note("running gateways load prices at cold start; new containers use this price"))
}
