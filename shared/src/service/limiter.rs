//! The token limiter: sliding windows over bucket counters (the scheme and its error bound are
//! in `domain::limits`), decided by one atomic conditional write.
//!
//! Per request, before the provider call: one read of every counted bucket (`snapshot`, one
//! round trip) and one conditional increment of the current buckets (`reserve`, one round trip,
//! all-or-nothing across the tenant's minute and day windows and the upstream quota). After the
//! call, `Reservation::reconcile` yields the adjustments that travel with the usage event in the
//! same atomic write, so a reservation is reconciled exactly once.
//!
//! Accounting choices: a request that reaches admission counts toward requests per minute
//! whatever happens next (as OpenAI counts it); its tokens are reserved as prompt + `max_tokens`
//! (or the configured default) and reconciled to the provider's usage: refunded in full when the
//! provider call fails (providers bill nothing for errors), charged extra when the reply used
//! more than reserved. Response-cache hits never reach the limiter: they cost no provider tokens.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::domain::ids::TenantId;
use crate::domain::limits::{DAY, LimitKind, Limits, MINUTE, RateStatus, Window};
use crate::domain::tenant::ProviderKind;
use crate::error::GatewayError;
use crate::ports::store::{AddOutcome, Counter, CounterAdd, CounterKey, LimiterStore, StoreError};

/// Closed hour buckets change only by refunds (which lower them), so a container caches them
/// briefly instead of reading 24 counters per request.
const CLOSED_HOURS_TTL_SECS: i64 = 300;

/// Upstream quotas: tokens per minute per provider model, shared by every tenant.
pub type UpstreamQuotas = HashMap<(ProviderKind, String), u64>;

pub struct Limiter {
    store: Arc<dyn LimiterStore>,
    quotas: UpstreamQuotas,
    default_reserve: u32,
    closed_hours: Mutex<HashMap<CounterKey, (Counter, i64)>>,
}

fn tenant_key(tenant: &TenantId, window: Window, index: i64) -> CounterKey {
    CounterKey(format!("t#{tenant}#{}#{index}", window.tag))
}

fn upstream_key(provider: ProviderKind, model: &str, index: i64) -> CounterKey {
    CounterKey(format!("u#{provider}#{model}#{}#{index}", MINUTE.tag))
}

/// Counted buckets of one window at one moment, oldest first; the last is the current bucket.
#[derive(Debug, Clone, Default)]
pub struct Buckets(Vec<(i64, Counter)>);

impl Buckets {
    fn closed(&self) -> &[(i64, Counter)] {
        self.0.split_last().map_or(&[], |(_, rest)| rest)
    }

    fn current(&self) -> Counter {
        self.0.last().map(|(_, c)| *c).unwrap_or_default()
    }

    fn closed_tokens(&self) -> i64 {
        self.closed().iter().map(|(_, c)| c.tokens.max(0)).sum()
    }

    fn closed_requests(&self) -> i64 {
        self.closed().iter().map(|(_, c)| c.requests.max(0)).sum()
    }

    pub fn tokens(&self) -> u64 {
        self.0.iter().map(|(_, c)| c.tokens.max(0) as u64).sum()
    }

    fn requests(&self) -> u64 {
        self.0.iter().map(|(_, c)| c.requests.max(0) as u64).sum()
    }

    fn token_series(&self) -> Vec<(i64, u64)> {
        self.0
            .iter()
            .map(|(i, c)| (*i, c.tokens.max(0) as u64))
            .collect()
    }

    fn request_series(&self) -> Vec<(i64, u64)> {
        self.0
            .iter()
            .map(|(i, c)| (*i, c.requests.max(0) as u64))
            .collect()
    }

    /// Time until the oldest non-empty bucket leaves the window: when capacity next grows.
    fn reset(&self, window: Window, now: i64, series: &[(i64, u64)]) -> Duration {
        series
            .iter()
            .find(|(_, n)| *n > 0)
            .map_or(window.next_reset(now), |(index, _)| {
                let leaves_at = (index + window.buckets() + 1) * window.bucket_secs;
                Duration::from_secs((leaves_at - now).max(1) as u64)
            })
    }
}

/// Everything the limiter read for one request.
#[derive(Debug, Clone)]
pub struct Snapshot {
    now: i64,
    minute: Buckets,
    day: Buckets,
    upstream: HashMap<(ProviderKind, String), Buckets>,
}

impl Snapshot {
    /// Tokens counted in the daily window (for degradation).
    pub fn day_tokens(&self) -> u64 {
        self.day.tokens()
    }
}

/// An admitted request's reservation.
#[derive(Debug, Clone)]
pub struct Reservation {
    pub tokens: u64,
    pub status: RateStatus,
    keys: Vec<(CounterKey, i64)>,
}

impl Reservation {
    /// The unconditional adjustments that turn the reservation into the actual usage.
    pub fn reconcile(&self, actual_tokens: u64) -> Vec<CounterAdd> {
        let delta = actual_tokens as i64 - self.tokens as i64;
        if delta == 0 {
            return Vec::new();
        }
        self.keys
            .iter()
            .map(|(key, expires_at)| CounterAdd {
                key: key.clone(),
                tokens: delta,
                requests: 0,
                max_tokens: None,
                max_requests: None,
                expires_at: *expires_at,
            })
            .collect()
    }
}

impl Limiter {
    pub fn new(store: Arc<dyn LimiterStore>, quotas: UpstreamQuotas, default_reserve: u32) -> Self {
        Self {
            store,
            quotas,
            default_reserve,
            closed_hours: Mutex::new(HashMap::new()),
        }
    }

    /// Tokens to reserve: the prompt plus the most the reply may use.
    pub fn reservation_tokens(&self, prompt_tokens: u64, max_tokens: Option<u32>) -> u64 {
        prompt_tokens + u64::from(max_tokens.unwrap_or(self.default_reserve))
    }

    /// Reads every counted bucket for `tenant` and the upstream quotas of `models` (those that
    /// have one), in one round trip.
    pub async fn snapshot(
        &self,
        tenant: &TenantId,
        models: &[(ProviderKind, &str)],
        now: i64,
    ) -> Result<Snapshot, StoreError> {
        let minute_idx: Vec<i64> = MINUTE.counted(now).collect();
        let day_idx: Vec<i64> = DAY.counted(now).collect();
        let current_hour = DAY.current(now);

        let mut keys: Vec<CounterKey> = minute_idx
            .iter()
            .map(|&i| tenant_key(tenant, MINUTE, i))
            .collect();
        let mut cached_hours = HashMap::new();
        {
            let mut cache = self.closed_hours.lock().unwrap_or_else(|e| e.into_inner());
            cache.retain(|_, (_, fetched)| now - *fetched < CLOSED_HOURS_TTL_SECS);
            for &i in &day_idx {
                let key = tenant_key(tenant, DAY, i);
                match cache.get(&key) {
                    Some((counter, _)) if i != current_hour => {
                        cached_hours.insert(i, *counter);
                    }
                    _ => keys.push(key),
                }
            }
        }
        let upstream: Vec<(ProviderKind, String)> = models
            .iter()
            .filter(|(p, m)| self.quotas.contains_key(&(*p, (*m).to_owned())))
            .map(|(p, m)| (*p, (*m).to_owned()))
            .collect();
        for (provider, model) in &upstream {
            keys.extend(
                minute_idx
                    .iter()
                    .map(|&i| upstream_key(*provider, model, i)),
            );
        }

        let values = self.store.read_counters(&keys).await?;
        let read: HashMap<&CounterKey, Counter> = keys.iter().zip(values).collect();
        let value = |key: &CounterKey| read.get(key).copied().unwrap_or_default();

        let minute = Buckets(
            minute_idx
                .iter()
                .map(|&i| (i, value(&tenant_key(tenant, MINUTE, i))))
                .collect(),
        );
        let day = Buckets(
            day_idx
                .iter()
                .map(|&i| {
                    let counter = cached_hours
                        .get(&i)
                        .copied()
                        .unwrap_or_else(|| value(&tenant_key(tenant, DAY, i)));
                    (i, counter)
                })
                .collect(),
        );
        {
            let mut cache = self.closed_hours.lock().unwrap_or_else(|e| e.into_inner());
            for (i, counter) in day.closed() {
                let key = tenant_key(tenant, DAY, *i);
                cache.entry(key).or_insert((*counter, now));
            }
        }
        let upstream = upstream
            .into_iter()
            .map(|(provider, model)| {
                let buckets = Buckets(
                    minute_idx
                        .iter()
                        .map(|&i| (i, value(&upstream_key(provider, &model, i))))
                        .collect(),
                );
                ((provider, model), buckets)
            })
            .collect();
        Ok(Snapshot {
            now,
            minute,
            day,
            upstream,
        })
    }

    /// Admits `tokens` for `tenant` against its limits and the route's upstream quota with one
    /// atomic conditional write. `Err(StoreError)` means the decision could not be made (the
    /// caller fails closed); `Ok(Err(GatewayError))` is a refusal.
    pub async fn reserve(
        &self,
        tenant: &TenantId,
        limits: Limits,
        snapshot: &Snapshot,
        tokens: u64,
        route: (ProviderKind, &str),
    ) -> Result<Result<Reservation, GatewayError>, StoreError> {
        if tokens > limits.tokens_per_minute || tokens > limits.tokens_per_day {
            let (limit, kind) = if tokens > limits.tokens_per_minute {
                (limits.tokens_per_minute, LimitKind::TokensPerMinute)
            } else {
                (limits.tokens_per_day, LimitKind::TokensPerDay)
            };
            return Ok(Err(GatewayError::RequestTooLarge {
                message: format!(
                    "this request needs {tokens} tokens (prompt plus max_tokens), more than the limit of {limit} {}; lower max_tokens or shorten the prompt",
                    kind.describe()
                ),
            }));
        }
        let now = snapshot.now;
        let minute_idx = MINUTE.current(now);
        let hour_idx = DAY.current(now);
        let quota = self.quotas.get(&(route.0, route.1.to_owned())).copied();
        let upstream = quota.map(|q| {
            let buckets = snapshot
                .upstream
                .get(&(route.0, route.1.to_owned()))
                .cloned()
                .unwrap_or_default();
            (q, buckets)
        });

        let t = tokens as i64;
        let minute_expiry = minute_idx * MINUTE.bucket_secs + MINUTE.retention_secs();
        let hour_expiry = hour_idx * DAY.bucket_secs + DAY.retention_secs();
        let mut adds = vec![
            CounterAdd {
                key: tenant_key(tenant, MINUTE, minute_idx),
                tokens: t,
                requests: 1,
                max_tokens: Some(limits.tokens_per_minute as i64 - snapshot.minute.closed_tokens()),
                max_requests: Some(
                    limits.requests_per_minute as i64 - snapshot.minute.closed_requests(),
                ),
                expires_at: minute_expiry,
            },
            CounterAdd {
                key: tenant_key(tenant, DAY, hour_idx),
                tokens: t,
                requests: 1,
                max_tokens: Some(limits.tokens_per_day as i64 - snapshot.day.closed_tokens()),
                max_requests: None,
                expires_at: hour_expiry,
            },
        ];
        if let Some((quota, buckets)) = &upstream {
            adds.push(CounterAdd {
                key: upstream_key(route.0, route.1, minute_idx),
                tokens: t,
                requests: 1,
                max_tokens: Some(*quota as i64 - buckets.closed_tokens()),
                max_requests: None,
                expires_at: minute_expiry,
            });
        }

        // What the snapshot already shows cannot fit is refused without a write; the
        // conditional write stays the authority for everything else.
        let current = [
            snapshot.minute.current(),
            snapshot.day.current(),
            upstream
                .as_ref()
                .map(|(_, b)| b.current())
                .unwrap_or_default(),
        ];
        let foreseen = adds.iter().zip(current).position(|(add, now_value)| {
            add.max_tokens
                .is_some_and(|m| now_value.tokens + add.tokens > m)
                || add
                    .max_requests
                    .is_some_and(|m| now_value.requests + add.requests > m)
        });
        let outcome = match foreseen {
            Some(index) => AddOutcome::Refused { index },
            None => self.store.add_counters(&adds).await?,
        };
        let status = |reserved: u64| self.status(limits, snapshot, reserved);
        match outcome {
            AddOutcome::Applied => Ok(Ok(Reservation {
                tokens,
                status: status(tokens),
                keys: adds.into_iter().map(|a| (a.key, a.expires_at)).collect(),
            })),
            AddOutcome::Refused { index } => {
                let (kind, limit, series, window) = match index {
                    0 => {
                        let rpm_hit = snapshot.minute.requests() + 1 > limits.requests_per_minute;
                        if rpm_hit {
                            (
                                LimitKind::RequestsPerMinute,
                                limits.requests_per_minute,
                                snapshot.minute.request_series(),
                                MINUTE,
                            )
                        } else {
                            (
                                LimitKind::TokensPerMinute,
                                limits.tokens_per_minute,
                                snapshot.minute.token_series(),
                                MINUTE,
                            )
                        }
                    }
                    1 => (
                        LimitKind::TokensPerDay,
                        limits.tokens_per_day,
                        snapshot.day.token_series(),
                        DAY,
                    ),
                    _ => {
                        let (quota, buckets) = upstream.unwrap_or_default();
                        (
                            LimitKind::UpstreamTokensPerMinute,
                            quota,
                            buckets.token_series(),
                            MINUTE,
                        )
                    }
                };
                let needed = if kind == LimitKind::RequestsPerMinute {
                    1
                } else {
                    tokens
                };
                let used: u64 = series.iter().map(|(_, n)| n).sum();
                // The snapshot may be older than the refusal; never tell a client to retry now.
                let retry_after = window
                    .time_until_fits(now, &series, needed, limit)
                    .unwrap_or(Duration::from_secs(window.bucket_secs as u64))
                    .max(Duration::from_secs(1));
                let message = match kind {
                    LimitKind::UpstreamTokensPerMinute => format!(
                        "the upstream quota for `{}` ({limit} {}) is exhausted for now; this is not your own limit. Try again in {}s",
                        route.1,
                        kind.describe(),
                        retry_after.as_secs()
                    ),
                    _ => format!(
                        "rate limit reached for {} on tenant `{tenant}`: limit {limit}, used {used}, requested {needed}. Try again in {}s",
                        kind.describe(),
                        retry_after.as_secs()
                    ),
                };
                Ok(Err(GatewayError::RateLimited {
                    message,
                    retry_after,
                    rate: Box::new(status(0)),
                }))
            }
        }
    }

    fn status(&self, limits: Limits, snapshot: &Snapshot, reserved: u64) -> RateStatus {
        let now = snapshot.now;
        let tokens = snapshot.minute.tokens() + reserved;
        let requests = snapshot.minute.requests() + u64::from(reserved > 0);
        let token_series = snapshot.minute.token_series();
        let request_series = snapshot.minute.request_series();
        RateStatus {
            limit_tokens: limits.tokens_per_minute,
            remaining_tokens: limits.tokens_per_minute.saturating_sub(tokens),
            reset_tokens: snapshot.minute.reset(MINUTE, now, &token_series),
            limit_requests: limits.requests_per_minute,
            remaining_requests: limits.requests_per_minute.saturating_sub(requests),
            reset_requests: snapshot.minute.reset(MINUTE, now, &request_series),
        }
    }
}
