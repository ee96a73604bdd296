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
//! (or the configured default, which is then sent upstream as the reply's cap) and reconciled to
//! the provider's usage: refunded in full when the provider refused the call before generating
//! (providers bill nothing for 429, 5xx or rejections), kept in full when the call may have
//! generated unreported tokens (a timeout after sending: metered as the reservation itself),
//! charged extra when the reply used more than reserved. Response-cache hits never reach the limiter: they cost no provider tokens.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::domain::ids::TenantId;
use crate::domain::limits::{DAY, LimitKind, Limits, MINUTE, RateStatus, Shards, Window};
use crate::domain::tenant::ProviderKind;
use crate::error::GatewayError;
use crate::ports::store::{AddOutcome, Counter, CounterAdd, CounterKey, LimiterStore, StoreError};
use crate::service::catalog::{CatalogSnapshot, OperatorCatalog};

/// Closed hour buckets change only by refunds (which lower them), so a container caches them
/// briefly instead of reading 24 counters per request.
const CLOSED_HOURS_TTL_SECS: i64 = 300;

/// Upstream quotas: tokens per minute per provider model, shared by every tenant.
pub type UpstreamQuotas = HashMap<(ProviderKind, String), u64>;

pub struct Limiter {
    store: Arc<dyn LimiterStore>,
    /// Upstream quotas come from here, read on first use (see `service::catalog`).
    catalog: Arc<OperatorCatalog>,
    default_reserve: u32,
    closed_hours: Mutex<HashMap<CounterKey, (Counter, i64)>>,
}

fn tenant_key(tenant: &TenantId, window: Window, index: i64, shard: u8) -> CounterKey {
    // Shard 0 keeps the unsharded key, so changing a tenant's shard count keeps its history.
    if shard == 0 {
        CounterKey(format!("t#{tenant}#{}#{index}", window.tag))
    } else {
        CounterKey(format!("t#{tenant}#{}#{index}#s{shard}", window.tag))
    }
}

fn upstream_key(provider: ProviderKind, model: &str, index: i64) -> CounterKey {
    CounterKey(format!("u#{provider}#{model}#{}#{index}", MINUTE.tag))
}

/// Counted buckets of one window at one moment, oldest first; the last is the current bucket.
#[derive(Debug, Clone, Default)]
pub struct Buckets(Vec<(i64, Counter)>);

impl Buckets {
    /// Bucket-wise sum over shards (all have the same indices).
    fn sum(shards: &[Buckets]) -> Buckets {
        let mut total = shards.first().cloned().unwrap_or_default();
        for other in shards.iter().skip(1) {
            for ((_, t), (_, o)) in total.0.iter_mut().zip(&other.0) {
                t.tokens += o.tokens;
                t.requests += o.requests;
            }
        }
        total
    }

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
    shards: Shards,
    /// Per shard.
    minute: Vec<Buckets>,
    day: Vec<Buckets>,
    /// All shards summed.
    minute_total: Buckets,
    day_total: Buckets,
    upstream: HashMap<(ProviderKind, String), Buckets>,
    /// The catalog the quotas were taken from.
    catalog: Arc<CatalogSnapshot>,
}

impl Snapshot {
    /// Tokens counted in the daily window (for degradation).
    pub fn day_tokens(&self) -> u64 {
        self.day_total.tokens()
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

    /// Another call made under this reservation after the first was metered (a structured
    /// output retry). The first call's reconciliation settled the reservation, so everything
    /// this one uses is charged when it is metered, unconditionally: the request was admitted
    /// once and is counted once toward RPM.
    pub fn follow_up(&self) -> Self {
        Self {
            tokens: 0,
            status: self.status,
            keys: self.keys.clone(),
        }
    }
}

impl Limiter {
    /// A limiter with fixed upstream quotas (the embedded store, tests, benches).
    pub fn new(store: Arc<dyn LimiterStore>, quotas: UpstreamQuotas, default_reserve: u32) -> Self {
        let catalog = OperatorCatalog::fixed(Default::default(), quotas);
        Self::with_catalog(store, Arc::new(catalog), default_reserve)
    }

    /// A limiter whose upstream quotas come from the operator catalog.
    pub fn with_catalog(
        store: Arc<dyn LimiterStore>,
        catalog: Arc<OperatorCatalog>,
        default_reserve: u32,
    ) -> Self {
        Self {
            store,
            catalog,
            default_reserve,
            closed_hours: Mutex::new(HashMap::new()),
        }
    }

    /// The most the reply may use: the request's `max_tokens`, or the configured default. It
    /// is reserved, and sent upstream as the provider's cap.
    pub fn output_cap(&self, max_tokens: Option<u32>) -> u32 {
        max_tokens.unwrap_or(self.default_reserve)
    }

    /// Tokens to reserve: the prompt plus the most the reply may use.
    pub fn reservation_tokens(&self, prompt_tokens: u64, max_tokens: Option<u32>) -> u64 {
        prompt_tokens + u64::from(self.output_cap(max_tokens))
    }

    /// Reads every counted bucket for `tenant` and the upstream quotas of `models` (those that
    /// have one), in one round trip.
    pub async fn snapshot(
        &self,
        tenant: &TenantId,
        shards: Shards,
        models: &[(ProviderKind, &str)],
        now: i64,
    ) -> Result<Snapshot, StoreError> {
        let catalog = self.catalog.get().await?;
        let minute_idx: Vec<i64> = MINUTE.counted(now).collect();
        let day_idx: Vec<i64> = DAY.counted(now).collect();
        let current_hour = DAY.current(now);
        let shard_ids: Vec<u8> = (0..shards.count()).collect();

        let mut keys: Vec<CounterKey> = Vec::new();
        for &shard in &shard_ids {
            keys.extend(
                minute_idx
                    .iter()
                    .map(|&i| tenant_key(tenant, MINUTE, i, shard)),
            );
        }
        let mut cached_hours = HashMap::new();
        {
            let mut cache = self.closed_hours.lock().unwrap_or_else(|e| e.into_inner());
            cache.retain(|_, (_, fetched)| now - *fetched < CLOSED_HOURS_TTL_SECS);
            for &shard in &shard_ids {
                for &i in &day_idx {
                    let key = tenant_key(tenant, DAY, i, shard);
                    match cache.get(&key) {
                        Some((counter, _)) if i != current_hour => {
                            cached_hours.insert(key, *counter);
                        }
                        _ => keys.push(key),
                    }
                }
            }
        }
        let upstream: Vec<(ProviderKind, String)> = models
            .iter()
            .filter(|(p, m)| catalog.quotas.contains_key(&(*p, (*m).to_owned())))
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
        let value = |key: &CounterKey| {
            cached_hours
                .get(key)
                .or_else(|| read.get(key))
                .copied()
                .unwrap_or_default()
        };

        let window = |window: Window, indices: &[i64], shard: u8| {
            Buckets(
                indices
                    .iter()
                    .map(|&i| (i, value(&tenant_key(tenant, window, i, shard))))
                    .collect(),
            )
        };
        let minute: Vec<Buckets> = shard_ids
            .iter()
            .map(|&s| window(MINUTE, &minute_idx, s))
            .collect();
        let day: Vec<Buckets> = shard_ids
            .iter()
            .map(|&s| window(DAY, &day_idx, s))
            .collect();
        {
            let mut cache = self.closed_hours.lock().unwrap_or_else(|e| e.into_inner());
            for (shard, buckets) in day.iter().enumerate() {
                for (i, counter) in buckets.closed() {
                    let key = tenant_key(tenant, DAY, *i, shard as u8);
                    cache.entry(key).or_insert((*counter, now));
                }
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
            catalog,
            now,
            shards,
            minute_total: Buckets::sum(&minute),
            day_total: Buckets::sum(&day),
            minute,
            day,
            upstream,
        })
    }

    /// Admits `tokens` for `tenant` against its limits and the route's upstream quota with one
    /// atomic conditional write (on a sharded tenant, one more on a second shard before
    /// refusing). `Err(StoreError)` means the decision could not be made (the caller fails
    /// closed); `Ok(Err(GatewayError))` is a refusal.
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
        let n = snapshot.shards.count();
        let first = if n > 1 { rand::random_range(0..n) } else { 0 };
        let candidates: Vec<u8> = if n > 1 {
            vec![first, (first + 1) % n]
        } else {
            vec![0]
        };
        let mut refusal = None;
        for shard in candidates {
            match self
                .try_shard(tenant, limits, snapshot, tokens, route, shard)
                .await?
            {
                Ok(reservation) => return Ok(Ok(reservation)),
                Err(index) => {
                    refusal = Some(index);
                    // Only the tenant's own windows differ between shards.
                    if index > 1 {
                        break;
                    }
                }
            }
        }
        Ok(Err(self.refusal(
            tenant,
            limits,
            snapshot,
            tokens,
            route,
            refusal.unwrap_or(0),
        )))
    }

    /// One conditional write on `shard`; `Err(index)` names the add that did not fit.
    async fn try_shard(
        &self,
        tenant: &TenantId,
        limits: Limits,
        snapshot: &Snapshot,
        tokens: u64,
        route: (ProviderKind, &str),
        shard: u8,
    ) -> Result<Result<Reservation, usize>, StoreError> {
        let now = snapshot.now;
        let shards = snapshot.shards;
        let s = usize::from(shard);
        let (minute, day) = (&snapshot.minute[s], &snapshot.day[s]);
        let minute_idx = MINUTE.current(now);
        let hour_idx = DAY.current(now);
        let quota = snapshot
            .catalog
            .quotas
            .get(&(route.0, route.1.to_owned()))
            .copied();
        let upstream = quota.map(|q| {
            let buckets = snapshot
                .upstream
                .get(&(route.0, route.1.to_owned()))
                .cloned()
                .unwrap_or_default();
            (q, buckets)
        });

        let t = tokens as i64;
        let share = |limit: u64| shards.share(limit, shard) as i64;
        let minute_expiry = minute_idx * MINUTE.bucket_secs + MINUTE.retention_secs();
        let hour_expiry = hour_idx * DAY.bucket_secs + DAY.retention_secs();
        let mut adds = vec![
            CounterAdd {
                key: tenant_key(tenant, MINUTE, minute_idx, shard),
                tokens: t,
                requests: 1,
                max_tokens: Some(share(limits.tokens_per_minute) - minute.closed_tokens()),
                max_requests: Some(share(limits.requests_per_minute) - minute.closed_requests()),
                expires_at: minute_expiry,
            },
            CounterAdd {
                key: tenant_key(tenant, DAY, hour_idx, shard),
                tokens: t,
                requests: 1,
                max_tokens: Some(share(limits.tokens_per_day) - day.closed_tokens()),
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
            minute.current(),
            day.current(),
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
        Ok(match outcome {
            AddOutcome::Applied => Ok(Reservation {
                tokens,
                status: self.status(limits, snapshot, tokens),
                keys: adds.into_iter().map(|a| (a.key, a.expires_at)).collect(),
            }),
            AddOutcome::Refused { index } => Err(index),
        })
    }

    fn refusal(
        &self,
        tenant: &TenantId,
        limits: Limits,
        snapshot: &Snapshot,
        tokens: u64,
        route: (ProviderKind, &str),
        index: usize,
    ) -> GatewayError {
        let now = snapshot.now;
        let (minute, day) = (&snapshot.minute_total, &snapshot.day_total);
        let (kind, limit, series, window) = match index {
            0 => {
                if minute.requests() + 1 > limits.requests_per_minute {
                    (
                        LimitKind::RequestsPerMinute,
                        limits.requests_per_minute,
                        minute.request_series(),
                        MINUTE,
                    )
                } else {
                    (
                        LimitKind::TokensPerMinute,
                        limits.tokens_per_minute,
                        minute.token_series(),
                        MINUTE,
                    )
                }
            }
            1 => (
                LimitKind::TokensPerDay,
                limits.tokens_per_day,
                day.token_series(),
                DAY,
            ),
            _ => {
                let quota = snapshot
                    .catalog
                    .quotas
                    .get(&(route.0, route.1.to_owned()))
                    .copied()
                    .unwrap_or_default();
                let buckets = snapshot
                    .upstream
                    .get(&(route.0, route.1.to_owned()))
                    .cloned()
                    .unwrap_or_default();
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
        GatewayError::RateLimited {
            message,
            retry_after,
            rate: Box::new(self.status(limits, snapshot, 0)),
        }
    }

    fn status(&self, limits: Limits, snapshot: &Snapshot, reserved: u64) -> RateStatus {
        let now = snapshot.now;
        let minute = &snapshot.minute_total;
        let tokens = minute.tokens() + reserved;
        let requests = minute.requests() + u64::from(reserved > 0);
        let token_series = minute.token_series();
        let request_series = minute.request_series();
        RateStatus {
            limit_tokens: limits.tokens_per_minute,
            remaining_tokens: limits.tokens_per_minute.saturating_sub(tokens),
            reset_tokens: minute.reset(MINUTE, now, &token_series),
            limit_requests: limits.requests_per_minute,
            remaining_requests: limits.requests_per_minute.saturating_sub(requests),
            reset_requests: minute.reset(MINUTE, now, &request_series),
        }
    }
}
