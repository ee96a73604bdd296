//! Attribute values in and out, and a small builder for update/condition expressions.
//!
//! Every attribute name in an expression goes through `#n…` placeholders, so names never
//! collide with DynamoDB's reserved words (`hour`, `model`, `requests`… are some).

use std::collections::HashMap;
use std::str::FromStr;

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, SecondsFormat, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::error::corrupt;
use crate::ports::store::StoreError;

pub(super) type Item = HashMap<String, AttributeValue>;

pub(super) const PK: &str = "pk";
pub(super) const SK: &str = "sk";
pub(super) const GSI1PK: &str = "gsi1pk";
pub(super) const GSI1SK: &str = "gsi1sk";
pub(super) const EXPIRES_AT: &str = "expires_at";

pub(super) fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

pub(super) fn n(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

/// A `Decimal` as an exact DynamoDB Number (never through `f64`).
pub(super) fn dec(value: Decimal) -> AttributeValue {
    if value.is_zero() {
        return AttributeValue::N("0".into());
    }
    AttributeValue::N(value.normalize().to_string())
}

pub(super) fn json<T: Serialize>(value: &T) -> Result<AttributeValue, StoreError> {
    serde_json::to_string(value)
        .map(AttributeValue::S)
        .map_err(|e| corrupt(format!("cannot encode item as JSON: {e}")))
}

/// Fixed-width RFC 3339 (nanoseconds, `Z`), so strings sort as the instants do.
pub(super) fn time_key(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Nanos, true)
}

pub(super) fn key_pk(pk: impl Into<String>) -> Item {
    HashMap::from([(PK.to_owned(), s(pk))])
}

pub(super) fn key_pk_sk(pk: impl Into<String>, sk: impl Into<String>) -> Item {
    HashMap::from([(PK.to_owned(), s(pk)), (SK.to_owned(), s(sk))])
}

pub(super) fn get_s<'a>(item: &'a Item, name: &str) -> Result<&'a str, StoreError> {
    match item.get(name) {
        Some(AttributeValue::S(v)) => Ok(v),
        Some(_) => Err(corrupt(format!("attribute `{name}` is not a string"))),
        None => Err(corrupt(format!("attribute `{name}` is missing"))),
    }
}

pub(super) fn opt_s<'a>(item: &'a Item, name: &str) -> Result<Option<&'a str>, StoreError> {
    match item.get(name) {
        None | Some(AttributeValue::Null(_)) => Ok(None),
        Some(AttributeValue::S(v)) => Ok(Some(v)),
        Some(_) => Err(corrupt(format!("attribute `{name}` is not a string"))),
    }
}

/// A Number attribute as a `Decimal`; missing reads as zero.
pub(super) fn get_dec(item: &Item, name: &str) -> Result<Decimal, StoreError> {
    match item.get(name) {
        None => Ok(Decimal::ZERO),
        Some(AttributeValue::N(raw)) => parse_decimal(raw)
            .ok_or_else(|| corrupt(format!("attribute `{name}` is not a decimal: {raw}"))),
        Some(_) => Err(corrupt(format!("attribute `{name}` is not a number"))),
    }
}

fn parse_decimal(raw: &str) -> Option<Decimal> {
    Decimal::from_str_exact(raw)
        .or_else(|_| Decimal::from_scientific(raw))
        .ok()
}

/// A Number attribute as an `i64`; missing reads as zero.
pub(super) fn get_i64(item: &Item, name: &str) -> Result<i64, StoreError> {
    match item.get(name) {
        None => Ok(0),
        Some(AttributeValue::N(raw)) => i64::from_str(raw)
            .ok()
            .or_else(|| parse_decimal(raw).and_then(|d| i64::try_from(d).ok()))
            .ok_or_else(|| corrupt(format!("attribute `{name}` is not an integer: {raw}"))),
        Some(_) => Err(corrupt(format!("attribute `{name}` is not a number"))),
    }
}

/// A Number attribute as a `u64`; missing reads as zero.
pub(super) fn get_u64(item: &Item, name: &str) -> Result<u64, StoreError> {
    let value = get_i64(item, name)?;
    u64::try_from(value).map_err(|_| corrupt(format!("attribute `{name}` is negative: {value}")))
}

pub(super) fn get_json<T: DeserializeOwned>(item: &Item, name: &str) -> Result<T, StoreError> {
    let raw = get_s(item, name)?;
    serde_json::from_str(raw).map_err(|e| corrupt(format!("attribute `{name}`: {e}")))
}

pub(super) fn get_time(item: &Item, name: &str) -> Result<DateTime<Utc>, StoreError> {
    parse_time(name, get_s(item, name)?)
}

pub(super) fn parse_time(name: &str, raw: &str) -> Result<DateTime<Utc>, StoreError> {
    DateTime::parse_from_rfc3339(raw)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| corrupt(format!("attribute `{name}` is not an RFC 3339 time: {e}")))
}

/// An item's size as DynamoDB bills it: each attribute's name plus its value (strings and
/// binaries by length, numbers about one byte per two digits plus one, documents with their
/// overhead). Used to estimate read units, not to enforce the 400 KB limit.
pub(super) fn item_size(item: &Item) -> u64 {
    item.iter()
        .map(|(name, value)| name.len() as u64 + value_size(value))
        .sum()
}

fn value_size(value: &AttributeValue) -> u64 {
    let number = |raw: &str| {
        let digits = raw.bytes().filter(u8::is_ascii_digit).count() as u64;
        digits.div_ceil(2) + 1
    };
    match value {
        AttributeValue::S(v) => v.len() as u64,
        AttributeValue::N(v) => number(v),
        AttributeValue::B(v) => v.as_ref().len() as u64,
        AttributeValue::Bool(_) | AttributeValue::Null(_) => 1,
        AttributeValue::Ss(v) => v.iter().map(|s| s.len() as u64).sum(),
        AttributeValue::Ns(v) => v.iter().map(|n| number(n)).sum(),
        AttributeValue::Bs(v) => v.iter().map(|b| b.as_ref().len() as u64).sum(),
        AttributeValue::L(v) => 3 + v.iter().map(|e| 1 + value_size(e)).sum::<u64>(),
        AttributeValue::M(v) => {
            3 + v
                .iter()
                .map(|(k, e)| 1 + k.len() as u64 + value_size(e))
                .sum::<u64>()
        }
        _ => 1,
    }
}

/// Builds `UpdateExpression` / `ConditionExpression` strings with placeholder names and values.
#[derive(Default)]
pub(super) struct Expr {
    names: HashMap<String, String>,
    values: HashMap<String, AttributeValue>,
    adds: Vec<String>,
    sets: Vec<String>,
}

impl Expr {
    /// The placeholder for attribute `attr` (one per distinct name).
    pub(super) fn name(&mut self, attr: &str) -> String {
        if let Some((placeholder, _)) = self.names.iter().find(|(_, a)| a.as_str() == attr) {
            return placeholder.clone();
        }
        let placeholder = format!("#n{}", self.names.len());
        self.names.insert(placeholder.clone(), attr.to_owned());
        placeholder
    }

    pub(super) fn value(&mut self, value: AttributeValue) -> String {
        let placeholder = format!(":v{}", self.values.len());
        self.values.insert(placeholder.clone(), value);
        placeholder
    }

    /// `ADD attr :value` (numbers; creates the attribute at zero first).
    pub(super) fn add(&mut self, attr: &str, value: AttributeValue) -> &mut Self {
        let (name, value) = (self.name(attr), self.value(value));
        self.adds.push(format!("{name} {value}"));
        self
    }

    /// `SET attr = :value`.
    pub(super) fn set(&mut self, attr: &str, value: AttributeValue) -> &mut Self {
        let (name, value) = (self.name(attr), self.value(value));
        self.sets.push(format!("{name} = {value}"));
        self
    }

    /// `SET attr = <raw expression>` (the caller built it with `name`/`value`).
    pub(super) fn set_raw(&mut self, attr: &str, expression: String) -> &mut Self {
        let name = self.name(attr);
        self.sets.push(format!("{name} = {expression}"));
        self
    }

    pub(super) fn update_expression(&self) -> String {
        let mut parts = Vec::new();
        if !self.adds.is_empty() {
            parts.push(format!("ADD {}", self.adds.join(", ")));
        }
        if !self.sets.is_empty() {
            parts.push(format!("SET {}", self.sets.join(", ")));
        }
        parts.join(" ")
    }

    /// Placeholder maps, `None` when empty (DynamoDB rejects empty maps).
    pub(super) fn names_map(&self) -> Option<HashMap<String, String>> {
        (!self.names.is_empty()).then(|| self.names.clone())
    }

    pub(super) fn values_map(&self) -> Option<HashMap<String, AttributeValue>> {
        (!self.values.is_empty()).then(|| self.values.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    #[test]
    fn decimals_are_written_exactly_and_read_back_equal() {
        for value in [
            dec!(0),
            dec!(0.00000015),
            dec!(0.0075),
            dec!(123456789.123456789),
            dec!(-2.5),
        ] {
            let item = HashMap::from([("c".to_owned(), dec(value))]);
            assert_eq!(get_dec(&item, "c").unwrap(), value);
        }
        let item = HashMap::from([("c".to_owned(), AttributeValue::N("1.5E-7".into()))]);
        assert_eq!(get_dec(&item, "c").unwrap(), dec!(0.00000015));
    }

    #[test]
    fn time_keys_sort_like_the_instants() {
        let a = DateTime::from_timestamp(1_700_000_000, 5).unwrap();
        let b = DateTime::from_timestamp(1_700_000_000, 500_000_000).unwrap();
        assert!(time_key(a) < time_key(b));
        assert_eq!(parse_time("t", &time_key(a)).unwrap(), a);
    }

    #[test]
    fn expressions_use_placeholders_for_every_name() {
        let mut e = Expr::default();
        e.add("requests", n(1))
            .add("hour", n(2))
            .set("model", s("m"));
        assert_eq!(e.update_expression(), "ADD #n0 :v0, #n1 :v1 SET #n2 = :v2");
        assert_eq!(e.name("requests"), "#n0");
    }
}
