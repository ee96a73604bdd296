//! `tollgate price list|set`: the global price table, in USD per 1M tokens.
//!
//! The gateway prices a call with the tenant's override if it has one, else the operator's
//! entry from the store, else the table bundled with Tollgate. `price set` writes operator
//! entries; tenant overrides are set with `tollgate tenant update --price-override`.

use std::collections::BTreeSet;

use anyhow::Context;
use rust_decimal::Decimal;
use tollgate::domain::pricing::{ModelPrice, PriceEntry, PriceTable};
use tollgate::domain::tenant::ProviderKind;
use tollgate::ports::store::Catalog;

use super::parse::{self, ProviderArg};
use super::{Output, StoreArgs, table};

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
        after_help = "Example:\n  tollgate price set openai gpt-4o --input 2.50 --output 10 --cached-input 1.25"
    )]
    Set(SetArgs),
}

#[derive(clap::Args, Debug)]
pub struct SetArgs {
    /// The provider.
    #[arg(value_enum)]
    pub provider: ProviderArg,
    /// The provider's model id (dated snapshots without their own entry use the undated one).
    pub model: String,
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

pub async fn execute<S>(store: &S, command: PriceCommand) -> anyhow::Result<Output>
where
    S: Catalog + ?Sized,
{
    match command {
        PriceCommand::List => list(store).await,
        PriceCommand::Set(args) => set(store, args).await,
    }
}

pub async fn list<S>(store: &S) -> anyhow::Result<Output>
where
    S: Catalog + ?Sized,
{
    let bundled = PriceTable::bundled().context("the bundled price table")?;
    let bundled_keys: BTreeSet<(ProviderKind, String)> = bundled
        .entries()
        .into_iter()
        .map(|e| (e.provider, e.model))
        .collect();
    let operator = store.prices().await?;
    let operator_keys: BTreeSet<(ProviderKind, String)> = operator
        .iter()
        .map(|e| (e.provider, e.model.clone()))
        .collect();
    let mut merged = bundled.clone();
    merged
        .extend(operator)
        .context("an operator price entry in the store is invalid")?;

    let price =
        |p: Option<Decimal>| p.map_or_else(|| "-".to_owned(), |d| d.normalize().to_string());
    let rows: Vec<Vec<String>> = merged
        .entries()
        .into_iter()
        .map(
            |PriceEntry {
                 provider,
                 model,
                 price: p,
             }| {
                let key = (provider, model.clone());
                let source = match (operator_keys.contains(&key), bundled_keys.contains(&key)) {
                    (true, true) => "operator (overrides bundled)",
                    (true, false) => "operator",
                    _ => "bundled",
                };
                vec![
                    provider.to_string(),
                    model,
                    price(Some(p.input)),
                    price(Some(p.output)),
                    price(p.cached_input),
                    price(p.cache_write),
                    source.to_owned(),
                ]
            },
        )
        .collect();
    let mut out = Output::stdout(table(
        &[
            "PROVIDER",
            "MODEL",
            "INPUT",
            "OUTPUT",
            "CACHED_INPUT",
            "CACHE_WRITE",
            "SOURCE",
        ],
        &rows,
    ));
    if let Some(as_of) = bundled.as_of() {
        out = out.note(format!(
            "USD per 1M tokens; bundled prices as of {as_of}; `-`: same as input"
        ));
    }
    Ok(out)
}

pub async fn set<S>(store: &S, args: SetArgs) -> anyhow::Result<Output>
where
    S: Catalog + ?Sized,
{
    let model = parse::model_name(&args.model).map_err(anyhow::Error::msg)?;
    let entry = PriceEntry {
        provider: args.provider.into(),
        model,
        price: ModelPrice {
            input: args.input,
            output: args.output,
            cached_input: args.cached_input,
            cache_write: args.cache_write,
        },
    };
    entry
        .price
        .validate()
        .map_err(|reason| anyhow::anyhow!("{}/{}: {reason}", entry.provider, entry.model))?;
    store.put_price(&entry).await?;
    Ok(Output::stdout(format!(
        "price for {} `{}` set: input {}, output {} USD per 1M tokens\n",
        entry.provider,
        entry.model,
        entry.price.input.normalize(),
        entry.price.output.normalize()
    ))
    .note("running gateways load prices at cold start; new containers use this price"))
}
