//! The usage event: one per provider call, the source of truth for billing, limits and
//! analytics.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::ids::{RequestId, TenantId};
use super::tenant::ProviderKind;

/// Low-cardinality error classification used in metrics, usage events and logs.
///
/// The first six are the buckets the product brief asks to tell apart; the rest are client
/// errors that are counted but say nothing about the gateway's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// Our own per-tenant limit refused the request.
    RateLimited,
    /// The provider answered 429.
    UpstreamRateLimited,
    /// The model's output failed validation (structured output).
    Validation,
    /// The provider did not answer in time.
    Timeout,
    /// The provider failed (5xx, transport error, malformed answer).
    UpstreamError,
    /// A bug or an infrastructure failure on our side.
    Application,
    /// Missing, unknown or revoked API key.
    Authentication,
    /// The client's request is malformed or not allowed.
    InvalidRequest,
    /// The tenant's configuration cannot serve this request (routing, pricing).
    Configuration,
    /// A dollar budget (the tenant's or an end user's) is spent for its period.
    BudgetExceeded,
}

impl ErrorKind {
    /// The wire and metric name (`rate_limited`, `upstream_error`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RateLimited => "rate_limited",
            Self::UpstreamRateLimited => "upstream_rate_limited",
            Self::Validation => "validation",
            Self::Timeout => "timeout",
            Self::UpstreamError => "upstream_error",
            Self::Application => "application",
            Self::Authentication => "authentication",
            Self::InvalidRequest => "invalid_request",
            Self::Configuration => "configuration",
            Self::BudgetExceeded => "budget_exceeded",
        }
    }
}

/// Token counts in OpenAI's convention: `prompt_tokens` includes cache reads and writes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenUsage {
    /// Input tokens, cache reads and writes included.
    pub prompt_tokens: u64,
    /// Output tokens.
    pub completion_tokens: u64,
    /// Prompt tokens read from the provider's prompt cache.
    pub cached_tokens: u64,
    /// Prompt tokens written to the provider's prompt cache (Anthropic).
    pub cache_write_tokens: u64,
}

impl TokenUsage {
    /// Prompt plus completion tokens: what limits count.
    pub fn total(&self) -> u64 {
        self.prompt_tokens + self.completion_tokens
    }
}

/// Where a usage event's token counts came from.
///
/// Billing reads `provider` counts as exact. `estimated` counts are Tollgate's own: the call
/// spent tokens the provider never reported (a timeout after the request was sent, a stream cut
/// by an error or the Lambda deadline), so the prompt is counted with the gateway's tokenizer,
/// and the reply as what was received or, when nothing could be received, the whole output
/// cap that was reserved for it. Provider-reported parts (Anthropic's `message_start` input and
/// cache counts) are kept as they are. `none`: nothing was spent (a cache hit, or a call the
/// provider refused before generating).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UsageSource {
    /// The provider reported the counts.
    #[default]
    Provider,
    /// The gateway estimated the counts.
    Estimated,
    /// Nothing was spent.
    None,
}

impl UsageSource {
    /// The stored name (`provider`, `estimated`, `none`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Provider => "provider",
            Self::Estimated => "estimated",
            Self::None => "none",
        }
    }
}

/// One record per request that reached (or would have reached) a provider.
///
/// `request_id` is the idempotency key: stores insert it at most once, so a retried Lambda or a
/// replayed event never double-counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageEvent {
    /// The request, and the event's idempotency key.
    pub request_id: RequestId,
    /// The tenant billed.
    pub tenant_id: TenantId,
    /// The event's time; decides the hour it is rolled up into.
    pub created_at: DateTime<Utc>,
    /// The logical model the client asked for.
    pub model_requested: String,
    /// The model id the provider served (the route's model when the provider named none).
    pub model_served: String,
    /// The provider called.
    pub provider: ProviderKind,
    /// Tokens spent (see `usage_source`).
    pub usage: TokenUsage,
    /// The cost in USD, exact.
    pub cost_usd: Decimal,
    /// Wall-clock time of the request, in milliseconds.
    pub latency_ms: u64,
    /// Time spent waiting on the provider, in milliseconds, when measured.
    pub provider_latency_ms: Option<u64>,
    /// Whether the call succeeded.
    pub success: bool,
    /// Why it failed; `None` on success.
    pub error_type: Option<ErrorKind>,
    /// Whether the reply was streamed.
    pub streamed: bool,
    /// Whether the reply came from the response cache.
    pub cache_hit: bool,
    /// Provider attempts made (retries on 429/5xx included). Failed attempts carry no tokens.
    pub attempts: u32,
    /// The client went away before a streamed response finished; the stream was drained so the
    /// usage is still exact.
    pub client_disconnected: bool,
    /// Set when graceful degradation served a cheaper model: the model originally requested.
    #[serde(default)]
    pub degraded_from: Option<String>,
    /// Groundedness of a retrieval-augmented answer (0-1, see `domain::quality`).
    #[serde(default)]
    pub quality_score: Option<Decimal>,
    /// Whether `usage` is the provider's report or Tollgate's estimate. Events stored before
    /// this field existed were all provider-reported or zero.
    #[serde(default)]
    pub usage_source: UsageSource,
    /// The tenant's end user the call was made for (`user`), when the request named one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<super::profile::UserId>,
}

/// Latency histogram buckets: bucket 0 holds < 1 ms, bucket `i ≥ 1` holds
/// `[1.25^(i-1), 1.25^i)` ms, and the last bucket (63) everything from `1.25^62` ms ≈ 1,019.6 s
/// (~17 min) up. Mergeable by adding counts; a percentile read back as the bucket's geometric
/// midpoint is within ±12 % of the true value (half a bucket's width on a log scale:
/// √1.25 ≈ 1.118). The open-ended last bucket starts above Lambda's 15-minute timeout, so no
/// latency a function records falls outside the bound.
pub const LATENCY_BUCKETS: usize = 64;
const LATENCY_GROWTH: f64 = 1.25;

/// The latency histogram bucket of `latency_ms` (see [`LATENCY_BUCKETS`]).
pub fn latency_bucket(latency_ms: u64) -> usize {
    if latency_ms < 1 {
        return 0;
    }
    let i = ((latency_ms as f64).ln() / LATENCY_GROWTH.ln()).floor() as usize + 1;
    i.min(LATENCY_BUCKETS - 1)
}

/// A latency percentile (0–100) of a latency histogram, in ms, by nearest rank, read back as
/// the bucket's value; `None` when the histogram is empty. Rollups and merged report buckets
/// share it, so both answer with the same ±12 % bound.
pub fn histogram_percentile(histogram: &[u64], p: f64) -> Option<f64> {
    let total: u64 = histogram.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = ((p / 100.0) * total as f64).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (bucket, count) in histogram.iter().enumerate() {
        seen += count;
        if seen >= rank {
            return Some(latency_bucket_value(bucket));
        }
    }
    None
}

/// The representative latency of a bucket (its geometric midpoint), in ms.
pub fn latency_bucket_value(bucket: usize) -> f64 {
    if bucket == 0 {
        return 0.5;
    }
    LATENCY_GROWTH.powf(bucket as f64 - 0.5)
}

/// The start of the UTC hour containing `t`.
pub fn hour_start(t: DateTime<Utc>) -> DateTime<Utc> {
    let secs = t.timestamp();
    DateTime::from_timestamp(secs - secs.rem_euclid(3600), 0).unwrap_or(t)
}

/// Per tenant, end user and UTC day: the sum of that day's usage events naming the user (the
/// source of `GET /v1/usage?group_by=user`). Written with the event, in the same atomic step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserDayRollup {
    /// The end user.
    pub user: super::profile::UserId,
    /// The UTC day.
    pub day: chrono::NaiveDate,
    /// Events (calls) recorded.
    pub requests: u64,
    /// Prompt tokens, cache reads and writes included.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
    /// Cost in USD, exact.
    pub cost_usd: Decimal,
}

impl UserDayRollup {
    /// An empty rollup of `user` on `day`.
    pub fn empty(user: super::profile::UserId, day: chrono::NaiveDate) -> Self {
        Self {
            user,
            day,
            requests: 0,
            prompt_tokens: 0,
            completion_tokens: 0,
            cost_usd: Decimal::ZERO,
        }
    }

    /// Adds one event (the caller checks it names this user and falls on this day).
    pub fn apply(&mut self, event: &UsageEvent) {
        self.requests += 1;
        self.prompt_tokens += event.usage.prompt_tokens;
        self.completion_tokens += event.usage.completion_tokens;
        self.cost_usd += event.cost_usd;
    }

    /// Adds another rollup of the same user (summing days).
    pub fn merge(&mut self, other: &UserDayRollup) {
        self.requests += other.requests;
        self.prompt_tokens += other.prompt_tokens;
        self.completion_tokens += other.completion_tokens;
        self.cost_usd += other.cost_usd;
    }
}

/// Per-user totals over the days of `rows`, highest cost first (ties by user id): what
/// `GET /v1/usage?group_by=user` and `tollgate usage top --by user` rank. Each total carries
/// the earliest day it was built from.
pub fn rank_users(rows: &[UserDayRollup]) -> Vec<UserDayRollup> {
    let mut users: std::collections::BTreeMap<&super::profile::UserId, UserDayRollup> =
        std::collections::BTreeMap::new();
    for row in rows {
        users
            .entry(&row.user)
            .and_modify(|total| {
                total.merge(row);
                total.day = total.day.min(row.day);
            })
            .or_insert_with(|| row.clone());
    }
    let mut ranked: Vec<UserDayRollup> = users.into_values().collect();
    ranked.sort_by(|a, b| {
        b.cost_usd
            .cmp(&a.cost_usd)
            .then_with(|| a.user.cmp(&b.user))
    });
    ranked
}

/// A bounded read of per-user rollups.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserRollups {
    /// User-days, in no particular order.
    pub rows: Vec<UserDayRollup>,
    /// `false` when the read stopped at its bound before the end of the range.
    pub complete: bool,
}

/// Per tenant, model and hour: the sum of that hour's usage events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageRollup {
    /// The tenant whose events these are.
    pub tenant_id: TenantId,
    /// The hour's start.
    pub hour: DateTime<Utc>,
    /// The logical model requested.
    pub model: String,
    /// Events in the hour.
    pub requests: u64,
    /// Failed events.
    pub errors: u64,
    /// Error count by `ErrorKind::as_str()`.
    pub errors_by_type: std::collections::BTreeMap<String, u64>,
    /// Sum of the events' `prompt_tokens`.
    pub prompt_tokens: u64,
    /// Sum of the events' `completion_tokens`.
    pub completion_tokens: u64,
    /// Sum of the events' `cached_tokens`.
    pub cached_tokens: u64,
    /// Sum of the events' `cache_write_tokens`.
    pub cache_write_tokens: u64,
    /// Sum of the events' cost, in USD.
    pub cost_usd: Decimal,
    /// Events served from the response cache.
    pub cache_hits: u64,
    /// Streamed events.
    pub streamed: u64,
    /// Counts per `latency_bucket`; always `LATENCY_BUCKETS` long.
    pub latency_histogram: Vec<u64>,
    /// Sum of the events' quality scores.
    pub quality_score_sum: Decimal,
    /// Events that had a quality score.
    pub quality_score_count: u64,
    /// Events whose tokens were estimated (`UsageSource::Estimated`).
    pub estimated: u64,
}

impl UsageRollup {
    /// A rollup with nothing counted yet.
    pub fn empty(tenant_id: TenantId, hour: DateTime<Utc>, model: String) -> Self {
        Self {
            tenant_id,
            hour,
            model,
            requests: 0,
            errors: 0,
            errors_by_type: std::collections::BTreeMap::new(),
            prompt_tokens: 0,
            completion_tokens: 0,
            cached_tokens: 0,
            cache_write_tokens: 0,
            cost_usd: Decimal::ZERO,
            cache_hits: 0,
            streamed: 0,
            latency_histogram: vec![0; LATENCY_BUCKETS],
            quality_score_sum: Decimal::ZERO,
            quality_score_count: 0,
            estimated: 0,
        }
    }

    /// Adds one event. Every store applies exactly this arithmetic.
    pub fn apply(&mut self, event: &UsageEvent) {
        self.requests += 1;
        if let Some(kind) = event.error_type {
            self.errors += 1;
            *self
                .errors_by_type
                .entry(kind.as_str().to_owned())
                .or_default() += 1;
        }
        self.prompt_tokens += event.usage.prompt_tokens;
        self.completion_tokens += event.usage.completion_tokens;
        self.cached_tokens += event.usage.cached_tokens;
        self.cache_write_tokens += event.usage.cache_write_tokens;
        self.cost_usd += event.cost_usd;
        self.cache_hits += u64::from(event.cache_hit);
        self.streamed += u64::from(event.streamed);
        self.estimated += u64::from(event.usage_source == UsageSource::Estimated);
        if let Some(slot) = self
            .latency_histogram
            .get_mut(latency_bucket(event.latency_ms))
        {
            *slot += 1;
        }
        if let Some(score) = event.quality_score {
            self.quality_score_sum += score;
            self.quality_score_count += 1;
        }
    }

    /// The hour an event is rolled up into.
    pub fn hour_of(event: &UsageEvent) -> DateTime<Utc> {
        hour_start(event.created_at)
    }

    /// A latency percentile (0–100) from the histogram, in ms; `None` when empty.
    pub fn latency_percentile(&self, p: f64) -> Option<f64> {
        histogram_percentile(&self.latency_histogram, p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_buckets_stay_within_the_stated_error_bound() {
        for ms in [1_u64, 2, 3, 7, 10, 42, 99, 250, 1000, 4321, 60_000] {
            let value = latency_bucket_value(latency_bucket(ms));
            let error = (value - ms as f64).abs() / ms as f64;
            assert!(error <= 0.12, "{ms} ms read back as {value} ({error:.3})");
        }
        assert_eq!(latency_bucket(0), 0);
        assert_eq!(latency_bucket(u64::MAX), LATENCY_BUCKETS - 1);
    }

    #[test]
    fn the_open_ended_last_bucket_starts_past_lambdas_15_minute_timeout() {
        // 1.25^62 ≈ 1,019,578.8 ms (~17 min), as the `LATENCY_BUCKETS` docs say.
        assert_eq!(latency_bucket(1_019_578), LATENCY_BUCKETS - 2);
        assert_eq!(latency_bucket(1_019_579), LATENCY_BUCKETS - 1);
        assert_eq!(latency_bucket(15 * 60 * 1_000), LATENCY_BUCKETS - 2);
    }
}
