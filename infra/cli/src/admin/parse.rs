//! Flag value parsers. A value that does not parse is a clap usage error (exit code 2) that
//! names the flag and says what was expected.

use rust_decimal::Decimal;
use tollgate::domain::ids::TenantId;
use tollgate::domain::keys::KeyPrefix;
use tollgate::domain::pricing::ModelPrice;
use tollgate::domain::tenant::{ProviderKind, Route, RouteKind, Tier};

/// The pricing tiers, as flag values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TierArg {
    /// 20k tokens/min, 20 requests/min, 200k tokens/day.
    Free,
    /// 200k tokens/min, 500 requests/min, 10M tokens/day.
    Pro,
    /// 2M tokens/min, 5,000 requests/min, 200M tokens/day.
    Enterprise,
}

impl From<TierArg> for Tier {
    fn from(tier: TierArg) -> Self {
        match tier {
            TierArg::Free => Tier::Free,
            TierArg::Pro => Tier::Pro,
            TierArg::Enterprise => Tier::Enterprise,
        }
    }
}

/// The upstream API families, as flag values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ProviderArg {
    /// OpenAI (or any OpenAI-compatible endpoint).
    Openai,
    /// Anthropic.
    Anthropic,
    /// Amazon Bedrock (Converse), with the deployment's IAM role.
    Bedrock,
}

impl From<ProviderArg> for ProviderKind {
    fn from(provider: ProviderArg) -> Self {
        match provider {
            ProviderArg::Openai => ProviderKind::Openai,
            ProviderArg::Anthropic => ProviderKind::Anthropic,
            ProviderArg::Bedrock => ProviderKind::Bedrock,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OnOff {
    On,
    Off,
}

impl OnOff {
    pub fn enabled(self) -> bool {
        self == Self::On
    }
}

pub fn tenant_id(raw: &str) -> Result<TenantId, String> {
    TenantId::parse(raw).map_err(|e| e.to_string())
}

pub fn key_prefix(raw: &str) -> Result<KeyPrefix, String> {
    KeyPrefix::parse(raw).ok_or_else(|| {
        "expected a key prefix: the 12 letters and digits after `tg_` (as `tollgate key list` shows)"
            .to_owned()
    })
}

fn provider(raw: &str) -> Result<ProviderKind, String> {
    ProviderKind::ALL
        .into_iter()
        .find(|p| p.as_str() == raw)
        .ok_or_else(|| {
            let known: Vec<&str> = ProviderKind::ALL.iter().map(|p| p.as_str()).collect();
            format!(
                "unknown provider `{raw}`; expected one of {}",
                known.join(", ")
            )
        })
}

fn non_empty<'a>(what: &str, raw: &'a str) -> Result<&'a str, String> {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        Err(format!("{what} is empty"))
    } else {
        Ok(trimmed)
    }
}

/// `KEY=VALUE`: a system-prompt variable. Keys follow the template's `{{name}}` rules.
/// A key scope by name: `chat`, `embeddings`, `documents`, `usage:read`, `profiles`.
pub fn key_scope(raw: &str) -> Result<tollgate::domain::keys::KeyScope, String> {
    use tollgate::domain::keys::KeyScope;
    KeyScope::parse(raw.trim()).ok_or_else(|| {
        let known: Vec<&str> = KeyScope::ALL.iter().map(|s| s.as_str()).collect();
        format!(
            "unknown scope `{raw}`; expected one of {}",
            known.join(", ")
        )
    })
}

/// A key name (see `tollgate::domain::keys::key_name`).
pub fn key_name(raw: &str) -> Result<String, String> {
    tollgate::domain::keys::key_name(raw)
}

/// A span like `90s`, `30m`, `24h` or `7d`: a whole number and one unit.
pub fn span(raw: &str) -> Result<chrono::Duration, String> {
    let raw = raw.trim();
    let expected = || format!("expected a span like 90s, 30m, 24h or 7d; got `{raw}`");
    let unit_at = raw
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(expected)?;
    let (digits, unit) = raw.split_at(unit_at);
    let n: i64 = digits.parse().map_err(|_| expected())?;
    let seconds = match unit {
        "s" => Some(n),
        "m" => n.checked_mul(60),
        "h" => n.checked_mul(3_600),
        "d" => n.checked_mul(86_400),
        _ => None,
    }
    .filter(|s| *s <= 3_650 * 86_400)
    .ok_or_else(expected)?;
    Ok(chrono::Duration::seconds(seconds))
}

pub fn var(raw: &str) -> Result<(String, String), String> {
    let (key, value) = raw
        .split_once('=')
        .ok_or_else(|| format!("expected KEY=VALUE, got `{raw}`"))?;
    let key = variable_name(key)?;
    Ok((key, value.to_owned()))
}

/// A prompt variable name: letters, digits and `_`.
pub fn variable_name(raw: &str) -> Result<String, String> {
    let key = non_empty("variable name", raw)?;
    if key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        Ok(key.to_owned())
    } else {
        Err(format!(
            "invalid variable name `{key}`: use letters, digits and '_'"
        ))
    }
}

/// A logical model name (what clients send as `model`).
pub fn model_name(raw: &str) -> Result<String, String> {
    let name = non_empty("model name", raw)?;
    if name.chars().any(char::is_whitespace) {
        return Err(format!("model name `{name}` contains whitespace"));
    }
    Ok(name.to_owned())
}

/// `LOGICAL=PROVIDER:MODEL[:fine-tuned|:embeddings]`. The provider model may itself contain
/// `:` (OpenAI fine-tune ids do), so only a trailing `:fine-tuned` or `:embeddings` is a flag.
pub fn route(raw: &str) -> Result<(String, Route), String> {
    let expected =
        "expected LOGICAL=PROVIDER:MODEL[:fine-tuned|:embeddings], e.g. fast=openai:gpt-4o-mini";
    let (logical, target) = raw
        .split_once('=')
        .ok_or_else(|| format!("{expected}; got `{raw}`"))?;
    let logical = model_name(logical)?;
    let (provider_raw, model) = target
        .split_once(':')
        .ok_or_else(|| format!("{expected}; got `{raw}`"))?;
    let provider = provider(provider_raw.trim())?;
    let (model, kind) = match model.strip_suffix(":embeddings") {
        Some(model) => (model, RouteKind::Embeddings),
        None => (model, RouteKind::Chat),
    };
    let (model, fine_tuned) = match model.strip_suffix(":fine-tuned") {
        Some(model) => (model, true),
        None => (model, false),
    };
    let model = non_empty("provider model", model)
        .map_err(|e| format!("route `{logical}`: {e}"))?
        .to_owned();
    Ok((
        logical,
        Route {
            fallbacks: Vec::new(),
            provider,
            model,
            fine_tuned,
            kind,
        },
    ))
}

/// `LOGICAL=PROVIDER:MODEL`: a fallback for the route `LOGICAL` (`tenant update --fallback`).
pub fn fallback(raw: &str) -> Result<(String, tollgate::domain::tenant::Target), String> {
    let expected = "expected LOGICAL=PROVIDER:MODEL, e.g. gpt-4o-mini=anthropic:claude-haiku-4-5";
    let (logical, target) = raw
        .split_once('=')
        .ok_or_else(|| format!("{expected}; got `{raw}`"))?;
    let (provider_raw, model) = target
        .split_once(':')
        .ok_or_else(|| format!("{expected}; got `{raw}`"))?;
    Ok((
        model_name(logical)?,
        tollgate::domain::tenant::Target {
            provider: provider(provider_raw.trim())?,
            model: non_empty("provider model", model)?.to_owned(),
        },
    ))
}

/// `BEDROCK_MODEL=PROFILE_ARN`: the tenant's application inference profile for a Bedrock
/// model (`tenant update --bedrock-profile`).
pub fn bedrock_profile(raw: &str) -> Result<(String, String), String> {
    let (model, arn) = raw
        .split_once('=')
        .ok_or_else(|| format!("expected BEDROCK_MODEL=PROFILE_ARN, got `{raw}`"))?;
    let arn = arn.trim();
    if !tollgate::domain::tenant::is_inference_profile_arn(arn) {
        return Err(format!(
            "`{arn}` is not an application inference profile ARN (arn:aws:bedrock:REGION:ACCOUNT:application-inference-profile/ID)"
        ));
    }
    Ok((
        non_empty("Bedrock model", model)?.to_owned(),
        arn.to_owned(),
    ))
}

/// `FROM=TO`: two of the tenant's logical models.
pub fn degrade(raw: &str) -> Result<(String, String), String> {
    let (from, to) = raw
        .split_once('=')
        .ok_or_else(|| format!("expected FROM=TO (two logical models), got `{raw}`"))?;
    let (from, to) = (model_name(from)?, model_name(to)?);
    if from == to {
        return Err(format!("`{from}` degrades to itself"));
    }
    Ok((from, to))
}

/// USD per 1M tokens: a non-negative decimal.
pub fn price(raw: &str) -> Result<Decimal, String> {
    let value: Decimal = raw
        .trim()
        .parse()
        .map_err(|_| format!("`{raw}` is not a decimal number of USD per 1M tokens"))?;
    if value.is_sign_negative() {
        return Err(format!("price `{raw}` is negative"));
    }
    Ok(value)
}

/// `MODEL=INPUT,OUTPUT[,CACHED_INPUT[,CACHE_WRITE]]`, USD per 1M tokens.
pub fn price_override(raw: &str) -> Result<(String, ModelPrice), String> {
    let expected = "expected MODEL=INPUT,OUTPUT[,CACHED_INPUT[,CACHE_WRITE]] in USD per 1M tokens";
    // Prices never contain `=`, model ids might: split at the last one.
    let (model, prices) = raw
        .rsplit_once('=')
        .ok_or_else(|| format!("{expected}; got `{raw}`"))?;
    let model = non_empty("provider model", model)?.to_owned();
    let parts: Vec<&str> = prices.split(',').collect();
    if !(2..=4).contains(&parts.len()) {
        return Err(format!("{expected}; got `{raw}`"));
    }
    let optional = |i: usize| parts.get(i).map(|p| price(p)).transpose();
    Ok((
        model,
        ModelPrice {
            input: price(parts[0])?,
            output: price(parts[1])?,
            cached_input: optional(2)?,
            cache_write: optional(3)?,
        },
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use rust_decimal_macros::dec;

    use super::*;

    #[test]
    fn an_embeddings_route_is_flagged_by_its_suffix() {
        let (name, embed) = route("embed=openai:text-embedding-3-small:embeddings").unwrap();
        assert_eq!(name, "embed");
        assert_eq!(embed.model, "text-embedding-3-small");
        assert_eq!(embed.kind, RouteKind::Embeddings);
        assert_eq!(route("fast=openai:gpt-4o").unwrap().1.kind, RouteKind::Chat);
    }

    #[test]
    fn routes_keep_colons_in_fine_tuned_model_ids() {
        let (name, ft) = route("support=openai:ft:gpt-4o-mini-2024-07-18:acme::x1").unwrap();
        assert_eq!(name, "support");
        assert_eq!(ft.model, "ft:gpt-4o-mini-2024-07-18:acme::x1");
        assert!(!ft.fine_tuned);
        assert!(ft.is_fine_tuned());
        let (_, flagged) = route("mine=anthropic:my-model:fine-tuned").unwrap();
        assert_eq!(flagged.model, "my-model");
        assert!(flagged.fine_tuned);
    }

    #[test]
    fn malformed_routes_say_what_was_expected() {
        for bad in [
            "fast",
            "fast=gpt-4o",
            "fast=azure:gpt-4o",
            "=openai:x",
            "fast=openai:",
        ] {
            let err = route(bad).unwrap_err();
            assert!(!err.is_empty(), "{bad}");
        }
        assert!(
            route("fast=azure:gpt-4o")
                .unwrap_err()
                .contains("unknown provider `azure`")
        );
    }

    #[test]
    fn price_overrides_take_two_to_four_non_negative_decimals() {
        let (model, price) = price_override("ft:x:y=0.30,1.20,0.15").unwrap();
        assert_eq!(model, "ft:x:y");
        assert_eq!(price.input, dec!(0.30));
        assert_eq!(price.cached_input, Some(dec!(0.15)));
        assert_eq!(price.cache_write, None);
        assert!(price_override("m=1").is_err());
        assert!(price_override("m=1,2,3,4,5").is_err());
        assert!(price_override("m=1,-2").unwrap_err().contains("negative"));
        assert!(price_override("m=1,abc").is_err());
    }

    #[test]
    fn variables_and_degradations_are_checked() {
        assert_eq!(var("product=rockets=fast").unwrap().1, "rockets=fast");
        assert!(var("bad name=x").is_err());
        assert!(var("novalue").is_err());
        assert!(degrade("a=a").is_err());
        assert_eq!(degrade("gpt-4o=gpt-4o-mini").unwrap().1, "gpt-4o-mini");
    }
}
