//! Server-side pricing in `Decimal` USD per 1M tokens.
//!
//! Token counts follow OpenAI's convention: `prompt_tokens` is the whole input, of which
//! `cached_tokens` were prompt-cache reads and `cache_write_tokens` were prompt-cache writes.
//! Each part is priced at its own rate. Costs are exact (no rounding): dividing by 10^6 is
//! exact in `Decimal`, so sums of events equal the cost of their summed tokens.

use std::collections::HashMap;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::tenant::ProviderKind;
use super::usage::TokenUsage;

const PER_MILLION: Decimal = Decimal::from_parts(1_000_000, 0, 0, false, 0);

/// USD per 1M tokens for one model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelPrice {
    pub input: Decimal,
    pub output: Decimal,
    /// Prompt-cache reads; defaults to `input` when a provider has no discount.
    #[serde(default)]
    pub cached_input: Option<Decimal>,
    /// Prompt-cache writes (Anthropic); defaults to `input`.
    #[serde(default)]
    pub cache_write: Option<Decimal>,
}

impl ModelPrice {
    /// The cost of one call. Token parts that overlap are never double-charged: uncached input
    /// is what remains of the prompt after cache reads and writes.
    pub fn cost(&self, usage: &TokenUsage) -> Decimal {
        let cached = usage.cached_tokens.min(usage.prompt_tokens);
        let writes = usage.cache_write_tokens.min(usage.prompt_tokens - cached);
        let uncached = usage.prompt_tokens - cached - writes;
        let total = Decimal::from(uncached) * self.input
            + Decimal::from(cached) * self.cached_input.unwrap_or(self.input)
            + Decimal::from(writes) * self.cache_write.unwrap_or(self.input)
            + Decimal::from(usage.completion_tokens) * self.output;
        (total / PER_MILLION).normalize()
    }

    pub fn validate(&self) -> Result<(), String> {
        let parts = [
            Some(self.input),
            Some(self.output),
            self.cached_input,
            self.cache_write,
        ];
        if parts.into_iter().flatten().any(|p| p.is_sign_negative()) {
            return Err("prices must not be negative".into());
        }
        Ok(())
    }
}

/// One row of the price table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PriceEntry {
    pub provider: ProviderKind,
    pub model: String,
    #[serde(flatten)]
    pub price: ModelPrice,
}

#[derive(Debug, Deserialize)]
struct PriceFile {
    #[serde(rename = "_comment", default)]
    _comment: Option<String>,
    #[serde(default)]
    as_of: Option<String>,
    models: Vec<PriceEntry>,
}

/// The global price table: provider model → price.
#[derive(Debug, Clone, Default)]
pub struct PriceTable {
    prices: HashMap<(ProviderKind, String), ModelPrice>,
    as_of: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum PriceTableError {
    #[error("price file is not valid JSON of the expected shape: {0}")]
    Parse(#[from] serde_json::Error),
    #[error("price for {provider}/{model}: {reason}")]
    Invalid {
        provider: ProviderKind,
        model: String,
        reason: String,
    },
}

impl PriceTable {
    /// The table that ships with Tollgate (`shared/data/prices.json`).
    pub fn bundled() -> Result<Self, PriceTableError> {
        Self::from_json(include_str!("../../data/prices.json"))
    }

    pub fn from_json(raw: &str) -> Result<Self, PriceTableError> {
        let file: PriceFile = serde_json::from_str(raw)?;
        let mut table = Self {
            prices: HashMap::new(),
            as_of: file.as_of,
        };
        table.extend(file.models)?;
        Ok(table)
    }

    /// Applies an operator's override file on top: entries replace or add models.
    pub fn merge_json(&mut self, raw: &str) -> Result<(), PriceTableError> {
        let file: PriceFile = serde_json::from_str(raw)?;
        self.extend(file.models)
    }

    /// Applies entries on top (operator overrides from the store), validating each.
    pub fn extend(&mut self, entries: Vec<PriceEntry>) -> Result<(), PriceTableError> {
        for entry in entries {
            entry
                .price
                .validate()
                .map_err(|reason| PriceTableError::Invalid {
                    provider: entry.provider,
                    model: entry.model.clone(),
                    reason,
                })?;
            self.prices
                .insert((entry.provider, entry.model), entry.price);
        }
        Ok(())
    }

    pub fn insert(&mut self, provider: ProviderKind, model: impl Into<String>, price: ModelPrice) {
        self.prices.insert((provider, model.into()), price);
    }

    /// Every entry, ordered by provider and model (for `tollgate price list`).
    pub fn entries(&self) -> Vec<PriceEntry> {
        let mut entries: Vec<PriceEntry> = self
            .prices
            .iter()
            .map(|((provider, model), price)| PriceEntry {
                provider: *provider,
                model: model.clone(),
                price: price.clone(),
            })
            .collect();
        entries.sort_by(|a, b| (a.provider, &a.model).cmp(&(b.provider, &b.model)));
        entries
    }

    pub fn as_of(&self) -> Option<&str> {
        self.as_of.as_deref()
    }

    pub fn len(&self) -> usize {
        self.prices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.prices.is_empty()
    }

    /// Finds the price for a provider model. Dated snapshots (`gpt-4o-2024-08-06`,
    /// `claude-haiku-4-5-20251001`) fall back to their undated alias when they have no entry of
    /// their own. Fine-tuned ids never fall back: they are priced differently from their base
    /// model, so they need an explicit entry or the call is refused.
    pub fn lookup(&self, provider: ProviderKind, model: &str) -> Option<&ModelPrice> {
        if let Some(price) = self.prices.get(&(provider, model.to_owned())) {
            return Some(price);
        }
        if model.starts_with("ft:") {
            return None;
        }
        let alias = strip_date_suffix(model)?;
        self.prices.get(&(provider, alias.to_owned()))
    }
}

/// `name-2024-08-06` or `name-20251001` → `name`.
fn strip_date_suffix(model: &str) -> Option<&str> {
    let is_digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
    if model.len() > 11 {
        let (head, tail) = model.split_at(model.len() - 11);
        let t = tail.as_bytes();
        if t[0] == b'-'
            && is_digits(&tail[1..5], 4)
            && t[5] == b'-'
            && is_digits(&tail[6..8], 2)
            && t[8] == b'-'
            && is_digits(&tail[9..11], 2)
        {
            return Some(head);
        }
    }
    let (head, tail) = model.rsplit_once('-')?;
    is_digits(tail, 8).then_some(head)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    fn usage(prompt: u64, completion: u64, cached: u64, writes: u64) -> TokenUsage {
        TokenUsage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            cached_tokens: cached,
            cache_write_tokens: writes,
        }
    }

    fn sonnet() -> ModelPrice {
        ModelPrice {
            input: dec!(3.00),
            output: dec!(15.00),
            cached_input: Some(dec!(0.30)),
            cache_write: Some(dec!(3.75)),
        }
    }

    #[test]
    fn the_articles_formula_prices_plain_calls() {
        let table = PriceTable::bundled().unwrap();
        let price = table.lookup(ProviderKind::Openai, "gpt-4o").unwrap();
        // (1000 / 1M) * 2.50 + (500 / 1M) * 10.00 = 0.0025 + 0.005
        assert_eq!(price.cost(&usage(1000, 500, 0, 0)), dec!(0.0075));
    }

    #[test]
    fn cached_reads_and_cache_writes_are_priced_at_their_own_rates() {
        // 10_000 prompt tokens: 6_000 read from cache, 3_000 written to it, 1_000 plain.
        let cost = sonnet().cost(&usage(10_000, 200, 6_000, 3_000));
        let expected = (dec!(1000) * dec!(3.00)
            + dec!(6000) * dec!(0.30)
            + dec!(3000) * dec!(3.75)
            + dec!(200) * dec!(15.00))
            / dec!(1000000);
        assert_eq!(cost, expected);
        assert_eq!(cost, dec!(0.01905));
    }

    #[test]
    fn openai_cached_tokens_get_the_cached_input_discount() {
        let table = PriceTable::bundled().unwrap();
        let mini = table.lookup(ProviderKind::Openai, "gpt-4o-mini").unwrap();
        let all_cached = mini.cost(&usage(2048, 0, 2048, 0));
        let none_cached = mini.cost(&usage(2048, 0, 0, 0));
        assert_eq!(all_cached * dec!(2), none_cached);
    }

    #[test]
    fn single_tokens_are_priced_exactly_without_rounding() {
        let table = PriceTable::bundled().unwrap();
        let mini = table.lookup(ProviderKind::Openai, "gpt-4o-mini").unwrap();
        assert_eq!(mini.cost(&usage(1, 0, 0, 0)), dec!(0.00000015));
        assert_eq!(mini.cost(&usage(0, 1, 0, 0)), dec!(0.0000006));
        // A thousand one-token calls cost exactly what one thousand-token call costs.
        let one = mini.cost(&usage(1, 1, 0, 0));
        assert_eq!(one * dec!(1000), mini.cost(&usage(1000, 1000, 0, 0)));
    }

    #[test]
    fn huge_token_counts_do_not_overflow() {
        let cost = sonnet().cost(&usage(u32::MAX as u64 * 1000, u32::MAX as u64 * 1000, 0, 0));
        assert!(cost > dec!(70_000_000));
    }

    #[test]
    fn inconsistent_counts_never_charge_more_than_the_prompt() {
        // A provider reporting more cached tokens than prompt tokens is capped, not negative.
        let cost = sonnet().cost(&usage(100, 0, 500, 500));
        assert_eq!(cost, dec!(100) * dec!(0.30) / dec!(1000000));
    }

    #[test]
    fn dated_snapshots_fall_back_to_their_alias_but_fine_tunes_do_not() {
        let table = PriceTable::bundled().unwrap();
        assert!(
            table
                .lookup(ProviderKind::Openai, "gpt-4o-2024-08-06")
                .is_some()
        );
        assert!(
            table
                .lookup(ProviderKind::Anthropic, "claude-haiku-4-5-20251001")
                .is_some()
        );
        assert!(
            table
                .lookup(ProviderKind::Openai, "ft:gpt-4o-mini-2024-07-18:acme::x1")
                .is_none()
        );
        assert!(
            table
                .lookup(ProviderKind::Openai, "no-such-model")
                .is_none()
        );
        assert!(table.lookup(ProviderKind::Anthropic, "gpt-4o").is_none());
    }

    #[test]
    fn operator_overrides_replace_bundled_prices() {
        let mut table = PriceTable::bundled().unwrap();
        table
            .merge_json(r#"{"models":[{"provider":"openai","model":"gpt-4o","input":"2.00","output":"8.00"}]}"#)
            .unwrap();
        let price = table.lookup(ProviderKind::Openai, "gpt-4o").unwrap();
        assert_eq!(price.input, dec!(2.00));
        assert_eq!(price.cached_input, None);
    }

    #[test]
    fn negative_prices_are_rejected() {
        let err = PriceTable::from_json(
            r#"{"models":[{"provider":"openai","model":"x","input":"-1","output":"1"}]}"#,
        );
        assert!(err.is_err());
    }

    #[test]
    fn the_bundled_table_covers_both_providers() {
        let table = PriceTable::bundled().unwrap();
        assert!(table.len() >= 10);
        assert!(
            table
                .lookup(ProviderKind::Anthropic, "claude-sonnet-4-6")
                .is_some()
        );
        assert!(table.as_of().is_some());
    }
}
