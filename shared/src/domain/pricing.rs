//! Server-side pricing in `Decimal` USD per 1M tokens.
//!
//! Token counts follow OpenAI's convention: `prompt_tokens` is the whole input, of which
//! `cached_tokens` were prompt-cache reads and `cache_write_tokens` were prompt-cache writes.
//! Each part is priced at its own rate. Costs are exact (no rounding): dividing by 10^6 is
//! exact in `Decimal`, so sums of events equal the cost of their summed tokens.
//!
//! A model id is priced only by an entry of its own or by an entry that lists it in `aliases`.
//! Nothing is inferred from the shape of a name: dated snapshots of one model can cost
//! different amounts (`gpt-4o-2024-05-13` is $5 / $15 where `gpt-4o` is $2.50 / $10), so a
//! snapshot no entry names has no price and its calls are refused before they reach the
//! provider.

use std::collections::{HashMap, HashSet};

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::tenant::ProviderKind;
use super::usage::TokenUsage;

const PER_MILLION: Decimal = Decimal::from_parts(1_000_000, 0, 0, false, 0);

/// USD per 1M tokens for one model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelPrice {
    /// USD per 1M uncached input tokens.
    pub input: Decimal,
    /// USD per 1M output tokens.
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

    /// The most a call that sends `prompt` tokens and writes at most `output` can cost: every
    /// prompt token at the dearest prompt price (no cache discount is assumed, and a cache
    /// write may cost more than plain input), every output token at the output price. For
    /// any usage with at most those tokens, `cost(usage) <= worst_case(prompt, output)`.
    pub fn worst_case(&self, prompt: u64, output: u64) -> Decimal {
        let prompt_price = [self.cached_input, self.cache_write]
            .into_iter()
            .flatten()
            .fold(self.input, Decimal::max);
        ((Decimal::from(prompt) * prompt_price + Decimal::from(output) * self.output) / PER_MILLION)
            .normalize()
    }

    /// Refuses a negative price; the error is a message for the operator.
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
#[serde(from = "StrictEntry")]
pub struct PriceEntry {
    /// The provider that bills the model.
    pub provider: ProviderKind,
    /// The provider's model id.
    pub model: String,
    /// Other model ids billed exactly as `model` is, e.g. the dated snapshot an undated name
    /// points at. Absent in entries written before aliases existed; they still load.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// The rates.
    #[serde(flatten)]
    pub price: ModelPrice,
}

/// A [`PriceEntry`] as it is read. serde does not apply `deny_unknown_fields` to a flattened
/// struct, so reading through `#[serde(flatten)]` would drop a misspelled field (`alias`,
/// `cached_inptu`) and bill at the wrong rate; this shape refuses it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StrictEntry {
    provider: ProviderKind,
    model: String,
    #[serde(default)]
    aliases: Vec<String>,
    input: Decimal,
    output: Decimal,
    #[serde(default)]
    cached_input: Option<Decimal>,
    #[serde(default)]
    cache_write: Option<Decimal>,
}

impl From<StrictEntry> for PriceEntry {
    fn from(e: StrictEntry) -> Self {
        Self {
            provider: e.provider,
            model: e.model,
            aliases: e.aliases,
            price: ModelPrice {
                input: e.input,
                output: e.output,
                cached_input: e.cached_input,
                cache_write: e.cache_write,
            },
        }
    }
}

#[derive(Debug, Deserialize)]
struct PriceFile {
    #[serde(rename = "_comment", default)]
    _comment: Option<String>,
    #[serde(default)]
    as_of: Option<String>,
    models: Vec<PriceEntry>,
}

/// The global price table: provider model → price, plus the aliases priced as an entry.
#[derive(Debug, Clone, Default)]
pub struct PriceTable {
    prices: HashMap<ProviderKind, HashMap<String, ModelPrice>>,
    /// Alias → the model whose entry prices it (one hop; an alias never names an alias).
    aliases: HashMap<ProviderKind, HashMap<String, String>>,
    as_of: Option<String>,
}

/// A price file or layer that cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PriceTableError {
    /// Not JSON of the price-file shape.
    #[error("price file is not valid JSON of the expected shape: {0}")]
    Parse(#[from] serde_json::Error),
    /// One entry failed its checks (a negative price, a bad alias).
    #[error("price for {provider}/{model}: {reason}")]
    Invalid {
        /// The entry's provider.
        provider: ProviderKind,
        /// The entry's model id.
        model: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl PriceTable {
    /// The table that ships with Tollgate (`shared/data/prices.json`).
    pub fn bundled() -> Result<Self, PriceTableError> {
        Self::from_json(include_str!("../../data/prices.json"))
    }

    /// Reads a price file (`{"as_of": .., "models": [..]}`), checking its entries.
    pub fn from_json(raw: &str) -> Result<Self, PriceTableError> {
        let file: PriceFile = serde_json::from_str(raw)?;
        let mut table = Self {
            as_of: file.as_of,
            ..Self::default()
        };
        table.extend(file.models)?;
        Ok(table)
    }

    /// Applies an operator's override file on top (see [`PriceTable::extend`]).
    pub fn merge_json(&mut self, raw: &str) -> Result<(), PriceTableError> {
        let file: PriceFile = serde_json::from_str(raw)?;
        self.extend(file.models)
    }

    /// Applies one layer of entries on top: the operator's file, or the operator's entries in
    /// the store. What a layer says about a model id replaces what earlier layers said, as an
    /// entry or as an alias; aliases of earlier layers that it does not mention stay, so a
    /// new price for `gpt-4o` also prices the snapshots the bundled table lists under it.
    /// The layer is checked whole before anything is applied: a negative price, an alias that
    /// is not a model id, or a name the layer gives two meanings fails it.
    pub fn extend(&mut self, entries: Vec<PriceEntry>) -> Result<(), PriceTableError> {
        check_layer(&entries)?;
        for entry in entries {
            let PriceEntry {
                provider,
                model,
                aliases,
                price,
            } = entry;
            let prices = self.prices.entry(provider).or_default();
            let pointers = self.aliases.entry(provider).or_default();
            for alias in aliases {
                prices.remove(&alias);
                pointers.insert(alias, model.clone());
            }
            pointers.remove(&model);
            prices.insert(model, price);
        }
        Ok(())
    }

    /// Sets one model's price without the layer checks; `model` stops being an alias.
    pub fn insert(&mut self, provider: ProviderKind, model: impl Into<String>, price: ModelPrice) {
        let model = model.into();
        if let Some(pointers) = self.aliases.get_mut(&provider) {
            pointers.remove(&model);
        }
        self.prices
            .entry(provider)
            .or_default()
            .insert(model, price);
    }

    /// Every entry with its aliases, ordered by provider and model (for `tollgate price list`).
    pub fn entries(&self) -> Vec<PriceEntry> {
        let mut entries: Vec<PriceEntry> = self
            .prices
            .iter()
            .flat_map(|(provider, models)| {
                models.iter().map(|(model, price)| PriceEntry {
                    provider: *provider,
                    model: model.clone(),
                    aliases: self.aliases_of(*provider, model),
                    price: price.clone(),
                })
            })
            .collect();
        entries.sort_by(|a, b| (a.provider, &a.model).cmp(&(b.provider, &b.model)));
        entries
    }

    fn aliases_of(&self, provider: ProviderKind, model: &str) -> Vec<String> {
        let mut aliases: Vec<String> = self
            .aliases
            .get(&provider)
            .into_iter()
            .flatten()
            .filter(|(_, target)| *target == model)
            .map(|(alias, _)| alias.clone())
            .collect();
        aliases.sort();
        aliases
    }

    /// The `as_of` date of the file the table was read from, when it has one.
    pub fn as_of(&self) -> Option<&str> {
        self.as_of.as_deref()
    }

    /// How many entries (aliases not counted).
    pub fn len(&self) -> usize {
        self.prices.values().map(HashMap::len).sum()
    }

    /// Whether the table has no entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The price of a provider model: its own entry, or the entry that lists it as an alias.
    /// Any other id, a dated snapshot or a fine-tune of a priced model included, has none.
    pub fn lookup(&self, provider: ProviderKind, model: &str) -> Option<&ModelPrice> {
        let prices = self.prices.get(&provider)?;
        if let Some(price) = prices.get(model) {
            return Some(price);
        }
        let target = self.aliases.get(&provider)?.get(model)?;
        prices.get(target)
    }
}

/// The checks one layer of entries must pass before any of it is applied.
fn check_layer(entries: &[PriceEntry]) -> Result<(), PriceTableError> {
    let invalid = |entry: &PriceEntry, reason: String| PriceTableError::Invalid {
        provider: entry.provider,
        model: entry.model.clone(),
        reason,
    };
    let mut named = HashSet::new();
    for entry in entries {
        entry
            .price
            .validate()
            .map_err(|reason| invalid(entry, reason))?;
        if !named.insert((entry.provider, entry.model.as_str())) {
            return Err(invalid(
                entry,
                "listed twice in the same table (which price applies?)".to_owned(),
            ));
        }
    }
    let mut aliased: HashMap<(ProviderKind, &str), &str> = HashMap::new();
    for entry in entries {
        for alias in &entry.aliases {
            if alias.is_empty() || alias.chars().any(char::is_whitespace) {
                return Err(invalid(
                    entry,
                    format!("alias `{alias}` is not a model id (empty or with whitespace)"),
                ));
            }
            let key = (entry.provider, alias.as_str());
            if named.contains(&key) {
                return Err(invalid(
                    entry,
                    format!(
                        "`{alias}` has an entry of its own in the same table, so it cannot also \
                         be an alias"
                    ),
                ));
            }
            if let Some(other) = aliased.insert(key, &entry.model) {
                return Err(invalid(
                    entry,
                    format!("alias `{alias}` is listed twice (also under `{other}`)"),
                ));
            }
        }
    }
    Ok(())
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
    fn a_dated_snapshot_is_priced_by_the_entry_that_lists_it_or_its_own() {
        let table = PriceTable::bundled().unwrap();
        let gpt_4o = table.lookup(ProviderKind::Openai, "gpt-4o").unwrap();
        for snapshot in ["gpt-4o-2024-08-06", "gpt-4o-2024-11-20"] {
            assert_eq!(
                table.lookup(ProviderKind::Openai, snapshot),
                Some(gpt_4o),
                "{snapshot}"
            );
        }
        // The first GPT-4o snapshot costs twice as much; stripping its date used to bill it
        // at gpt-4o's price.
        let may = table
            .lookup(ProviderKind::Openai, "gpt-4o-2024-05-13")
            .unwrap();
        assert_eq!((may.input, may.output), (dec!(5.00), dec!(15.00)));
        assert_eq!(may.cost(&usage(1_000, 1_000, 0, 0)), dec!(0.02));
        let haiku = table
            .lookup(ProviderKind::Anthropic, "claude-haiku-4-5-20251001")
            .unwrap();
        assert_eq!(
            Some(haiku),
            table.lookup(ProviderKind::Anthropic, "claude-haiku-4-5")
        );
    }

    #[test]
    fn a_snapshot_no_entry_names_and_a_fine_tune_have_no_price() {
        let table = PriceTable::bundled().unwrap();
        for model in [
            "gpt-4.1-2025-04-14",
            "gpt-4o-2099-01-01",
            "claude-haiku-4-5-20990101",
            "ft:gpt-4o-mini-2024-07-18:acme::x1",
            "no-such-model",
        ] {
            assert!(
                table.lookup(ProviderKind::Openai, model).is_none(),
                "{model}"
            );
        }
        assert!(table.lookup(ProviderKind::Anthropic, "gpt-4o").is_none());
        assert!(
            table
                .lookup(ProviderKind::Openai, "gpt-4o-2024-08-06")
                .is_some()
        );
        assert!(
            table
                .lookup(ProviderKind::Anthropic, "gpt-4o-2024-08-06")
                .is_none(),
            "an alias belongs to its provider"
        );
    }

    #[test]
    fn non_ascii_model_ids_are_looked_up_and_aliased_without_panicking() {
        let mut table = PriceTable::bundled().unwrap();
        // Names whose last 11 or 8 bytes start inside a multi-byte character, which byte
        // slicing at `len - 11` used to panic on.
        let names = [
            "gpt-4o-ünïcødé",
            "modèle-2024-08-0é",
            "模型-2024-08-06",
            "gpt-4o-2024-08-0\u{1F600}",
            "claude-ß-2025100é",
            "é-12345678",
            "日本語モデル",
            "\u{1F600}\u{1F600}\u{1F600}",
        ];
        for name in names {
            for provider in ProviderKind::ALL {
                assert!(table.lookup(provider, name).is_none(), "{name}");
            }
        }
        table
            .merge_json(
                r#"{"models":[{"provider":"openai","model":"modèle","aliases":["模型-2024-08-06"],"input":"1","output":"2"}]}"#,
            )
            .unwrap();
        assert_eq!(
            table
                .lookup(ProviderKind::Openai, "模型-2024-08-06")
                .map(|p| p.output),
            Some(dec!(2))
        );
    }

    #[test]
    fn entries_written_without_aliases_still_load_and_unknown_fields_do_not() {
        let old =
            r#"{"provider":"openai","model":"m","input":"1","output":"2","cached_input":"0.5"}"#;
        let entry: PriceEntry = serde_json::from_str(old).unwrap();
        assert!(entry.aliases.is_empty());
        assert_eq!(entry.price.cached_input, Some(dec!(0.5)));
        // An entry without aliases is written as before.
        assert!(!serde_json::to_string(&entry).unwrap().contains("aliases"));
        let typo = r#"{"models":[{"provider":"openai","model":"m","alias":["n"],"input":"1","output":"2"}]}"#;
        assert!(PriceTable::from_json(typo).is_err());
    }

    #[test]
    fn a_later_layer_replaces_what_earlier_ones_said_about_a_name() {
        let mut table = PriceTable::bundled().unwrap();
        // A new gpt-4o price keeps the bundled aliases: the snapshots follow it.
        table
            .merge_json(r#"{"models":[{"provider":"openai","model":"gpt-4o","input":"2.00","output":"8.00"}]}"#)
            .unwrap();
        let snapshot = table
            .lookup(ProviderKind::Openai, "gpt-4o-2024-08-06")
            .unwrap();
        assert_eq!(snapshot.input, dec!(2.00));
        // An entry of its own takes a name out of the alias list ...
        table
            .merge_json(r#"{"models":[{"provider":"openai","model":"gpt-4o-2024-11-20","input":"3","output":"9"}]}"#)
            .unwrap();
        assert_eq!(
            table
                .lookup(ProviderKind::Openai, "gpt-4o-2024-11-20")
                .unwrap()
                .input,
            dec!(3)
        );
        let gpt_4o = table
            .entries()
            .into_iter()
            .find(|e| e.model == "gpt-4o")
            .unwrap();
        assert_eq!(gpt_4o.aliases, ["gpt-4o-2024-08-06"]);
        // ... and an alias takes the place of an earlier entry of that name.
        table
            .merge_json(r#"{"models":[{"provider":"openai","model":"gpt-4o","aliases":["gpt-4o-2024-05-13"],"input":"2.00","output":"8.00"}]}"#)
            .unwrap();
        assert_eq!(
            table
                .lookup(ProviderKind::Openai, "gpt-4o-2024-05-13")
                .unwrap()
                .input,
            dec!(2.00)
        );
        assert!(
            !table
                .entries()
                .iter()
                .any(|e| e.model == "gpt-4o-2024-05-13")
        );
    }

    #[test]
    fn a_layer_that_gives_one_name_two_meanings_is_refused_whole() {
        let layer = |models: &str| format!(r#"{{"models":[{models}]}}"#);
        let bad = [
            // An alias of two entries.
            r#"{"provider":"openai","model":"a","aliases":["s"],"input":"1","output":"1"},
               {"provider":"openai","model":"b","aliases":["s"],"input":"2","output":"2"}"#,
            // An alias that is also an entry of the same layer.
            r#"{"provider":"openai","model":"a","aliases":["b"],"input":"1","output":"1"},
               {"provider":"openai","model":"b","input":"2","output":"2"}"#,
            // Its own alias.
            r#"{"provider":"openai","model":"a","aliases":["a"],"input":"1","output":"1"}"#,
            // Not a model id.
            r#"{"provider":"openai","model":"a","aliases":[" "],"input":"1","output":"1"}"#,
            // The same entry twice, with two prices.
            r#"{"provider":"openai","model":"a","input":"1","output":"1"},
               {"provider":"openai","model":"a","input":"2","output":"2"}"#,
        ];
        for models in bad {
            let mut table = PriceTable::bundled().unwrap();
            let before = table.entries();
            let err = table.merge_json(&layer(models)).unwrap_err();
            assert!(
                matches!(err, PriceTableError::Invalid { .. }),
                "{models}: {err}"
            );
            assert_eq!(
                table.entries(),
                before,
                "nothing of a refused layer applies"
            );
        }
        // The same alias under two providers is two names.
        let mut table = PriceTable::default();
        table
            .merge_json(&layer(
                r#"{"provider":"openai","model":"a","aliases":["s"],"input":"1","output":"1"},
                   {"provider":"anthropic","model":"b","aliases":["s"],"input":"2","output":"2"}"#,
            ))
            .unwrap();
        assert_eq!(
            table.lookup(ProviderKind::Anthropic, "s").unwrap().input,
            dec!(2)
        );
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

    #[test]
    fn bedrock_ids_and_their_inference_profiles_are_priced_by_their_own_entries() {
        let table = PriceTable::bundled().unwrap();
        let price = |model: &str| table.lookup(ProviderKind::Bedrock, model).unwrap();
        let sonnet = "anthropic.claude-sonnet-4-5-20250929-v1:0";
        // Geographic profiles bill as the in-region id; the global profile has its own price.
        assert_eq!(price(&format!("us.{sonnet}")), price(sonnet));
        assert_eq!(price(&format!("eu.{sonnet}")), price(sonnet));
        assert_eq!(price(&format!("global.{sonnet}")).input, dec!(3));
        let usage = TokenUsage {
            prompt_tokens: 2_100,
            completion_tokens: 12,
            cached_tokens: 1_792,
            cache_write_tokens: 250,
        };
        // 58 × 3.30 + 1,792 × 0.33 + 250 × 4.125 + 12 × 16.50, per million.
        assert_eq!(price(sonnet).cost(&usage), dec!(0.00201201));
        // Nothing is inferred from a name: the Anthropic API's id is not a Bedrock price.
        assert!(
            table
                .lookup(ProviderKind::Bedrock, "claude-sonnet-4-5")
                .is_none()
        );
        assert!(
            table
                .lookup(ProviderKind::Anthropic, &format!("us.{sonnet}"))
                .is_none()
        );
    }
}
