//! The usage report and the event listing, as pure rules: time buckets, the merge of hourly
//! rollups into report buckets, event filters and the opaque listing cursor.
//!
//! Reports are read from hourly rollups (never from events), so a 93-day report costs a bounded
//! number of reads. Latency percentiles come from the rollups' mergeable histograms (see
//! `domain::usage::LATENCY_BUCKETS`): a reported percentile is within
//! [`LATENCY_ERROR_BOUND`] (relative) of the exact one computed from the events, or within
//! 0.5 ms below 1 ms.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, SecondsFormat, TimeZone, Utc};
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use serde::Serialize;

use super::ids::{RequestId, TenantId};
use super::usage::ErrorKind;
use super::usage::{LATENCY_BUCKETS, UsageEvent, UsageRollup, histogram_percentile};

/// The relative error bound of a reported latency percentile (half a histogram bucket on a log
/// scale: √1.25 ≈ 1.118), stated in every report.
pub const LATENCY_ERROR_BOUND: f64 = 0.12;

/// Every `ErrorKind` by its wire name, for parsing filters and listing valid values.
pub const ERROR_KINDS: [ErrorKind; 10] = [
    ErrorKind::RateLimited,
    ErrorKind::UpstreamRateLimited,
    ErrorKind::Validation,
    ErrorKind::Timeout,
    ErrorKind::UpstreamError,
    ErrorKind::Application,
    ErrorKind::Authentication,
    ErrorKind::InvalidRequest,
    ErrorKind::Configuration,
    ErrorKind::BudgetExceeded,
];

/// The [`ErrorKind`] with this wire name; `None` for any other string.
pub fn parse_error_kind(raw: &str) -> Option<ErrorKind> {
    ERROR_KINDS.into_iter().find(|k| k.as_str() == raw)
}

// ---------------------------------------------------------------------------------------------
// Report buckets
// ---------------------------------------------------------------------------------------------

/// The width of a report bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Granularity {
    /// One-hour buckets.
    Hour,
    /// One-day buckets (UTC days).
    Day,
}

impl Granularity {
    /// Parses `hour` or `day`.
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "hour" => Some(Self::Hour),
            "day" => Some(Self::Day),
            _ => None,
        }
    }

    /// A bucket's width.
    pub fn step(self) -> Duration {
        match self {
            Self::Hour => Duration::hours(1),
            Self::Day => Duration::days(1),
        }
    }

    fn seconds(self) -> i64 {
        self.step().num_seconds()
    }

    /// The start of the bucket holding `t`.
    pub fn floor(self, t: DateTime<Utc>) -> DateTime<Utc> {
        let secs = t.timestamp();
        Utc.timestamp_opt(secs - secs.rem_euclid(self.seconds()), 0)
            .single()
            .unwrap_or(t)
    }

    /// The first bucket start at or after `t`.
    pub fn ceil(self, t: DateTime<Utc>) -> DateTime<Utc> {
        let floor = self.floor(t);
        if floor == t {
            t
        } else {
            floor.checked_add_signed(self.step()).unwrap_or(floor)
        }
    }
}

/// What a report covers: `[from, to)`, both on bucket boundaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportSpec {
    /// The first bucket's start (inclusive).
    pub from: DateTime<Utc>,
    /// The end of the last bucket (exclusive).
    pub to: DateTime<Utc>,
    /// Bucket width.
    pub granularity: Granularity,
    /// Whether each bucket (and the totals) is also broken down by model.
    pub group_by_model: bool,
}

impl ReportSpec {
    /// Widens `[from, to)` to whole buckets.
    pub fn aligned(
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        granularity: Granularity,
        group_by_model: bool,
    ) -> Self {
        Self {
            from: granularity.floor(from),
            to: granularity.ceil(to),
            granularity,
            group_by_model,
        }
    }

    /// Bucket starts, oldest first.
    pub fn bucket_starts(&self) -> Vec<DateTime<Utc>> {
        let mut starts = Vec::new();
        let mut t = self.from;
        while t < self.to {
            starts.push(t);
            match t.checked_add_signed(self.granularity.step()) {
                Some(next) => t = next,
                None => break,
            }
        }
        starts
    }
}

/// Sums of rollups: everything a summary needs, merged exactly (counts and `Decimal` cost) and
/// the latency histograms added bucket by bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Aggregate {
    /// Events counted.
    pub requests: u64,
    /// Failed events.
    pub errors: u64,
    /// Error count by `ErrorKind::as_str()`.
    pub errors_by_type: BTreeMap<String, u64>,
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
    /// Prompt tokens read from the provider's prompt cache.
    pub cached_tokens: u64,
    /// Prompt tokens written to the provider's prompt cache.
    pub cache_write_tokens: u64,
    /// Cost in USD, exact.
    pub cost_usd: Decimal,
    /// Events served from the response cache.
    pub cache_hits: u64,
    /// Streamed events.
    pub streamed: u64,
    /// Counts per latency bucket, `LATENCY_BUCKETS` long.
    pub latency_histogram: Vec<u64>,
    /// Sum of quality scores.
    pub quality_score_sum: Decimal,
    /// Events with a quality score.
    pub quality_score_count: u64,
    /// Events whose tokens were estimated.
    pub estimated: u64,
}

impl Default for Aggregate {
    fn default() -> Self {
        Self {
            requests: 0,
            errors: 0,
            errors_by_type: BTreeMap::new(),
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
}

impl Aggregate {
    /// Adds one rollup's counts.
    pub fn add(&mut self, r: &UsageRollup) {
        self.requests += r.requests;
        self.errors += r.errors;
        for (kind, n) in &r.errors_by_type {
            *self.errors_by_type.entry(kind.clone()).or_default() += n;
        }
        self.prompt_tokens += r.prompt_tokens;
        self.completion_tokens += r.completion_tokens;
        self.cached_tokens += r.cached_tokens;
        self.cache_write_tokens += r.cache_write_tokens;
        self.cost_usd += r.cost_usd;
        self.cache_hits += r.cache_hits;
        self.streamed += r.streamed;
        for (slot, n) in self.latency_histogram.iter_mut().zip(&r.latency_histogram) {
            *slot += n;
        }
        self.quality_score_sum += r.quality_score_sum;
        self.quality_score_count += r.quality_score_count;
        self.estimated += r.estimated;
    }

    /// A latency percentile (0-100) in ms, by nearest rank over the merged histogram, read back
    /// as the bucket's geometric midpoint (the same rule as `UsageRollup::latency_percentile`).
    pub fn latency_percentile(&self, p: f64) -> Option<f64> {
        histogram_percentile(&self.latency_histogram, p)
    }

    /// The summary the API renders.
    pub fn summary(&self) -> UsageSummary {
        let latency = match (
            self.latency_percentile(50.0),
            self.latency_percentile(95.0),
            self.latency_percentile(99.0),
        ) {
            (Some(p50), Some(p95), Some(p99)) => Some(Percentiles {
                p50: round(p50, 1),
                p95: round(p95, 1),
                p99: round(p99, 1),
            }),
            _ => None,
        };
        let quality_score_avg = (self.quality_score_count > 0)
            .then(|| self.quality_score_sum / Decimal::from(self.quality_score_count))
            .and_then(|avg| avg.round_dp(4).to_f64());
        UsageSummary {
            requests: self.requests,
            errors: self.errors,
            error_rate: ratio(self.errors, self.requests),
            errors_by_type: self.errors_by_type.clone(),
            prompt_tokens: self.prompt_tokens,
            completion_tokens: self.completion_tokens,
            cached_tokens: self.cached_tokens,
            cache_write_tokens: self.cache_write_tokens,
            total_tokens: self.prompt_tokens + self.completion_tokens,
            cost_usd: self.cost_usd.normalize(),
            cache_hits: self.cache_hits,
            cache_hit_rate: ratio(self.cache_hits, self.requests),
            cached_token_share: ratio(self.cached_tokens, self.prompt_tokens),
            streamed: self.streamed,
            latency_ms: latency,
            quality_score_avg,
            quality_scored: self.quality_score_count,
            estimated_usage_calls: self.estimated,
        }
    }
}

fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        round(part as f64 / whole as f64, 6)
    }
}

fn round(value: f64, places: i32) -> f64 {
    let scale = 10_f64.powi(places);
    (value * scale).round() / scale
}

/// Latency percentiles in ms (histogram midpoints; see [`LATENCY_ERROR_BOUND`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Percentiles {
    /// Median latency, in ms.
    pub p50: f64,
    /// 95th percentile latency, in ms.
    pub p95: f64,
    /// 99th percentile latency, in ms.
    pub p99: f64,
}

/// One bucket's (or one model's, or the whole range's) usage, as the API renders it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UsageSummary {
    /// Requests counted.
    pub requests: u64,
    /// Failed requests.
    pub errors: u64,
    /// `errors / requests` (0 when there were none).
    pub error_rate: f64,
    /// Error count by error type (`ErrorKind::as_str()`).
    pub errors_by_type: BTreeMap<String, u64>,
    /// Prompt tokens (cache reads and writes included).
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
    /// Prompt tokens read from the provider's prompt cache.
    pub cached_tokens: u64,
    /// Prompt tokens written to the provider's prompt cache.
    pub cache_write_tokens: u64,
    /// Prompt plus completion tokens.
    pub total_tokens: u64,
    /// Exact, as a decimal string: money never goes through a float.
    #[serde(with = "rust_decimal::serde::str")]
    pub cost_usd: Decimal,
    /// Requests answered from the response cache.
    pub cache_hits: u64,
    /// `cache_hits / requests`.
    pub cache_hit_rate: f64,
    /// `cached_tokens / prompt_tokens`: the share of prompt tokens read from the provider's
    /// prompt cache.
    pub cached_token_share: f64,
    /// Streamed requests.
    pub streamed: u64,
    /// `null` when there were no requests.
    pub latency_ms: Option<Percentiles>,
    /// Average groundedness of retrieval-augmented answers (Σ scores / `quality_scored`, to 4
    /// decimal places), `null` when none was scored.
    pub quality_score_avg: Option<f64>,
    /// Answers that got a quality score.
    pub quality_scored: u64,
    /// Calls whose tokens are the gateway's estimate, not the provider's report (a timeout
    /// after sending, a stream cut short): their events say `usage_source: estimated`.
    pub estimated_usage_calls: u64,
}

/// One model's usage in a range or bucket.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelUsage {
    /// The logical model requested.
    pub model: String,
    /// Its usage.
    #[serde(flatten)]
    pub usage: UsageSummary,
}

/// One time bucket of a report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReportBucket {
    /// The bucket's start (inclusive).
    pub start: DateTime<Utc>,
    /// The bucket's end (exclusive).
    pub end: DateTime<Utc>,
    /// The bucket's usage, every model.
    #[serde(flatten)]
    pub usage: UsageSummary,
    /// Per model, with `group_by=model` (models with usage in the bucket, by name).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub models: Option<Vec<ModelUsage>>,
}

/// `GET /v1/usage`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UsageReport {
    /// Always `usage.report`.
    pub object: &'static str,
    /// The tenant reported on.
    pub tenant_id: TenantId,
    /// The report's start, aligned to a bucket (inclusive).
    pub from: DateTime<Utc>,
    /// The report's end, aligned to a bucket (exclusive).
    pub to: DateTime<Utc>,
    /// Bucket width.
    pub granularity: Granularity,
    /// `model` when grouped by model, else `None`.
    pub group_by: Option<&'static str>,
    /// Relative error bound of every `latency_ms` percentile.
    pub latency_error_bound: f64,
    /// The whole range, every model.
    pub totals: UsageSummary,
    /// The whole range, per model (by name).
    pub models: Vec<ModelUsage>,
    /// Every bucket of the range, oldest first, empty ones included (charts need no gaps).
    pub buckets: Vec<ReportBucket>,
}

/// Merges the tenant's hourly rollups into the report's buckets. Rollups outside the spec's
/// range or of another tenant are ignored (the store should not return any).
pub fn build_report(tenant: &TenantId, spec: &ReportSpec, rollups: &[UsageRollup]) -> UsageReport {
    let starts = spec.bucket_starts();
    let mut totals = Aggregate::default();
    let mut by_model: BTreeMap<&str, Aggregate> = BTreeMap::new();
    let mut buckets: Vec<(Aggregate, BTreeMap<&str, Aggregate>)> =
        vec![Default::default(); starts.len()];
    let step = spec.granularity.seconds();
    for rollup in rollups {
        if &rollup.tenant_id != tenant || rollup.hour < spec.from || rollup.hour >= spec.to {
            continue;
        }
        let index = usize::try_from((rollup.hour - spec.from).num_seconds() / step).ok();
        let Some((bucket, models)) = index.and_then(|i| buckets.get_mut(i)) else {
            continue;
        };
        bucket.add(rollup);
        models.entry(&rollup.model).or_default().add(rollup);
        totals.add(rollup);
        by_model.entry(&rollup.model).or_default().add(rollup);
    }
    let model_list = |models: &BTreeMap<&str, Aggregate>| -> Vec<ModelUsage> {
        models
            .iter()
            .map(|(model, agg)| ModelUsage {
                model: (*model).to_owned(),
                usage: agg.summary(),
            })
            .collect()
    };
    let buckets = starts
        .iter()
        .zip(&buckets)
        .map(|(start, (agg, models))| ReportBucket {
            start: *start,
            end: start
                .checked_add_signed(spec.granularity.step())
                .unwrap_or(*start),
            usage: agg.summary(),
            models: spec.group_by_model.then(|| model_list(models)),
        })
        .collect();
    UsageReport {
        object: "usage.report",
        tenant_id: tenant.clone(),
        from: spec.from,
        to: spec.to,
        granularity: spec.granularity,
        group_by: spec.group_by_model.then_some("model"),
        latency_error_bound: LATENCY_ERROR_BOUND,
        totals: totals.summary(),
        models: model_list(&by_model),
        buckets,
    }
}

// ---------------------------------------------------------------------------------------------
// Event listing
// ---------------------------------------------------------------------------------------------

/// `ok` (the call succeeded) or `error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EventStatus {
    /// The call succeeded.
    Ok,
    /// The call failed.
    Error,
}

impl EventStatus {
    /// Parses `ok` or `error`.
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "ok" => Some(Self::Ok),
            "error" => Some(Self::Error),
            _ => None,
        }
    }

    /// The status of `event`.
    pub fn of(event: &UsageEvent) -> Self {
        if event.success { Self::Ok } else { Self::Error }
    }
}

/// Which of a tenant's events to list. Time bounds are `[from, to)` at millisecond precision
/// (the precision of the stored sort key).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// Only events of this end user.
    pub user: Option<super::profile::UserId>,
    /// The logical model requested.
    pub model: Option<String>,
    /// Only events with this status.
    pub status: Option<EventStatus>,
    /// Only events that failed with this error type.
    pub error_type: Option<ErrorKind>,
    /// Only events at or after this time.
    pub from: Option<DateTime<Utc>>,
    /// Only events before this time.
    pub to: Option<DateTime<Utc>>,
}

impl EventFilter {
    /// Whether the attribute filters (model, status, error type) admit `event`; time bounds
    /// are applied on the sort key, see [`EventFilter::key_range`].
    pub fn matches(&self, event: &UsageEvent) -> bool {
        self.user
            .as_ref()
            .is_none_or(|u| event.user.as_ref() == Some(u))
            && self
                .model
                .as_deref()
                .is_none_or(|m| m == event.model_requested)
            && self.status.is_none_or(|s| s == EventStatus::of(event))
            && self.error_type.is_none_or(|k| Some(k) == event.error_type)
    }

    /// Whether only time bounds are set (every event in range matches).
    pub fn admits_all(&self) -> bool {
        self.user.is_none()
            && self.model.is_none()
            && self.status.is_none()
            && self.error_type.is_none()
    }

    /// The sort-key range to read, newest first: keys `>= lower` (inclusive) and `< upper`
    /// (exclusive). `upper` is the tighter of `to` and the cursor's position.
    pub fn key_range(&self, cursor: Option<&EventCursor>) -> KeyRange {
        let to = self.to.map(time_prefix);
        let after = cursor.map(EventCursor::sort_key);
        let upper = match (to, after) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        KeyRange {
            lower: self.from.map(time_prefix),
            upper,
        }
    }
}

/// A range of event sort keys: `lower <= key < upper`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRange {
    /// The smallest key in range (inclusive); `None`: unbounded.
    pub lower: Option<String>,
    /// The bound above the range (exclusive); `None`: unbounded.
    pub upper: Option<String>,
}

impl KeyRange {
    /// Whether `key` is in the range.
    pub fn contains(&self, key: &str) -> bool {
        self.lower.as_deref().is_none_or(|l| key >= l)
            && self.upper.as_deref().is_none_or(|u| key < u)
    }
}

/// A key that sorts before every event key of instant `t` and after those of earlier instants
/// (event keys are `{time}#{request id}`).
fn time_prefix(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// One page of a tenant's events, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventPage {
    /// Up to the page's limit of events, newest first.
    pub events: Vec<UsageEvent>,
    /// Where the next page starts; `None` when there are no more events.
    pub next: Option<EventCursor>,
}

/// A position in a tenant's event listing: the sort key of the last event seen (creation time
/// at millisecond precision, then request id: the `by_tenant_time` index's sort key).
///
/// It carries no tenant: a listing always reads the authenticated tenant's partition, and a
/// cursor only says where to resume in it. A cursor issued to another tenant therefore reads
/// nothing of theirs; at most it skips some of the caller's own events.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct EventCursor {
    key: String,
}

/// A cursor that is malformed, or not one this API issued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the cursor is not one this API issued")]
pub struct CursorError;

const CURSOR_VERSION: &str = "e1";
/// Longest accepted request id (as `RequestId::from_upstream`).
const MAX_REQUEST_ID: usize = 128;

impl EventCursor {
    /// The position of `event`.
    pub fn of(event: &UsageEvent) -> Self {
        Self::at(event.created_at, &event.request_id)
    }

    /// The position of the event created at `created_at` with `request_id`.
    pub fn at(created_at: DateTime<Utc>, request_id: &RequestId) -> Self {
        Self {
            key: format!("{}#{}", time_prefix(created_at), request_id.as_str()),
        }
    }

    /// The sort key this cursor stands at (`{RFC 3339, ms, Z}#{request id}`).
    pub fn sort_key(&self) -> String {
        self.key.clone()
    }

    /// Validates a stored sort key.
    pub fn from_sort_key(key: &str) -> Result<Self, CursorError> {
        let (time, request_id) = key.split_once('#').ok_or(CursorError)?;
        let t = DateTime::parse_from_rfc3339(time).map_err(|_| CursorError)?;
        let canonical_time = time_prefix(t.with_timezone(&Utc)) == time;
        let valid_id = (1..=MAX_REQUEST_ID).contains(&request_id.len())
            && request_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'=');
        if canonical_time && valid_id {
            Ok(Self {
                key: key.to_owned(),
            })
        } else {
            Err(CursorError)
        }
    }

    /// The opaque form clients get (`next_cursor`): URL-safe, versioned.
    pub fn encode(&self) -> String {
        format!("{CURSOR_VERSION}{}", hex::encode(self.key.as_bytes()))
    }

    /// Parses the form [`EventCursor::encode`] produces.
    pub fn decode(raw: &str) -> Result<Self, CursorError> {
        let body = raw.strip_prefix(CURSOR_VERSION).ok_or(CursorError)?;
        if body.len() > 2 * (32 + MAX_REQUEST_ID) {
            return Err(CursorError);
        }
        let bytes = hex::decode(body).map_err(|_| CursorError)?;
        let key = String::from_utf8(bytes).map_err(|_| CursorError)?;
        Self::from_sort_key(&key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::tenant::ProviderKind;
    use crate::domain::usage::TokenUsage;
    use rust_decimal_macros::dec;

    fn at(h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 14, h, m, 0).unwrap()
    }

    fn event(model: &str, at: DateTime<Utc>, latency_ms: u64, cost: Decimal) -> UsageEvent {
        UsageEvent {
            request_id: RequestId::generate(),
            tenant_id: TenantId::parse("acme").unwrap(),
            created_at: at,
            model_requested: model.into(),
            model_served: model.into(),
            provider: ProviderKind::Openai,
            usage: TokenUsage {
                prompt_tokens: 100,
                completion_tokens: 10,
                cached_tokens: 50,
                cache_write_tokens: 0,
            },
            cost_usd: cost,
            latency_ms,
            provider_latency_ms: None,
            success: true,
            error_type: None,
            streamed: false,
            cache_hit: false,
            attempts: 1,
            client_disconnected: false,
            degraded_from: None,
            quality_score: None,
            usage_source: Default::default(),
            user: None,
        }
    }

    fn rollups(events: &[UsageEvent]) -> Vec<UsageRollup> {
        let mut map: BTreeMap<(DateTime<Utc>, String), UsageRollup> = BTreeMap::new();
        for e in events {
            let hour = UsageRollup::hour_of(e);
            map.entry((hour, e.model_requested.clone()))
                .or_insert_with(|| {
                    UsageRollup::empty(e.tenant_id.clone(), hour, e.model_requested.clone())
                })
                .apply(e);
        }
        map.into_values().collect()
    }

    #[test]
    fn ranges_widen_to_whole_buckets() {
        let spec = ReportSpec::aligned(at(10, 30), at(13, 5), Granularity::Hour, false);
        assert_eq!((spec.from, spec.to), (at(10, 0), at(14, 0)));
        assert_eq!(spec.bucket_starts().len(), 4);
        let day = ReportSpec::aligned(at(10, 30), at(13, 5), Granularity::Day, false);
        assert_eq!(day.from, at(0, 0));
        assert_eq!(day.to, at(0, 0) + Duration::days(1));
        assert_eq!(day.bucket_starts(), vec![at(0, 0)]);
        let exact = ReportSpec::aligned(at(10, 0), at(12, 0), Granularity::Hour, false);
        assert_eq!(exact.bucket_starts(), vec![at(10, 0), at(11, 0)]);
    }

    #[test]
    fn buckets_sum_rollups_exactly_and_keep_models_apart() {
        let mut events = vec![
            event("a", at(10, 1), 100, dec!(0.00027)),
            event("a", at(10, 59), 200, dec!(0.1)),
            event("b", at(11, 30), 40, dec!(0.0000001)),
        ];
        let mut failed = event("b", at(12, 0), 5, Decimal::ZERO);
        failed.success = false;
        failed.error_type = Some(ErrorKind::Timeout);
        events.push(failed);
        let tenant = TenantId::parse("acme").unwrap();
        let spec = ReportSpec::aligned(at(10, 0), at(13, 0), Granularity::Hour, true);
        let report = build_report(&tenant, &spec, &rollups(&events));
        assert_eq!(report.buckets.len(), 3);
        assert_eq!(report.totals.requests, 4);
        assert_eq!(report.totals.cost_usd, dec!(0.1002701));
        assert_eq!(report.totals.errors_by_type["timeout"], 1);
        assert_eq!(report.totals.error_rate, 0.25);
        assert_eq!(report.totals.cached_token_share, 0.5);
        assert_eq!(report.buckets[0].usage.requests, 2);
        let models = report.buckets[1].models.as_ref().unwrap();
        assert_eq!(models.len(), 1);
        assert_eq!(models[0].model, "b");
        assert_eq!(report.models.len(), 2);
        assert_eq!(report.models[0].usage.requests, 2);
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["totals"]["cost_usd"], "0.1002701");
        assert_eq!(json["latency_error_bound"], 0.12);
        assert_eq!(json["group_by"], "model");
        assert!(json["buckets"][0]["models"].is_array());
    }

    #[test]
    fn merged_percentiles_stay_within_the_stated_bound() {
        let latencies: Vec<u64> = (1..=500).map(|i| (i * i) % 3_000 + 1).collect();
        let events: Vec<_> = latencies
            .iter()
            .enumerate()
            .map(|(i, ms)| event("m", at(10, 0) + Duration::minutes(i as i64), *ms, dec!(0)))
            .collect();
        let tenant = TenantId::parse("acme").unwrap();
        let spec = ReportSpec::aligned(at(0, 0), at(23, 0), Granularity::Day, false);
        let report = build_report(&tenant, &spec, &rollups(&events));
        let mut sorted = latencies.clone();
        sorted.sort_unstable();
        let exact = |p: f64| {
            let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
            sorted[rank.max(1) - 1] as f64
        };
        let got = report.totals.latency_ms.unwrap();
        for (p, value) in [(50.0, got.p50), (95.0, got.p95), (99.0, got.p99)] {
            let e = exact(p);
            assert!(
                (value - e).abs() / e <= LATENCY_ERROR_BOUND + 1e-3,
                "p{p}: {value} vs {e}"
            );
        }
    }

    #[test]
    fn other_tenants_rollups_are_ignored() {
        let mut e = event("a", at(10, 0), 10, dec!(1));
        e.tenant_id = TenantId::parse("globex").unwrap();
        let tenant = TenantId::parse("acme").unwrap();
        let spec = ReportSpec::aligned(at(0, 0), at(23, 0), Granularity::Day, false);
        let report = build_report(&tenant, &spec, &rollups(&[e]));
        assert_eq!(report.totals.requests, 0);
        assert!(report.totals.latency_ms.is_none());
    }

    #[test]
    fn cursors_round_trip_and_reject_anything_else() {
        let e = event(
            "a",
            at(10, 0) + Duration::nanoseconds(1_234_567),
            1,
            dec!(0),
        );
        let cursor = EventCursor::of(&e);
        assert_eq!(
            cursor.sort_key(),
            format!("2026-03-14T10:00:00.001Z#{}", e.request_id)
        );
        let raw = cursor.encode();
        assert!(raw.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_eq!(EventCursor::decode(&raw), Ok(cursor));
        for bad in [
            "",
            "e1",
            "e1zz",
            "x1abcd",
            &format!("e1{}", hex::encode("2026-03-14T10:00:00Z#abc")),
            &format!("e1{}", hex::encode("2026-03-14T10:00:00.000Z#a b")),
            &format!("e1{}", hex::encode("2026-03-14T10:00:00.000Z")),
        ] {
            assert_eq!(EventCursor::decode(bad), Err(CursorError), "{bad}");
        }
    }

    #[test]
    fn key_ranges_take_the_tighter_upper_bound() {
        let e = event("a", at(10, 0), 1, dec!(0));
        let filter = EventFilter {
            from: Some(at(9, 0)),
            to: Some(at(11, 0)),
            ..Default::default()
        };
        let range = filter.key_range(Some(&EventCursor::of(&e)));
        assert_eq!(range.upper, Some(EventCursor::of(&e).sort_key()));
        assert!(range.contains(&EventCursor::at(at(9, 0), &e.request_id).sort_key()));
        assert!(!range.contains(&EventCursor::of(&e).sort_key()));
        let later = filter.key_range(Some(&EventCursor::at(at(12, 0), &e.request_id)));
        assert_eq!(later.upper.as_deref(), Some("2026-03-14T11:00:00.000Z"));
        assert!(!later.contains(&EventCursor::at(at(11, 0), &e.request_id).sort_key()));
    }

    #[test]
    fn filters_match_model_status_and_error_type() {
        let mut e = event("a", at(10, 0), 1, dec!(0));
        let by_model = EventFilter {
            model: Some("a".into()),
            ..Default::default()
        };
        assert!(by_model.matches(&e));
        e.success = false;
        e.error_type = Some(ErrorKind::Timeout);
        let errors = EventFilter {
            status: Some(EventStatus::Error),
            error_type: Some(ErrorKind::Timeout),
            ..Default::default()
        };
        assert!(errors.matches(&e));
        assert!(
            !EventFilter {
                error_type: Some(ErrorKind::UpstreamError),
                ..Default::default()
            }
            .matches(&e)
        );
        for kind in ERROR_KINDS {
            assert_eq!(parse_error_kind(kind.as_str()), Some(kind));
        }
    }
}
