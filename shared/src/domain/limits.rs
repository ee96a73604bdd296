//! Token and request limits: tiers, per-tenant overrides, degradation policy, and the geometry
//! of the sliding windows.
//!
//! ## The sliding-window scheme and its error bound
//!
//! Each window (a minute, a day) is split into `k` buckets (6 × 10 s, 24 × 1 h). A counter per
//! bucket holds the tokens and requests admitted in it. At time `t` the limiter counts every
//! bucket that overlaps `[t - W, t]`: the `k` closed buckets before the current one and the
//! current one, and also the bucket after it (empty unless a reservation stamped after the
//! boundary already wrote there). That covers the exact sliding window plus at most one
//! bucket's span of older traffic, so compared with an exact sliding log:
//!
//! - **over-admission is zero across bucket boundaries**: a request is admitted only if
//!   `counted + request ≤ limit`, by a conditional write that also requires the bucket before
//!   the current one and the bucket after it to be as they were read. A reservation stamped
//!   just before a boundary whose write lands after it, and one stamped just after it whose
//!   write lands first, are the only writes a snapshot can miss, and the guards catch both:
//!   the later write fails and is decided again on a fresh read
//!   (`tests/tests/suite/limiter_contract.rs`, every order of four reservations on each side
//!   of a boundary, on the embedded store and on DynamoDB). The guards cover a write that
//!   lands within one bucket (10 s for the minute window) of its snapshot; one delayed longer
//!   than that could still be missed.
//! - **under-admission is bounded by one bucket**: a request may be refused because of tokens
//!   admitted up to `W + b` ago (b = 10 s for the minute window, 1 h for the day), i.e. the
//!   effective window is between `W` and `W + b`.
//!
//! One effect can push the exact count above the limit, and it is bounded: a reconciliation
//! that charges more than was reserved. The reply cannot exceed its reservation (the reserved
//! output cap is sent upstream as the provider's cap), so only the prompt can: by the
//! difference between the provider's prompt count and the gateway's tokenizer (Anthropic's
//! tokenizer differs from o200k by a few percent).
use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::budget::{Budget, BudgetCap, BudgetOverrides};
use super::tenant::Tier;

/// Limits in force for a tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Tokens admitted per sliding minute.
    pub tokens_per_minute: u64,
    /// Requests admitted per sliding minute.
    pub requests_per_minute: u64,
    /// The daily token budget.
    pub tokens_per_day: u64,
}

impl Tier {
    /// What each pricing tier buys.
    pub fn limits(self) -> Limits {
        match self {
            Tier::Free => Limits {
                tokens_per_minute: 20_000,
                requests_per_minute: 20,
                tokens_per_day: 200_000,
            },
            Tier::Pro => Limits {
                tokens_per_minute: 200_000,
                requests_per_minute: 500,
                tokens_per_day: 10_000_000,
            },
            Tier::Enterprise => Limits {
                tokens_per_minute: 2_000_000,
                requests_per_minute: 5_000,
                tokens_per_day: 200_000_000,
            },
        }
    }
}

/// The largest value a configured limit or quota may take: 10^15, far above any real budget.
/// The limiter's counters are signed 64-bit numbers (DynamoDB conditions compare signed sums),
/// so a limit must stay well below `i64::MAX`; a larger one would wrap negative and refuse
/// everything. Tenant configurations, upstream quotas and the CLI refuse anything above it.
pub const MAX_LIMIT: u64 = 1_000_000_000_000_000;

/// Per-tenant overrides of the tier's limits. Reading one refuses a value above
/// [`MAX_LIMIT`], naming the field.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitOverrides {
    /// Replaces the tier's tokens per minute.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "at_most_max::tokens_per_minute"
    )]
    pub tokens_per_minute: Option<u64>,
    /// Replaces the tier's requests per minute.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "at_most_max::requests_per_minute"
    )]
    pub requests_per_minute: Option<u64>,
    /// Replaces the tier's daily token budget.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "at_most_max::tokens_per_day"
    )]
    pub tokens_per_day: Option<u64>,
    /// Counter shards for a tenant above ~500 requests/s (see [`Shards`]); 1 when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counter_shards: Option<u8>,
    /// Chunks the tenant may keep in the vector index; the tier's quota when unset.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "at_most_max::storage_chunks"
    )]
    pub storage_chunks: Option<u64>,
    /// Replaces the tier's daily dollar budget (`unlimited` lifts it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_daily_usd: Option<BudgetCap>,
    /// Replaces the tier's monthly dollar budget (`unlimited` lifts it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_monthly_usd: Option<BudgetCap>,
    /// Percent of a dollar budget at which its soft threshold is crossed (1-100; 80 if unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_alert_at_percent: Option<u8>,
}

/// One reader per field, so the error names the field (serde does not say which failed).
mod at_most_max {
    use serde::{Deserialize, Deserializer, de::Error};

    fn read<'de, D: Deserializer<'de>>(d: D, field: &str) -> Result<Option<u64>, D::Error> {
        let value = Option::<u64>::deserialize(d)?;
        match value {
            Some(v) if v > super::MAX_LIMIT => Err(D::Error::custom(format!(
                "`{field}` is {v}, above the maximum of {} (10^15)",
                super::MAX_LIMIT
            ))),
            _ => Ok(value),
        }
    }

    macro_rules! fields {
        ($($name:ident),*) => {$(
            pub(super) fn $name<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
                read(d, stringify!($name))
            }
        )*};
    }

    fields!(
        tokens_per_minute,
        requests_per_minute,
        tokens_per_day,
        storage_chunks
    );
}

/// Hot-key scaling. One DynamoDB item takes about 1,000 writes per second, and every request
/// writes its tenant's current buckets twice (reservation and reconciliation). With `n` shards
/// each bucket is `n` items, each holding `limit / n` of the budget; a request puts its tokens
/// on a shard picked at random, spilling onto the next shards when that one has too little
/// room left (all in one atomic write), and counts itself on the first shard with a request to
/// spare, so any request that fits the tenant's limit fits its shards and no shard's zero
/// request share refuses forever. Reads sum all of them. Over-admission stays zero (the shards'
/// budgets add up to the limit); under-admission is less than one request's tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shards(u8);

impl Shards {
    /// No sharding: one counter item per bucket.
    pub const ONE: Shards = Shards(1);
    /// The most shards a tenant may have.
    pub const MAX: u8 = 16;

    /// `n` shards, clamped to `1..=MAX`.
    pub fn new(n: u8) -> Self {
        Self(n.clamp(1, Self::MAX))
    }

    /// How many shards.
    pub fn count(self) -> u8 {
        self.0
    }

    /// Shard `shard`'s part of `limit`: the first `limit % n` shards get one more.
    pub fn share(self, limit: u64, shard: u8) -> u64 {
        let n = u64::from(self.0);
        limit / n + u64::from(u64::from(shard) < limit % n)
    }
}

impl LimitOverrides {
    /// `base` with each set override in its place.
    pub fn apply(&self, base: Limits) -> Limits {
        Limits {
            tokens_per_minute: self.tokens_per_minute.unwrap_or(base.tokens_per_minute),
            requests_per_minute: self.requests_per_minute.unwrap_or(base.requests_per_minute),
            tokens_per_day: self.tokens_per_day.unwrap_or(base.tokens_per_day),
        }
    }

    /// The budget overrides alone.
    pub fn budget_overrides(&self) -> BudgetOverrides {
        BudgetOverrides {
            daily_usd: self.budget_daily_usd,
            monthly_usd: self.budget_monthly_usd,
            alert_at_percent: self.budget_alert_at_percent,
        }
    }

    /// Replaces the budget overrides with `budget`'s.
    pub fn set_budget_overrides(&mut self, budget: BudgetOverrides) {
        self.budget_daily_usd = budget.daily_usd;
        self.budget_monthly_usd = budget.monthly_usd;
        self.budget_alert_at_percent = budget.alert_at_percent;
    }

    /// `base` (the tier's budget) with each set budget override in its place.
    pub fn budget(&self, base: Budget) -> Budget {
        let pick = |over: Option<BudgetCap>, tier| over.map_or(tier, BudgetCap::usd);
        Budget {
            daily_usd: pick(self.budget_daily_usd, base.daily_usd),
            monthly_usd: pick(self.budget_monthly_usd, base.monthly_usd),
            alert_at_percent: self
                .budget_alert_at_percent
                .unwrap_or(base.alert_at_percent),
        }
    }

    /// The tenant's counter shards: 1 when unset, clamped to `1..=Shards::MAX`.
    pub fn shards(&self) -> Shards {
        Shards::new(self.counter_shards.unwrap_or(1))
    }

    /// The first override above [`MAX_LIMIT`], by field name, for values built in code.
    pub fn above_max(&self) -> Option<(&'static str, u64)> {
        [
            ("tokens_per_minute", self.tokens_per_minute),
            ("requests_per_minute", self.requests_per_minute),
            ("tokens_per_day", self.tokens_per_day),
            ("storage_chunks", self.storage_chunks),
        ]
        .into_iter()
        .find_map(|(field, value)| value.filter(|v| *v > MAX_LIMIT).map(|v| (field, v)))
    }
}

/// Graceful degradation: once the day's usage passes `threshold_percent` of the daily budget,
/// requests for a model in `routes` are served by the cheaper model it maps to. Both names are
/// the tenant's own logical models, so degradation can never reach a model the tenant may not use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DegradationPolicy {
    /// Percent of the daily token budget at which degradation starts (reached counts).
    pub threshold_percent: u8,
    /// Logical model → cheaper logical model.
    pub routes: BTreeMap<String, String>,
}

impl DegradationPolicy {
    /// The model to serve instead of `requested`, if the policy applies at `day_used`.
    pub fn degrade<'a>(
        &'a self,
        requested: &str,
        day_used: u64,
        day_budget: u64,
    ) -> Option<&'a str> {
        let target = self.routes.get(requested)?;
        let threshold = u128::from(day_budget) * u128::from(self.threshold_percent) / 100;
        (u128::from(day_used) >= threshold).then_some(target.as_str())
    }
}

/// Tokens per minute the deployment may send to one provider model, shared by every tenant:
/// through all of the provider's keys (`key: None`), or through one key of its key pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamQuota {
    /// The provider serving the model.
    pub provider: super::tenant::ProviderKind,
    /// The provider's model id.
    pub model: String,
    /// The key's position in the provider's key pool (0 is the first key of
    /// `OPENAI_API_KEY=sk-a,sk-b` or of the secret's value), when the quota is that key's own:
    /// providers limit each account, and a pool's keys usually belong to different accounts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<u16>,
    /// Tokens per minute the deployment may send it, across all tenants.
    pub tokens_per_minute: u64,
}

/// Upstream quotas by provider model, shared by every tenant: one for the model across the
/// provider's keys, and one per key of the pool. Once any key of a model has a quota, the
/// limiter pins every call of that model to a key with one (the key with the most room), and
/// the call goes out on that key alone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpstreamQuotas {
    models: std::collections::HashMap<UpstreamModel, u64>,
    keys: std::collections::HashMap<UpstreamModel, std::collections::BTreeMap<u16, u64>>,
}

/// A provider model: the provider and its model id.
pub type UpstreamModel = (super::tenant::ProviderKind, String);

impl UpstreamQuotas {
    /// No quotas: every provider model is limited per tenant only.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `quota`, replacing the one of the same model and key.
    pub fn insert(&mut self, quota: UpstreamQuota) {
        let model = (quota.provider, quota.model);
        match quota.key {
            None => {
                self.models.insert(model, quota.tokens_per_minute);
            }
            Some(key) => {
                self.keys
                    .entry(model)
                    .or_default()
                    .insert(key, quota.tokens_per_minute);
            }
        }
    }

    /// The quota of `model` across all keys.
    pub fn model(&self, model: &UpstreamModel) -> Option<u64> {
        self.models.get(model).copied()
    }

    /// The quotas of `model`'s keys, by position; empty when none has one.
    pub fn keys(&self, model: &UpstreamModel) -> impl Iterator<Item = (u16, u64)> + '_ {
        self.keys
            .get(model)
            .into_iter()
            .flat_map(|keys| keys.iter().map(|(k, tpm)| (*k, *tpm)))
    }

    /// Whether any quota applies to `model`.
    pub fn limits(&self, model: &UpstreamModel) -> bool {
        self.models.contains_key(model) || self.keys.contains_key(model)
    }
}

impl FromIterator<UpstreamQuota> for UpstreamQuotas {
    fn from_iter<I: IntoIterator<Item = UpstreamQuota>>(quotas: I) -> Self {
        let mut out = Self::new();
        for quota in quotas {
            out.insert(quota);
        }
        out
    }
}

/// Which limit a decision concerns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitKind {
    /// The tenant's tokens per minute.
    TokensPerMinute,
    /// The tenant's requests per minute.
    RequestsPerMinute,
    /// The tenant's daily token budget.
    TokensPerDay,
    /// The upstream quota shared by every tenant for one provider model.
    UpstreamTokensPerMinute,
}

impl LimitKind {
    /// How the limit is named in a refusal's message.
    pub fn describe(self) -> &'static str {
        match self {
            Self::TokensPerMinute => "tokens per minute (TPM)",
            Self::RequestsPerMinute => "requests per minute (RPM)",
            Self::TokensPerDay => "tokens per day (daily budget)",
            Self::UpstreamTokensPerMinute => "upstream tokens per minute shared by all tenants",
        }
    }
}

/// A sliding window made of `span / bucket` buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// The window's length, in seconds.
    pub span_secs: i64,
    /// One bucket's length, in seconds.
    pub bucket_secs: i64,
    /// A short tag used in counter keys (`m`, `h`).
    pub tag: &'static str,
}

/// The minute window: six 10-second buckets.
pub const MINUTE: Window = Window {
    span_secs: 60,
    bucket_secs: 10,
    tag: "m",
};

/// The day window: 24 one-hour buckets.
pub const DAY: Window = Window {
    span_secs: 86_400,
    bucket_secs: 3_600,
    tag: "h",
};

impl Window {
    /// Buckets per span (`k`).
    pub fn buckets(self) -> i64 {
        self.span_secs / self.bucket_secs
    }

    /// The bucket that `now` (Unix seconds) falls in.
    pub fn current(self, now: i64) -> i64 {
        now.div_euclid(self.bucket_secs)
    }

    /// Every bucket counted at `now`: `k` closed ones and the current one, oldest first.
    pub fn counted(self, now: i64) -> impl Iterator<Item = i64> {
        let current = self.current(now);
        (current - self.buckets())..=current
    }

    /// How long until a counter may be deleted (its window has fully passed), from its start.
    pub fn retention_secs(self) -> i64 {
        self.span_secs + 2 * self.bucket_secs
    }

    /// How long after `now` until enough of `buckets` (oldest first, with their counts) has left
    /// the window for `needed` more to fit under `limit`. `None` if it never fits.
    pub fn time_until_fits(
        self,
        now: i64,
        buckets: &[(i64, u64)],
        needed: u64,
        limit: u64,
    ) -> Option<Duration> {
        if needed > limit {
            return None;
        }
        let mut total: u64 = buckets.iter().map(|(_, n)| n).sum();
        if total + needed <= limit {
            return Some(Duration::ZERO);
        }
        for (index, count) in buckets {
            total -= count;
            if total + needed <= limit {
                // Bucket `index` stops being counted once the window no longer overlaps it.
                let leaves_at = (index + self.buckets() + 1) * self.bucket_secs;
                return Some(Duration::from_secs((leaves_at - now).max(1) as u64));
            }
        }
        None
    }

    /// Seconds until the oldest counted bucket leaves the window (for `x-ratelimit-reset-*`).
    pub fn next_reset(self, now: i64) -> Duration {
        let leaves_at = (self.current(now) + 1) * self.bucket_secs;
        Duration::from_secs((leaves_at - now).max(1) as u64)
    }
}

/// OpenAI's duration format for `x-ratelimit-reset-*`: `1s`, `6m0s`, `1h2m3s`.
pub fn format_reset(d: Duration) -> String {
    let secs = d.as_secs().max(1);
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m{s}s"),
        _ => format!("{h}h{m}m{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_minute_window_counts_six_closed_buckets_and_the_current_one() {
        let now = 1_000_005; // 5 s into bucket 100_000
        let counted: Vec<i64> = MINUTE.counted(now).collect();
        assert_eq!(counted, (99_994..=100_000).collect::<Vec<_>>());
        // The counted span covers the exact window [now - 60, now] and at most 10 s more.
        let oldest_start = counted[0] * MINUTE.bucket_secs;
        assert!(oldest_start <= now - 60);
        assert!(now - 60 - oldest_start < MINUTE.bucket_secs);
    }

    #[test]
    fn tiers_map_to_increasing_limits_and_overrides_replace_single_fields() {
        let (f, p, e) = (
            Tier::Free.limits(),
            Tier::Pro.limits(),
            Tier::Enterprise.limits(),
        );
        assert!(
            f.tokens_per_minute < p.tokens_per_minute && p.tokens_per_minute < e.tokens_per_minute
        );
        assert!(f.tokens_per_day < p.tokens_per_day && p.tokens_per_day < e.tokens_per_day);
        let o = LimitOverrides {
            tokens_per_minute: Some(5),
            ..Default::default()
        };
        let l = o.apply(f);
        assert_eq!(l.tokens_per_minute, 5);
        assert_eq!(l.tokens_per_day, f.tokens_per_day);
    }

    #[test]
    fn time_until_fits_waits_for_the_oldest_buckets_to_leave() {
        let now = 1_000_005;
        let buckets = vec![(99_994, 500), (99_995, 0), (99_996, 300), (100_000, 100)];
        // 900 counted; limit 1000; needs 200 → bucket 99_994 must leave: at (99_994+7)*10.
        let wait = MINUTE.time_until_fits(now, &buckets, 200, 1000).unwrap();
        assert_eq!(wait, Duration::from_secs(1_000_010 - now as u64));
        assert_eq!(
            MINUTE.time_until_fits(now, &buckets, 100, 1000),
            Some(Duration::ZERO)
        );
        assert_eq!(MINUTE.time_until_fits(now, &buckets, 1001, 1000), None);
    }

    #[test]
    fn degradation_applies_past_the_threshold_only_for_mapped_models() {
        let policy = DegradationPolicy {
            threshold_percent: 80,
            routes: BTreeMap::from([("gpt-4o".into(), "gpt-4o-mini".into())]),
        };
        assert_eq!(policy.degrade("gpt-4o", 79, 100), None);
        assert_eq!(policy.degrade("gpt-4o", 80, 100), Some("gpt-4o-mini"));
        assert_eq!(policy.degrade("claude", 100, 100), None);
    }

    #[test]
    fn shard_shares_add_up_to_the_limit() {
        for (n, limit) in [(1_u8, 1000_u64), (3, 1000), (4, 7), (16, 20_000)] {
            let shards = Shards::new(n);
            let total: u64 = (0..n).map(|s| shards.share(limit, s)).sum();
            assert_eq!(total, limit, "{n} shards of {limit}");
        }
        assert_eq!(Shards::new(0).count(), 1);
        assert_eq!(Shards::new(200).count(), Shards::MAX);
    }

    #[test]
    fn reset_durations_use_openais_format() {
        assert_eq!(format_reset(Duration::from_millis(200)), "1s");
        assert_eq!(format_reset(Duration::from_secs(59)), "59s");
        assert_eq!(format_reset(Duration::from_secs(360)), "6m0s");
        assert_eq!(format_reset(Duration::from_secs(3723)), "1h2m3s");
    }
}

/// What the `x-ratelimit-*` headers report, on success and on refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RateStatus {
    /// The tenant's tokens-per-minute limit.
    pub limit_tokens: u64,
    /// Tokens the minute window still has room for.
    pub remaining_tokens: u64,
    /// Time until the oldest counted tokens leave the minute window.
    pub reset_tokens: Duration,
    /// The tenant's requests-per-minute limit.
    pub limit_requests: u64,
    /// Requests the minute window still has room for.
    pub remaining_requests: u64,
    /// Time until the oldest counted requests leave the minute window.
    pub reset_requests: Duration,
}

impl RateStatus {
    /// The six headers, OpenAI's names and formats.
    pub fn headers(&self) -> [(&'static str, String); 6] {
        [
            ("x-ratelimit-limit-tokens", self.limit_tokens.to_string()),
            (
                "x-ratelimit-remaining-tokens",
                self.remaining_tokens.to_string(),
            ),
            ("x-ratelimit-reset-tokens", format_reset(self.reset_tokens)),
            (
                "x-ratelimit-limit-requests",
                self.limit_requests.to_string(),
            ),
            (
                "x-ratelimit-remaining-requests",
                self.remaining_requests.to_string(),
            ),
            (
                "x-ratelimit-reset-requests",
                format_reset(self.reset_requests),
            ),
        ]
    }
}
