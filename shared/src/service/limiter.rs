//! The token limiter: sliding windows over bucket counters (the scheme and its error bound are
//! in `domain::limits`), decided by one atomic conditional write.
//!
//! Per request, before the provider call: one read of every counted bucket (`snapshot`, one
//! round trip) and one conditional increment of the current buckets (`reserve`, one round trip,
//! all-or-nothing across the tenant's minute and day windows and the upstream quotas: the
//! model's, and when the provider's keys have their own, the key the call is pinned to,
//! [`Reservation::pool_key`]). After the
//! call, `Reservation::reconcile` yields the adjustments that travel with the usage event in the
//! same atomic write, so a reservation is reconciled exactly once.
//!
//! Accounting choices: a request that reaches admission counts toward requests per minute
//! whatever happens next (as OpenAI counts it); provider calls that are not chat calls
//! (ingest's embeddings: a batch of 100 documents is one client request, not 100) reserve
//! tokens only ([`Limiter::reserve_tokens`]). A request's tokens are reserved as prompt +
//! `max_tokens` (or the configured default, which is then sent upstream as the reply's cap)
//! and reconciled to the provider's usage: refunded in full when the provider refused the call
//! before generating (providers bill nothing for 429, 5xx or rejections), kept in full when
//! the call may have generated unreported tokens (a timeout after sending: metered as the
//! reservation itself), charged extra when the reply used more than reserved. Response-cache
//! hits never reach the limiter: they cost no provider tokens.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rust_decimal::Decimal;

use crate::domain::budget::{Budget, Period, UserLimits, cap_nanos, nanos_ceil, usd_of_nanos};
use crate::domain::budget_event::BudgetEventKind;
use crate::domain::ids::TenantId;
use crate::domain::limits::UpstreamQuotas;
use crate::domain::limits::{DAY, LimitKind, Limits, MINUTE, RateStatus, Shards, Window};
use crate::domain::profile::UserId;
use crate::domain::tenant::ProviderKind;
use crate::domain::tenant::TenantConfig;
use crate::error::GatewayError;
use crate::ports::store::{
    AddOutcome, BudgetEventRecorder, Counter, CounterAdd, CounterGuard, CounterKey, LimiterStore,
    StoreError,
};
use crate::service::catalog::{CatalogSnapshot, OperatorCatalog};

mod closed_hours;
mod signals;

use closed_hours::ClosedHours;
use signals::{Reading, Signals};

/// Admits tokens and requests against a tenant's limits and the upstream quotas, and keeps
/// their counters (see the module docs). Shared by every request of the service that holds it.
pub struct Limiter {
    store: Arc<dyn LimiterStore>,
    /// Upstream quotas come from here, read on first use (see `service::catalog`).
    catalog: Arc<OperatorCatalog>,
    default_reserve: u32,
    closed_hours: Mutex<ClosedHours>,
    /// Where budget events are recorded; `None`: nowhere (tests, benches).
    signals: Option<Signals>,
}

/// `t#{tenant}#{tag}#{index}`, and `#s{shard}` after it for shards other than 0 (shard 0 keeps
/// the unsharded key, so changing a tenant's shard count keeps its history). Built by hand:
/// a snapshot makes about thirty of these per request, and `format!` was a measurable share
/// of the hot path.
fn tenant_key(tenant: &TenantId, window: Window, index: i64, shard: u8) -> CounterKey {
    let tenant = tenant.as_str();
    let mut key = String::with_capacity(tenant.len() + window.tag.len() + 28);
    key.push_str("t#");
    key.push_str(tenant);
    key.push('#');
    key.push_str(window.tag);
    key.push('#');
    push_decimal(&mut key, index);
    if shard != 0 {
        key.push_str("#s");
        push_decimal(&mut key, i64::from(shard));
    }
    CounterKey(key)
}

/// Appends `n` in decimal, as `Display` would.
fn push_decimal(out: &mut String, n: i64) {
    if n < 0 {
        out.push('-');
    }
    let mut digits = [0u8; 20];
    let mut rest = n.unsigned_abs();
    let mut at = digits.len();
    loop {
        at -= 1;
        // `rest % 10` is below 10: the cast cannot truncate.
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    for &d in &digits[at..] {
        out.push(char::from(d));
    }
}

/// `u#{provider}#{model}#m#{index}` for the model's quota across the provider's keys, and
/// `#k{key}` after it for one key's own: the fixed-format parts end the key, so no model's
/// counter is another's (a model id may contain `#`).
fn upstream_key(counter: &UpstreamCounter, index: i64) -> CounterKey {
    let (provider, model, key) = counter;
    match key {
        None => CounterKey(format!("u#{provider}#{model}#{}#{index}", MINUTE.tag)),
        Some(key) => CounterKey(format!(
            "u#{provider}#{model}#{}#{index}#k{key}",
            MINUTE.tag
        )),
    }
}

/// The tenant's spend in one budget period, in nano-USD: `t#{tenant}#usd#{d|M}#{index}`.
fn budget_key(tenant: &TenantId, period: Period, now: i64) -> CounterKey {
    CounterKey(format!(
        "t#{tenant}#usd#{}#{}",
        period.tag(),
        period.index(now)
    ))
}

/// An end user's counters put the user id last, after fixed-format parts (a user id has no
/// `#`), so no user's key is another key: minute buckets `t#{tenant}#m#{index}#u#{user}`,
/// the UTC day's tokens `t#{tenant}#ud#{day}#u#{user}` and spend `t#{tenant}#usd#d#{day}#u#{user}`.
fn user_minute_key(tenant: &TenantId, user: &UserId, index: i64) -> CounterKey {
    CounterKey(format!("t#{tenant}#{}#{index}#u#{user}", MINUTE.tag))
}

fn user_day_key(tenant: &TenantId, user: &UserId, now: i64) -> CounterKey {
    CounterKey(format!("t#{tenant}#ud#{}#u#{user}", Period::Day.index(now)))
}

fn user_budget_key(tenant: &TenantId, user: &UserId, now: i64) -> CounterKey {
    CounterKey(format!(
        "t#{tenant}#usd#{}#{}#u#{user}",
        Period::Day.tag(),
        Period::Day.index(now)
    ))
}

/// The counter holding the spend, in nano-USD, of `tenant` (or of its end user `user`, whose
/// budget is daily) in the `period` containing `now`: what a budget reset reports as the
/// period's final spend.
pub fn spend_counter(
    tenant: &TenantId,
    user: Option<&UserId>,
    period: Period,
    now: i64,
) -> CounterKey {
    match user {
        Some(user) => user_budget_key(tenant, user, now),
        None => budget_key(tenant, period, now),
    }
}

/// Who a reservation is for, and every limit on them: the tenant's token windows (on its
/// counter shards), its dollar budgets, and the end user's limits when any apply.
#[derive(Debug, Clone)]
pub struct Scope {
    /// The tenant.
    pub tenant: TenantId,
    /// The tenant's counter shards.
    pub shards: Shards,
    /// The tenant's token and request limits.
    pub limits: Limits,
    /// The tenant's dollar budgets.
    pub budget: Budget,
    /// The end user and the limits on them; `None` for a request without a user or a user
    /// nothing limits (the tenant's limits alone apply then, at no extra cost).
    pub user: Option<(UserId, UserLimits)>,
}

impl Scope {
    /// The scope of a request by `tenant` on behalf of `user`, from its configuration.
    pub fn of(tenant: &TenantId, config: &TenantConfig, user: Option<&UserId>) -> Self {
        let user = user
            .map(|id| (id.clone(), config.end_users.limits_for(id)))
            .filter(|(_, limits)| limits.limits_anything());
        Self {
            tenant: tenant.clone(),
            shards: config.limits.shards(),
            limits: config.effective_limits(),
            budget: config.budget(),
            user,
        }
    }

    /// Token and request limits only: no budget, no end user (tests, benches).
    pub fn tokens_only(tenant: &TenantId, shards: Shards, limits: Limits) -> Self {
        Self {
            tenant: tenant.clone(),
            shards,
            limits,
            budget: Budget::NONE,
            user: None,
        }
    }
}

/// The most one call may consume: what is reserved before it and reconciled after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Demand {
    /// Tokens: the prompt as counted and the reply's cap.
    pub tokens: u64,
    /// USD at the route's prices for those tokens, prompt tokens at the dearest prompt price
    /// (no cache discount is assumed, and a cache write can cost more than input).
    pub cost: Decimal,
}

impl Demand {
    /// `tokens` with no cost (token limits only).
    pub fn tokens(tokens: u64) -> Self {
        Self {
            tokens,
            cost: Decimal::ZERO,
        }
    }

    /// The worst case of a call that sends `prompt` tokens and may write `output` tokens at
    /// `price`.
    pub fn worst_case(
        price: &crate::domain::pricing::ModelPrice,
        prompt: u64,
        output: u64,
    ) -> Self {
        Self {
            tokens: prompt + output,
            cost: price.worst_case(prompt, output),
        }
    }
}

/// What a call actually consumed, for reconciliation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Spent {
    /// Tokens, as the provider reported them (or as estimated).
    pub tokens: u64,
    /// The exact cost the usage event records.
    pub cost: Decimal,
}

/// Where a snapshot takes one counter from.
#[derive(Debug, Clone, Copy)]
enum Slot {
    /// A closed hour this container cached.
    Known(Counter),
    /// The counter at this position of [`Reads::keys`].
    Read(usize),
}

/// One upstream quota's counter: a provider model, across its keys (`None`) or for one key.
type UpstreamCounter = (ProviderKind, String, Option<u16>);

/// The counters a snapshot reads, in one round trip.
#[derive(Default)]
struct Reads {
    keys: Vec<CounterKey>,
}

impl Reads {
    fn read(&mut self, key: CounterKey) -> Slot {
        self.keys.push(key);
        Slot::Read(self.keys.len() - 1)
    }
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

    /// The newest closed bucket: the one a reservation stamped just before the boundary may
    /// still be writing to.
    fn last_closed(&self) -> Option<(i64, Counter)> {
        self.closed().last().copied()
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

    /// Tokens counted in the window, every bucket's (a negative counter counts as none).
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
    upstream: HashMap<UpstreamCounter, Buckets>,
    /// The bucket after the current one, per shard and per upstream model: empty unless a
    /// reservation stamped after the boundary already wrote there.
    next_minute: Vec<Counter>,
    next_day: Vec<Counter>,
    next_upstream: HashMap<UpstreamCounter, Counter>,
    /// The catalog the quotas were taken from.
    catalog: Arc<CatalogSnapshot>,
    /// The tenant's spend in each period it has a budget for, in nano-USD.
    spent: Vec<(Period, i64)>,
    /// The end user's counters, when a limit applies to them.
    user: Option<UserCounters>,
}

/// An end user's counters as a snapshot read them.
#[derive(Debug, Clone, Default)]
struct UserCounters {
    /// The user's minute window (read when they have a tokens-per-minute limit).
    minute: Buckets,
    /// The minute bucket after the current one.
    next_minute: Counter,
    /// Tokens of the UTC day so far.
    day_tokens: i64,
    /// Spend of the UTC day so far, in nano-USD.
    day_nanos: i64,
}

impl Snapshot {
    /// Tokens counted in the daily window (for degradation).
    pub fn day_tokens(&self) -> u64 {
        self.day_total.tokens()
    }

    /// The tenant's spend in `period` as read, in nano-USD; `None` when it has no budget for
    /// that period (its spend is then not counted here; the usage API reports it).
    pub fn spent_nanos(&self, period: Period) -> Option<i64> {
        self.spent
            .iter()
            .find_map(|(p, nanos)| (*p == period).then_some(*nanos))
    }

    /// Whether the tenant's spend has reached the soft threshold of one of its budgets.
    pub fn past_budget_alert(&self, budget: &Budget) -> bool {
        self.spent
            .iter()
            .any(|(period, nanos)| budget.past_alert(*period, *nanos))
    }
}

/// An admitted request's reservation.
#[derive(Debug, Clone)]
pub struct Reservation {
    /// Tokens reserved, counted once in each window it was admitted against;
    /// [`Reservation::reconcile`] settles them to the actual usage.
    pub tokens: u64,
    /// Nano-USD reserved on each budget counter it was admitted against.
    nanos: i64,
    /// The tenant's minute window as of admission, this reservation included: what the
    /// `x-ratelimit-*` headers report.
    pub status: RateStatus,
    /// Where the tokens and dollars went: one part per counter.
    parts: Vec<Part>,
    /// The provider key (its position in the pool) this reservation holds a key quota on:
    /// the call must go out on that key and no other. `None` when the route's model has no
    /// key quotas (the pool then takes turns).
    pub pool_key: Option<u16>,
}

/// Which limit a part of a reservation is held against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Held {
    /// The tenant's minute window (its shards).
    Minute,
    /// The tenant's day window (its shards).
    Day,
    /// The route's upstream quota.
    Upstream,
    /// The upstream quota of the provider key the call is pinned to.
    UpstreamKey,
    /// The tenant's dollar budget for a period.
    Budget(Period),
    /// The end user's minute window.
    UserMinute,
    /// The end user's tokens of the UTC day.
    UserDay,
    /// The end user's dollars of the UTC day.
    UserBudget,
}

impl Held {
    /// Whether the counters hold nano-USD (else tokens).
    fn in_nanos(self) -> bool {
        matches!(self, Held::Budget(_) | Held::UserBudget)
    }
}

/// What one reservation put on one counter, in the unit of what it is held against.
#[derive(Debug, Clone)]
struct Part {
    held: Held,
    key: CounterKey,
    amount: i64,
    expires_at: i64,
}

impl Reservation {
    /// The USD reserved against the budgets (zero when none applies).
    pub fn reserved_usd(&self) -> Decimal {
        usd_of_nanos(self.nanos)
    }

    /// The limits this reservation holds parts of, each once, in the order admitted.
    fn held(&self) -> Vec<Held> {
        let mut held: Vec<Held> = Vec::new();
        for part in &self.parts {
            if !held.contains(&part.held) {
                held.push(part.held);
            }
        }
        held
    }

    /// The unconditional adjustments that turn the reservation into what the call spent, per
    /// limit held: an overrun is charged to the limit's first counter; a refund comes off its
    /// counters from the last, never more than each one was given. Tokens settle to
    /// `spent.tokens`; budgets to `spent.cost` rounded up to the nano-dollar.
    pub fn reconcile(&self, spent: Spent) -> Vec<CounterAdd> {
        let token_delta = clamp_i64(spent.tokens) - clamp_i64(self.tokens);
        let nano_delta = nanos_ceil(spent.cost).max(0) - self.nanos;
        let adjust = |part: &Part, amount: i64| CounterAdd {
            key: part.key.clone(),
            tokens: amount,
            requests: 0,
            max_tokens: None,
            max_requests: None,
            expires_at: part.expires_at,
        };
        let mut out = Vec::new();
        for held in self.held() {
            let delta = if held.in_nanos() {
                nano_delta
            } else {
                token_delta
            };
            if delta == 0 {
                continue;
            }
            let parts: Vec<&Part> = self.parts.iter().filter(|p| p.held == held).collect();
            let Some(first) = parts.first() else {
                continue;
            };
            if delta > 0 {
                out.push(adjust(first, delta));
                continue;
            }
            let mut refund = -delta;
            for part in parts.iter().rev() {
                let take = refund.min(part.amount.max(0));
                if take > 0 {
                    out.push(adjust(part, -take));
                    refund -= take;
                }
            }
            if refund > 0 {
                out.push(adjust(first, -refund));
            }
        }
        out
    }

    /// Splits `demand` off this reservation into one of its own, taken from each limit's
    /// counters from the last, as a refund would be: a grounded request's query embedding is
    /// admitted with the chat call and reconciled on its own usage event.
    pub fn carve(&mut self, demand: Demand) -> Reservation {
        let tokens = clamp_i64(demand.tokens.min(self.tokens));
        let nanos = nanos_ceil(demand.cost).clamp(0, self.nanos.max(0));
        let mut parts = Vec::new();
        for held in self.held() {
            let mut left = if held.in_nanos() { nanos } else { tokens };
            for part in self.parts.iter_mut().rev().filter(|p| p.held == held) {
                let take = left.min(part.amount.max(0));
                if take > 0 {
                    part.amount -= take;
                    left -= take;
                    parts.push(Part {
                        amount: take,
                        ..part.clone()
                    });
                }
            }
        }
        self.tokens -= tokens.unsigned_abs();
        self.nanos -= nanos;
        Reservation {
            tokens: tokens.unsigned_abs(),
            nanos,
            status: self.status,
            parts,
            pool_key: self.pool_key,
        }
    }
}

/// How many times a reservation is decided again on a fresh read when a neighbouring bucket
/// changed under it, before the limiter gives up (and the request fails closed).
pub const STALE_ATTEMPTS: usize = 3;

/// Whether a reservation counts a request toward requests per minute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Counts {
    /// A chat call: limited by requests per minute too.
    Request,
    /// Tokens only: no counter's request count moves, and requests per minute never refuse.
    TokensOnly,
}

/// What one reservation asks for.
#[derive(Debug, Clone, Copy)]
struct Ask {
    tokens: u64,
    /// The demand's cost in nano-USD, rounded up.
    nanos: i64,
    counts: Counts,
}

/// The tenant limit `tokens` exceed on their own (tokens per minute first, then per day),
/// whatever the counters hold: such a reservation can never be admitted, so it is refused as
/// too large (400), not rate limited (429).
pub fn oversized(limits: Limits, tokens: u64) -> Option<(u64, LimitKind)> {
    if tokens > limits.tokens_per_minute {
        Some((limits.tokens_per_minute, LimitKind::TokensPerMinute))
    } else if tokens > limits.tokens_per_day {
        Some((limits.tokens_per_day, LimitKind::TokensPerDay))
    } else {
        None
    }
}

/// A demand no state of the counters could admit: a limit it exceeds on its own, whatever
/// was used before. Refused as too large (400), not rate limited (429): waiting cannot help.
fn beyond_any_limit(scope: &Scope, demand: Demand) -> Option<String> {
    if let Some((limit, kind)) = oversized(scope.limits, demand.tokens) {
        return Some(format!("the limit of {limit} {}", kind.describe()));
    }
    let nanos = nanos_ceil(demand.cost);
    for period in Period::ALL {
        if let Some(cap) = scope.budget.cap(period)
            && nanos > cap_nanos(cap)
        {
            return Some(format!(
                "the tenant's {} budget of {cap} USD (it may cost up to {} USD)",
                period.adjective(),
                usd_of_nanos(nanos)
            ));
        }
    }
    let (user, limits) = scope.user.as_ref()?;
    let tokens = [
        (limits.tokens_per_minute, "tokens per minute"),
        (limits.tokens_per_day, "tokens per day"),
    ];
    if let Some((limit, what)) = tokens
        .into_iter()
        .find_map(|(l, what)| l.filter(|l| demand.tokens > *l).map(|l| (l, what)))
    {
        return Some(format!("end user `{user}`'s limit of {limit} {what}"));
    }
    limits
        .daily_usd()
        .filter(|cap| nanos > cap_nanos(*cap))
        .map(|cap| {
            format!(
                "end user `{user}`'s daily budget of {cap} USD (it may cost up to {} USD)",
                usd_of_nanos(nanos)
            )
        })
}

/// The outcome of one reservation write.
enum Attempt {
    Reserved(Reservation),
    /// This limit did not fit.
    Refused(Held),
    Stale,
}

/// A counter amount as DynamoDB and the stores hold it. Limits are bounded far below this at
/// configuration; the clamp keeps an out-of-range value from wrapping negative.
fn clamp_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// What one shard of one window can still take, from the snapshot.
struct ShardRoom {
    /// The add's cap: the share less the closed buckets and the next bucket.
    cap_tokens: i64,
    cap_requests: i64,
    /// The cap less the current bucket: what fits now.
    tokens: i64,
    requests: i64,
}

impl ShardRoom {
    fn new(buckets: &Buckets, next: Counter, share: i64, request_share: Option<i64>) -> Self {
        let current = buckets.current();
        let cap_tokens = share - buckets.closed_tokens() - next.tokens.max(0);
        let cap_requests = request_share.map_or(i64::MAX, |rpm| {
            rpm - buckets.closed_requests() - next.requests.max(0)
        });
        Self {
            cap_tokens,
            cap_requests,
            tokens: cap_tokens - current.tokens,
            requests: cap_requests.saturating_sub(current.requests),
        }
    }

    fn fits_a_request(&self) -> bool {
        self.requests >= 1
    }
}

/// Spreads `tokens` over the rooms, starting at `from` and walking on: `(room, amount)` pairs,
/// `from` always first. `None` when all the rooms together cannot take them.
fn spread(rooms: &[ShardRoom], from: usize, tokens: i64) -> Option<Vec<(usize, i64)>> {
    let mut left = tokens;
    let mut takes = Vec::new();
    for step in 0..rooms.len() {
        let i = (from + step) % rooms.len();
        let take = left.min(rooms[i].tokens.max(0));
        if take > 0 || step == 0 {
            takes.push((i, take));
        }
        left -= take;
        if left == 0 {
            return Some(takes);
        }
    }
    None
}

/// One reservation's write: the adds (with the limit each is held against) and the guards.
#[derive(Default)]
struct Plan {
    adds: Vec<CounterAdd>,
    held: Vec<Held>,
    guards: Vec<CounterGuard>,
}

impl Plan {
    fn add(&mut self, held: Held, add: CounterAdd) {
        self.adds.push(add);
        self.held.push(held);
    }

    /// An add of `amount` to a period counter (a budget, a user's day) whose value must stay
    /// at most `cap`: the store's condition decides it, so no guard is needed.
    fn add_capped(&mut self, held: Held, key: CounterKey, amount: i64, cap: i64, expires_at: i64) {
        self.add(
            held,
            CounterAdd {
                key,
                tokens: amount,
                requests: 0,
                max_tokens: Some(cap),
                max_requests: None,
                expires_at,
            },
        );
    }

    /// The bucket before the current one must not have grown since the snapshot.
    fn guard(&mut self, buckets: &Buckets, key: impl Fn(i64) -> CounterKey) {
        if let Some((index, seen)) = buckets.last_closed() {
            self.guards.push(CounterGuard {
                key: key(index),
                max_tokens: seen.tokens,
                max_requests: seen.requests,
            });
        }
    }

    /// The bucket after the current one must still be as the snapshot saw it (usually empty).
    fn guard_next(&mut self, key: CounterKey, seen: Counter) {
        self.guards.push(CounterGuard {
            key,
            max_tokens: seen.tokens,
            max_requests: seen.requests,
        });
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
            closed_hours: Mutex::default(),
            signals: None,
        }
    }

    /// This limiter, recording budget events in `store` (`domain::budget_event`): `threshold`
    /// on the first admitted request whose snapshot is past a budget's soft threshold (the
    /// request degradation starts from), `exhausted` on the first refusal by a hard cap.
    pub fn with_budget_events(mut self, store: Arc<dyn BudgetEventRecorder>) -> Self {
        self.signals = Some(Signals::new(store));
        self
    }

    /// The most the reply may use: the request's `max_tokens`, or the configured default. It
    /// is reserved, and sent upstream as the provider's cap.
    pub fn output_cap(&self, max_tokens: Option<u32>) -> u32 {
        max_tokens.unwrap_or(self.default_reserve)
    }

    /// Reads every counted bucket of `scope` (the tenant's windows, its budget periods, the end
    /// user's counters) and the upstream quotas of `models` (those that have one), in one
    /// round trip.
    pub async fn snapshot(
        &self,
        scope: &Scope,
        models: &[(ProviderKind, &str)],
        now: i64,
    ) -> Result<Snapshot, StoreError> {
        let (tenant, shards) = (&scope.tenant, scope.shards);
        let catalog = self.catalog.get().await?;
        let minute_idx: Vec<i64> = MINUTE.counted(now).collect();
        let day_idx: Vec<i64> = DAY.counted(now).collect();
        let next_minute = MINUTE.current(now) + 1;
        let next_hour = DAY.current(now) + 1;
        let shard_ids = 0..shards.count();
        let cached = self
            .closed_hours
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .cached(tenant, shards.count(), &day_idx, now);

        // Every counter the snapshot needs, each key built once: cached closed hours are known,
        // the rest is read in one round trip.
        let mut reads = Reads::default();
        let minute: Vec<Vec<(i64, Slot)>> = shard_ids
            .clone()
            .map(|shard| {
                let key = |i| tenant_key(tenant, MINUTE, i, shard);
                minute_idx
                    .iter()
                    .map(|&i| (i, reads.read(key(i))))
                    .collect()
            })
            .collect();
        let day: Vec<Vec<(i64, Slot)>> = shard_ids
            .clone()
            .zip(&cached)
            .map(|(shard, cached)| {
                let key = |i| tenant_key(tenant, DAY, i, shard);
                day_idx
                    .iter()
                    .zip(cached)
                    .map(|(&i, hit)| (i, hit.map_or_else(|| reads.read(key(i)), Slot::Known)))
                    .collect()
            })
            .collect();
        let upstream: Vec<(UpstreamCounter, Vec<(i64, Slot)>)> = models
            .iter()
            .map(|&(provider, model)| (provider, model.to_owned()))
            .flat_map(|model| {
                let whole = catalog.quotas.model(&model).map(|_| None);
                let keys = catalog.quotas.keys(&model).map(|(key, _)| Some(key));
                let (provider, name) = model;
                whole
                    .into_iter()
                    .chain(keys.collect::<Vec<_>>())
                    .map(move |key| (provider, name.clone(), key))
            })
            .map(|counter| {
                let slots = minute_idx
                    .iter()
                    .map(|&i| (i, reads.read(upstream_key(&counter, i))))
                    .collect();
                (counter, slots)
            })
            .collect();
        // The bucket after the current one, for every window the reservation may write.
        let next_minute_slots: Vec<Slot> = shard_ids
            .clone()
            .map(|shard| reads.read(tenant_key(tenant, MINUTE, next_minute, shard)))
            .collect();
        let next_day_slots: Vec<Slot> = shard_ids
            .map(|shard| reads.read(tenant_key(tenant, DAY, next_hour, shard)))
            .collect();
        let next_upstream_slots: Vec<Slot> = upstream
            .iter()
            .map(|(counter, _)| reads.read(upstream_key(counter, next_minute)))
            .collect();
        // The budget periods the tenant has a budget for, and the end user's counters.
        let spent_slots: Vec<(Period, Slot)> = Period::ALL
            .into_iter()
            .filter(|p| scope.budget.cap(*p).is_some())
            .map(|p| (p, reads.read(budget_key(tenant, p, now))))
            .collect();
        let user_slots = scope.user.as_ref().map(|(user, limits)| {
            let minute: Vec<(i64, Slot)> = match limits.tokens_per_minute {
                Some(_) => minute_idx
                    .iter()
                    .map(|&i| (i, reads.read(user_minute_key(tenant, user, i))))
                    .collect(),
                None => Vec::new(),
            };
            let next = limits
                .tokens_per_minute
                .map(|_| reads.read(user_minute_key(tenant, user, next_minute)));
            let day = limits
                .tokens_per_day
                .map(|_| reads.read(user_day_key(tenant, user, now)));
            let spend = limits
                .daily_usd()
                .map(|_| reads.read(user_budget_key(tenant, user, now)));
            (minute, next, day, spend)
        });

        let values = self.store.read_counters(&reads.keys).await?;
        let value = |slot: &Slot| match *slot {
            Slot::Known(counter) => counter,
            Slot::Read(at) => values.get(at).copied().unwrap_or_default(),
        };
        let buckets =
            |slots: &[(i64, Slot)]| Buckets(slots.iter().map(|(i, s)| (*i, value(s))).collect());
        let minute: Vec<Buckets> = minute.iter().map(|s| buckets(s)).collect();
        let day: Vec<Buckets> = day.iter().map(|s| buckets(s)).collect();
        self.closed_hours
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remember(tenant, day.iter().map(|b| b.0.as_slice()), now);
        let next_upstream = upstream
            .iter()
            .zip(&next_upstream_slots)
            .map(|((counter, _), slot)| (counter.clone(), value(slot)))
            .collect();
        let upstream = upstream
            .into_iter()
            .map(|(counter, slots)| (counter, buckets(&slots)))
            .collect();
        let read = |slot: Option<Slot>| slot.map(|s| value(&s)).unwrap_or_default();
        let user = user_slots.map(|(minute, next, day, spend)| UserCounters {
            minute: buckets(&minute),
            next_minute: read(next),
            day_tokens: read(day).tokens,
            day_nanos: read(spend).tokens,
        });
        Ok(Snapshot {
            next_minute: next_minute_slots.iter().map(value).collect(),
            next_day: next_day_slots.iter().map(value).collect(),
            next_upstream,
            catalog,
            now,
            shards,
            minute_total: Buckets::sum(&minute),
            day_total: Buckets::sum(&day),
            minute,
            day,
            upstream,
            spent: spent_slots
                .into_iter()
                .map(|(p, slot)| (p, value(&slot).tokens))
                .collect(),
            user,
        })
    }

    /// Admits `demand` for `scope` against every limit on it (the tenant's windows and
    /// budgets, the end user's limits) and the route's upstream quota with one atomic
    /// conditional write. `Err(StoreError)` means the decision could not be made (the caller
    /// fails closed); `Ok(Err(GatewayError))` is a refusal.
    ///
    /// The write is conditioned on the buckets next to the current one not having grown since
    /// the snapshot (see [`Limiter::attempt`]); when one has, the limiter reads again and
    /// decides again, up to [`STALE_ATTEMPTS`] times.
    pub async fn reserve(
        &self,
        scope: &Scope,
        snapshot: &Snapshot,
        demand: Demand,
        route: (ProviderKind, &str),
    ) -> Result<Result<Reservation, GatewayError>, StoreError> {
        if let Some(limit) = beyond_any_limit(scope, demand) {
            return Ok(Err(GatewayError::RequestTooLarge {
                message: format!(
                    "this request needs {} tokens (prompt plus max_tokens), more than {limit}; lower max_tokens or shorten the prompt",
                    demand.tokens
                ),
                param: "max_tokens",
            }));
        }
        let ask = Ask {
            tokens: demand.tokens,
            nanos: nanos_ceil(demand.cost).max(0),
            counts: Counts::Request,
        };
        self.admit(scope, snapshot, ask, route).await
    }

    /// [`Limiter::reserve`] without counting a request: the tokens are held against the
    /// tenant's tokens per minute and per day and the upstream quota, and no counter's request
    /// count moves, so requests per minute never refuse it. For provider calls made on behalf
    /// of a client request that is counted (or not limited) as a request elsewhere: ingest's
    /// embeddings, where one request of 100 documents must not use up 100 requests. Budgets
    /// and end-user limits apply as for any call.
    ///
    /// Callers phrase their own "too large" refusal first (see [`oversized`]); this one says
    /// only what the call needed.
    pub async fn reserve_tokens(
        &self,
        scope: &Scope,
        snapshot: &Snapshot,
        demand: Demand,
        route: (ProviderKind, &str),
    ) -> Result<Result<Reservation, GatewayError>, StoreError> {
        if let Some(limit) = beyond_any_limit(scope, demand) {
            return Ok(Err(GatewayError::RequestTooLarge {
                message: format!(
                    "this call needs {} tokens, more than {limit}",
                    demand.tokens
                ),
                param: "input",
            }));
        }
        let ask = Ask {
            tokens: demand.tokens,
            nanos: nanos_ceil(demand.cost).max(0),
            counts: Counts::TokensOnly,
        };
        self.admit(scope, snapshot, ask, route).await
    }

    async fn admit(
        &self,
        scope: &Scope,
        snapshot: &Snapshot,
        ask: Ask,
        route: (ProviderKind, &str),
    ) -> Result<Result<Reservation, GatewayError>, StoreError> {
        let n = snapshot.shards.count();
        let start = if n > 1 { rand::random_range(0..n) } else { 0 };
        let mut fresh;
        let mut snapshot = snapshot;
        for _ in 0..STALE_ATTEMPTS {
            match self.attempt(scope, snapshot, ask, route, start).await? {
                Attempt::Reserved(reservation) => {
                    self.signal_thresholds(scope, snapshot).await;
                    return Ok(Ok(reservation));
                }
                Attempt::Refused(held) => {
                    self.signal_exhausted(scope, snapshot, held).await;
                    return Ok(Err(self.refusal(scope, snapshot, ask, route, held)));
                }
                Attempt::Stale => {
                    // A neighbouring bucket grew under us (a reservation stamped in the bucket
                    // before or after this one): read everything again, uncached.
                    self.forget_closed_hours(&scope.tenant);
                    fresh = self.snapshot(scope, &[route], snapshot.now).await?;
                    snapshot = &fresh;
                }
            }
        }
        Err(StoreError::Unavailable(format!(
            "limiter counters kept changing across {STALE_ATTEMPTS} reservation attempts"
        )))
    }

    /// Records a `threshold` event for every budget of `scope` the snapshot found past its
    /// soft threshold (once per container and period: see `signals`).
    async fn signal_thresholds(&self, scope: &Scope, snapshot: &Snapshot) {
        let Some(signals) = &self.signals else {
            return;
        };
        for &(period, spent) in &snapshot.spent {
            if let Some(budget) = scope.budget.cap(period)
                && scope.budget.past_alert(period, spent)
            {
                let reading = Reading {
                    user: false,
                    period,
                    spent_nanos: spent,
                    budget,
                };
                signals
                    .note(scope, BudgetEventKind::Threshold, reading, snapshot.now)
                    .await;
            }
        }
        let user_cap = scope.user.as_ref().and_then(|(_, l)| l.daily_usd());
        if let (Some(cap), Some(counted)) = (user_cap, &snapshot.user) {
            let user_budget = Budget {
                daily_usd: Some(cap),
                ..scope.budget
            };
            if user_budget.past_alert(Period::Day, counted.day_nanos) {
                let reading = Reading {
                    user: true,
                    period: Period::Day,
                    spent_nanos: counted.day_nanos,
                    budget: cap,
                };
                signals
                    .note(scope, BudgetEventKind::Threshold, reading, snapshot.now)
                    .await;
            }
        }
    }

    /// Records an `exhausted` event when `held` is a budget (once per container and period).
    async fn signal_exhausted(&self, scope: &Scope, snapshot: &Snapshot, held: Held) {
        let Some(signals) = &self.signals else {
            return;
        };
        let reading = match held {
            Held::Budget(period) => Reading {
                user: false,
                period,
                spent_nanos: snapshot.spent_nanos(period).unwrap_or_default(),
                budget: scope.budget.cap(period).unwrap_or_default(),
            },
            Held::UserBudget => Reading {
                user: true,
                period: Period::Day,
                spent_nanos: snapshot.user.as_ref().map_or(0, |u| u.day_nanos),
                budget: scope
                    .user
                    .as_ref()
                    .and_then(|(_, l)| l.daily_usd())
                    .unwrap_or_default(),
            },
            _ => return,
        };
        signals
            .note(scope, BudgetEventKind::Exhausted, reading, snapshot.now)
            .await;
    }

    /// Gives a reservation back whole: the request it was made for ended before any provider
    /// call (it still counts toward requests per minute). A failure is logged: the tokens then
    /// stay counted until their buckets leave the window, which errs toward refusing.
    pub async fn release(&self, reservation: &Reservation) {
        let refund = reservation.reconcile(Spent::default());
        if let Err(err) = self.store.add_counters(&refund).await {
            tracing::warn!(error = %err, tokens = reservation.tokens, "limiter reservation not released");
        }
    }

    /// Drops this container's cached closed hours of `tenant`.
    fn forget_closed_hours(&self, tenant: &TenantId) {
        self.closed_hours
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .forget(tenant);
    }

    /// One conditional write deciding the request.
    ///
    /// Each window's tokens go on the shards that have room, walking from `start` (one shard
    /// unless the request is larger than what one shard has left), and the request is counted
    /// on the first shard with room for one more. Every add is capped at its shard's share of
    /// the limit less what the snapshot counted in the window's closed buckets *and in the next
    /// bucket*; and the write holds only if the bucket before the current one and the bucket
    /// after it are still as the snapshot saw them ([`CounterGuard`]s). Those two are the only
    /// buckets another reservation can write to unseen: one stamped just before the boundary
    /// whose write lands after it, or one stamped just after the boundary whose write lands
    /// first. With both guarded, two reservations on either side of a boundary cannot both be
    /// admitted on views that leave each other out.
    ///
    /// Budgets and an end user's day are single counters per period, capped by the store's
    /// condition on their value after the add: no snapshot is involved in deciding them, so
    /// they need no guard. The end user's minute window is one more sliding window, unsharded,
    /// guarded as the tenant's are.
    async fn attempt(
        &self,
        scope: &Scope,
        snapshot: &Snapshot,
        Ask {
            tokens,
            nanos,
            counts,
        }: Ask,
        route: (ProviderKind, &str),
        start: u8,
    ) -> Result<Attempt, StoreError> {
        let (tenant, limits) = (&scope.tenant, scope.limits);
        let now = snapshot.now;
        let shards = snapshot.shards;
        let order: Vec<u8> = (0..shards.count())
            .map(|i| (start + i) % shards.count())
            .collect();
        let share = |limit: u64, shard: u8| clamp_i64(shards.share(limit, shard));
        let t = clamp_i64(tokens);
        let mut plan = Plan::default();

        // The tenant's minute window: tokens and the request.
        let minute_idx = MINUTE.current(now);
        let minute_expiry = minute_idx * MINUTE.bucket_secs + MINUTE.retention_secs();
        let rooms: Vec<ShardRoom> = order
            .iter()
            .map(|&shard| {
                let s = usize::from(shard);
                ShardRoom::new(
                    &snapshot.minute[s],
                    snapshot.next_minute[s],
                    share(limits.tokens_per_minute, shard),
                    Some(share(limits.requests_per_minute, shard)),
                )
            })
            .collect();
        // A tokens-only reservation starts at the first shard in order and counts no request.
        let request_at = match counts {
            Counts::Request => match rooms.iter().position(ShardRoom::fits_a_request) {
                Some(at) => at,
                None => return Ok(Attempt::Refused(Held::Minute)),
            },
            Counts::TokensOnly => 0,
        };
        let request = i64::from(counts == Counts::Request);
        let Some(takes) = spread(&rooms, request_at, t) else {
            return Ok(Attempt::Refused(Held::Minute));
        };
        for (i, take) in takes {
            let shard = order[i];
            let room = &rooms[i];
            let counted = counts == Counts::Request && i == request_at;
            plan.add(
                Held::Minute,
                CounterAdd {
                    key: tenant_key(tenant, MINUTE, minute_idx, shard),
                    tokens: take,
                    requests: i64::from(counted),
                    max_tokens: (take > 0).then_some(room.cap_tokens),
                    max_requests: counted.then_some(room.cap_requests),
                    expires_at: minute_expiry,
                },
            );
            plan.guard(&snapshot.minute[usize::from(shard)], |i| {
                tenant_key(tenant, MINUTE, i, shard)
            });
            plan.guard_next(
                tenant_key(tenant, MINUTE, minute_idx + 1, shard),
                snapshot.next_minute[usize::from(shard)],
            );
        }

        // The tenant's day window: tokens only (requests are counted, not limited, per day).
        let hour_idx = DAY.current(now);
        let hour_expiry = hour_idx * DAY.bucket_secs + DAY.retention_secs();
        let rooms: Vec<ShardRoom> = order
            .iter()
            .map(|&shard| {
                let s = usize::from(shard);
                ShardRoom::new(
                    &snapshot.day[s],
                    snapshot.next_day[s],
                    share(limits.tokens_per_day, shard),
                    None,
                )
            })
            .collect();
        let Some(takes) = spread(&rooms, request_at, t) else {
            return Ok(Attempt::Refused(Held::Day));
        };
        for (n, (i, take)) in takes.into_iter().enumerate() {
            let shard = order[i];
            plan.add(
                Held::Day,
                CounterAdd {
                    key: tenant_key(tenant, DAY, hour_idx, shard),
                    tokens: take,
                    requests: if n == 0 { request } else { 0 },
                    max_tokens: (take > 0).then_some(rooms[i].cap_tokens),
                    max_requests: None,
                    expires_at: hour_expiry,
                },
            );
            plan.guard(&snapshot.day[usize::from(shard)], |i| {
                tenant_key(tenant, DAY, i, shard)
            });
            plan.guard_next(
                tenant_key(tenant, DAY, hour_idx + 1, shard),
                snapshot.next_day[usize::from(shard)],
            );
        }

        // The upstream quotas of the route's model, shared by every tenant (not sharded):
        // across the provider's keys, and the pinned key's own.
        let model = (route.0, route.1.to_owned());
        let upstream_room = |key: Option<u16>, quota: u64| {
            let counter = (route.0, route.1.to_owned(), key);
            let buckets = snapshot.upstream.get(&counter).cloned().unwrap_or_default();
            let next = snapshot
                .next_upstream
                .get(&counter)
                .copied()
                .unwrap_or_default();
            let room = ShardRoom::new(&buckets, next, clamp_i64(quota), None);
            (counter, buckets, next, room)
        };
        let mut pinned = Vec::new();
        if let Some(quota) = snapshot.catalog.quotas.model(&model) {
            pinned.push((Held::Upstream, upstream_room(None, quota)));
        }
        let mut keys: Vec<_> = snapshot
            .catalog
            .quotas
            .keys(&model)
            .map(|(key, quota)| upstream_room(Some(key), quota))
            .collect();
        let pool_key = if keys.is_empty() {
            None
        } else {
            // The key with the most room; among equals, a random one, so that idle keys
            // share the traffic instead of the first taking it all.
            let from = rand::random_range(0..keys.len());
            let Some(best) = (0..keys.len())
                .map(|i| (from + i) % keys.len())
                .filter(|&i| keys[i].3.tokens >= t)
                .reduce(|best, i| {
                    if keys[i].3.tokens > keys[best].3.tokens {
                        i
                    } else {
                        best
                    }
                })
            else {
                return Ok(Attempt::Refused(Held::UpstreamKey));
            };
            let chosen = keys.swap_remove(best);
            let key = chosen.0.2;
            pinned.push((Held::UpstreamKey, chosen));
            key
        };
        for (held, (counter, buckets, next, room)) in pinned {
            if room.tokens < t {
                return Ok(Attempt::Refused(held));
            }
            plan.add(
                held,
                CounterAdd {
                    key: upstream_key(&counter, minute_idx),
                    tokens: t,
                    requests: request,
                    max_tokens: Some(room.cap_tokens),
                    max_requests: None,
                    expires_at: minute_expiry,
                },
            );
            plan.guard(&buckets, |i| upstream_key(&counter, i));
            plan.guard_next(upstream_key(&counter, minute_idx + 1), next);
        }

        // The tenant's dollar budgets: the worst-case cost against each period's spend.
        for period in Period::ALL {
            if let Some(cap) = scope.budget.cap(period) {
                plan.add_capped(
                    Held::Budget(period),
                    budget_key(tenant, period, now),
                    nanos,
                    cap_nanos(cap),
                    period.expires_at(now),
                );
            }
        }

        // The end user's limits, in the same write.
        if let (Some((user, user_limits)), Some(counted)) = (&scope.user, &snapshot.user) {
            if let Some(tpm) = user_limits.tokens_per_minute {
                let room =
                    ShardRoom::new(&counted.minute, counted.next_minute, clamp_i64(tpm), None);
                if room.tokens < t {
                    return Ok(Attempt::Refused(Held::UserMinute));
                }
                plan.add(
                    Held::UserMinute,
                    CounterAdd {
                        key: user_minute_key(tenant, user, minute_idx),
                        tokens: t,
                        requests: request,
                        max_tokens: Some(room.cap_tokens),
                        max_requests: None,
                        expires_at: minute_expiry,
                    },
                );
                plan.guard(&counted.minute, |i| user_minute_key(tenant, user, i));
                plan.guard_next(
                    user_minute_key(tenant, user, minute_idx + 1),
                    counted.next_minute,
                );
            }
            if let Some(tpd) = user_limits.tokens_per_day {
                plan.add_capped(
                    Held::UserDay,
                    user_day_key(tenant, user, now),
                    t,
                    clamp_i64(tpd),
                    Period::Day.expires_at(now),
                );
            }
            if let Some(cap) = user_limits.daily_usd() {
                plan.add_capped(
                    Held::UserBudget,
                    user_budget_key(tenant, user, now),
                    nanos,
                    cap_nanos(cap),
                    Period::Day.expires_at(now),
                );
            }
        }

        Ok(
            match self
                .store
                .add_counters_guarded(&plan.adds, &plan.guards)
                .await?
            {
                AddOutcome::Applied => Attempt::Reserved(Reservation {
                    tokens,
                    nanos,
                    status: self.status(limits, snapshot, tokens, counts),
                    parts: plan
                        .adds
                        .into_iter()
                        .zip(plan.held)
                        .map(|(add, held)| Part {
                            held,
                            key: add.key,
                            amount: add.tokens,
                            expires_at: add.expires_at,
                        })
                        .collect(),
                    pool_key,
                }),
                AddOutcome::Refused { index } => {
                    Attempt::Refused(plan.held.get(index).copied().unwrap_or(Held::Minute))
                }
                AddOutcome::Stale => Attempt::Stale,
            },
        )
    }

    fn refusal(
        &self,
        scope: &Scope,
        snapshot: &Snapshot,
        Ask {
            tokens,
            nanos,
            counts,
        }: Ask,
        route: (ProviderKind, &str),
        held: Held,
    ) -> GatewayError {
        let (tenant, limits) = (&scope.tenant, scope.limits);
        let now = snapshot.now;
        let (minute, day) = (&snapshot.minute_total, &snapshot.day_total);
        let user = scope.user.as_ref();
        let user_name = user.map_or_else(String::new, |(id, _)| id.to_string());
        let user_counted = snapshot.user.clone().unwrap_or_default();
        let until_midnight = Duration::from_secs((Period::Day.ends_at(now) - now).max(1) as u64);
        let budget_spent = |period: Period, cap: Option<Decimal>, spent: i64, whose: String| {
            let cap = cap.unwrap_or_default();
            let resets = period.ends_at(now);
            let resets_at = chrono::DateTime::<chrono::Utc>::from_timestamp(resets, 0)
                .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
                .unwrap_or_default();
            GatewayError::BudgetExceeded {
                message: format!(
                    "the {} budget of {whose} cannot cover this request: {} of {cap} USD used in {} (UTC), and this request may cost up to {} USD (a lower max_tokens may fit). It resets at {resets_at}",
                    period.adjective(),
                    usd_of_nanos(spent.max(0)),
                    period.label(now),
                    usd_of_nanos(nanos)
                ),
                retry_after: Duration::from_secs((period.ends_at(now) - now).max(1) as u64),
            }
        };
        let (kind, limit, series, window) = match held {
            Held::Budget(period) => {
                return budget_spent(
                    period,
                    scope.budget.cap(period),
                    snapshot.spent_nanos(period).unwrap_or_default(),
                    format!("tenant `{tenant}`"),
                );
            }
            Held::UserBudget => {
                return budget_spent(
                    Period::Day,
                    user.and_then(|(_, l)| l.daily_usd()),
                    user_counted.day_nanos,
                    format!("end user `{user_name}` (tenant `{tenant}`)"),
                );
            }
            Held::UserDay => {
                let limit = user.and_then(|(_, l)| l.tokens_per_day).unwrap_or_default();
                return GatewayError::RateLimited {
                    message: format!(
                        "rate limit reached for end user `{user_name}` on tenant `{tenant}`: tokens per day (UTC) limit {limit}, used {}, requested {tokens}. Try again in {}s",
                        user_counted.day_tokens.max(0),
                        until_midnight.as_secs()
                    ),
                    retry_after: until_midnight,
                    rate: Box::new(self.status(limits, snapshot, 0, counts)),
                };
            }
            Held::UserMinute => (
                LimitKind::TokensPerMinute,
                user.and_then(|(_, l)| l.tokens_per_minute)
                    .unwrap_or_default(),
                user_counted.minute.token_series(),
                MINUTE,
            ),
            Held::Minute => {
                if counts == Counts::Request && minute.requests() + 1 > limits.requests_per_minute {
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
            Held::Day => (
                LimitKind::TokensPerDay,
                limits.tokens_per_day,
                day.token_series(),
                DAY,
            ),
            Held::Upstream => {
                let model = (route.0, route.1.to_owned());
                let quota = snapshot.catalog.quotas.model(&model).unwrap_or_default();
                let counter = (route.0, route.1.to_owned(), None);
                let buckets = snapshot.upstream.get(&counter).cloned().unwrap_or_default();
                (
                    LimitKind::UpstreamTokensPerMinute,
                    quota,
                    buckets.token_series(),
                    MINUTE,
                )
            }
            Held::UpstreamKey => {
                return self.keys_exhausted(scope, snapshot, tokens, counts, route);
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
        let message = match (kind, held) {
            (LimitKind::UpstreamTokensPerMinute, _) => format!(
                "the upstream quota for `{}` ({limit} {}) is exhausted for now; this is not your own limit. Try again in {}s",
                route.1,
                kind.describe(),
                retry_after.as_secs()
            ),
            (_, Held::UserMinute) => format!(
                "rate limit reached for end user `{user_name}` on tenant `{tenant}`: {} limit {limit}, used {used}, requested {needed}. Try again in {}s",
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
            rate: Box::new(self.status(limits, snapshot, 0, counts)),
        }
    }

    /// Every key of the route's model with a quota is too full for `tokens`: the client
    /// may retry when the first of them has room.
    fn keys_exhausted(
        &self,
        scope: &Scope,
        snapshot: &Snapshot,
        tokens: u64,
        counts: Counts,
        route: (ProviderKind, &str),
    ) -> GatewayError {
        let model = (route.0, route.1.to_owned());
        let (quotas, retry_after) = snapshot.catalog.quotas.keys(&model).fold(
            (0_u64, None::<Duration>),
            |(sum, soonest), (key, quota)| {
                let counter = (route.0, route.1.to_owned(), Some(key));
                let series = snapshot
                    .upstream
                    .get(&counter)
                    .map(Buckets::token_series)
                    .unwrap_or_default();
                let wait = MINUTE
                    .time_until_fits(snapshot.now, &series, tokens, quota)
                    .unwrap_or(Duration::from_secs(MINUTE.bucket_secs as u64));
                (sum + quota, Some(soonest.map_or(wait, |s| s.min(wait))))
            },
        );
        let retry_after = retry_after
            .unwrap_or(Duration::from_secs(MINUTE.bucket_secs as u64))
            .max(Duration::from_secs(1));
        GatewayError::RateLimited {
            message: format!(
                "the upstream quota of every {} key for `{}` ({quotas} tokens per minute across the keys, shared by all tenants) is exhausted for now; this is not your own limit. Try again in {}s",
                route.0,
                route.1,
                retry_after.as_secs()
            ),
            retry_after,
            rate: Box::new(self.status(scope.limits, snapshot, 0, counts)),
        }
    }

    fn status(
        &self,
        limits: Limits,
        snapshot: &Snapshot,
        reserved: u64,
        counts: Counts,
    ) -> RateStatus {
        let now = snapshot.now;
        let minute = &snapshot.minute_total;
        let tokens = minute.tokens() + reserved;
        let requests = minute.requests() + u64::from(reserved > 0 && counts == Counts::Request);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_keys_are_spelled_as_format_spells_them() {
        let tenant = TenantId::parse("acme").expect("valid id");
        for (index, shard) in [(0, 0), (7, 0), (178_123_456, 3), (-42, 15), (i64::MIN, 0)] {
            let expected = if shard == 0 {
                format!("t#acme#{}#{index}", MINUTE.tag)
            } else {
                format!("t#acme#{}#{index}#s{shard}", MINUTE.tag)
            };
            assert_eq!(tenant_key(&tenant, MINUTE, index, shard).0, expected);
        }
    }
}
