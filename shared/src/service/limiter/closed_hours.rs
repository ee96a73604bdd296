//! The closed hour buckets of the daily window a container has read, per tenant and shard.
//!
//! A closed hour changes only by refunds (which lower it), so a snapshot takes it from here for
//! [`CLOSED_HOURS_TTL_SECS`] after it was read instead of reading 24 counters per request. The
//! current hour is never cached. Entries are found by tenant, not by counter key, so a cached
//! hour costs no key to build or hash.

use rustc_hash::FxHashMap;

use crate::domain::ids::TenantId;
use crate::ports::store::Counter;

/// How long a closed hour read from the store is used before it is read again.
pub(super) const CLOSED_HOURS_TTL_SECS: i64 = 300;

/// One cached hour: its index, its counter, and when it was read.
#[derive(Debug, Clone, Copy)]
struct Hour {
    index: i64,
    counter: Counter,
    read_at: i64,
}

impl Hour {
    fn fresh(&self, now: i64) -> bool {
        now - self.read_at < CLOSED_HOURS_TTL_SECS
    }
}

/// See the module docs.
#[derive(Debug, Default)]
pub(super) struct ClosedHours {
    /// Per tenant, per shard.
    tenants: FxHashMap<TenantId, Vec<Vec<Hour>>>,
    /// When every tenant's stale hours were last dropped.
    swept: i64,
}

impl ClosedHours {
    /// For each of `shards` shards, the counter of each hour in `counted` (the window's counted
    /// hours, the current one last) if a fresh one is cached; `None` means "read it". The
    /// current hour is always `None`.
    pub(super) fn cached(
        &mut self,
        tenant: &TenantId,
        shards: u8,
        counted: &[i64],
        now: i64,
    ) -> Vec<Vec<Option<Counter>>> {
        self.sweep(now);
        let mut cached = self.tenants.get_mut(tenant);
        (0..usize::from(shards))
            .map(|shard| {
                let hours = cached.as_deref_mut().and_then(|s| s.get_mut(shard));
                let hours: &[Hour] = match hours {
                    Some(hours) => {
                        hours.retain(|h| h.fresh(now));
                        hours
                    }
                    None => &[],
                };
                let closed = counted.len().saturating_sub(1);
                counted
                    .iter()
                    .enumerate()
                    .map(|(at, &index)| {
                        (at < closed)
                            .then(|| hours.iter().find(|h| h.index == index))
                            .flatten()
                            .map(|h| h.counter)
                    })
                    .collect()
            })
            .collect()
    }

    /// Caches the closed hours of `day` (per shard, oldest first, the current hour last) that
    /// are not cached yet, as read at `now`.
    pub(super) fn remember<'a>(
        &mut self,
        tenant: &TenantId,
        day: impl ExactSizeIterator<Item = &'a [(i64, Counter)]>,
        now: i64,
    ) {
        let shards = self.tenants.entry(tenant.clone()).or_default();
        if shards.len() < day.len() {
            shards.resize_with(day.len(), Vec::new);
        }
        for (hours, buckets) in shards.iter_mut().zip(day) {
            let closed = buckets.split_last().map_or(&[][..], |(_, rest)| rest);
            for &(index, counter) in closed {
                if !hours.iter().any(|h| h.index == index) {
                    hours.push(Hour {
                        index,
                        counter,
                        read_at: now,
                    });
                }
            }
        }
    }

    /// Drops everything cached for `tenant`.
    pub(super) fn forget(&mut self, tenant: &TenantId) {
        self.tenants.remove(tenant);
    }

    /// Drops stale hours of every tenant, at most once per TTL: a tenant that stopped sending
    /// leaves nothing behind for longer than that.
    fn sweep(&mut self, now: i64) {
        if (now - self.swept).abs() < CLOSED_HOURS_TTL_SECS {
            return;
        }
        self.swept = now;
        self.tenants.retain(|_, shards| {
            for hours in shards.iter_mut() {
                hours.retain(|h| h.fresh(now));
            }
            shards.iter().any(|hours| !hours.is_empty())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(name: &str) -> TenantId {
        TenantId::parse(name).unwrap()
    }

    fn counter(tokens: i64) -> Counter {
        Counter {
            tokens,
            requests: 1,
        }
    }

    #[test]
    fn closed_hours_are_served_until_their_ttl_and_the_current_hour_never() {
        let mut cache = ClosedHours::default();
        let acme = tenant("acme");
        let t0 = 1_000_000;
        assert_eq!(cache.cached(&acme, 1, &[10, 11, 12], t0), [vec![None; 3]]);
        let day = [(10, counter(5)), (11, counter(7)), (12, counter(9))];
        cache.remember(&acme, [&day[..]].into_iter(), t0);

        let hit = vec![Some(counter(5)), Some(counter(7)), None];
        assert_eq!(
            cache.cached(&acme, 1, &[10, 11, 12], t0 + 1),
            std::slice::from_ref(&hit)
        );
        assert_eq!(
            cache.cached(&acme, 1, &[10, 11, 12], t0 + CLOSED_HOURS_TTL_SECS - 1),
            [hit]
        );
        assert_eq!(
            cache.cached(&acme, 1, &[10, 11, 12], t0 + CLOSED_HOURS_TTL_SECS),
            [vec![None; 3]]
        );
    }

    #[test]
    fn hours_are_kept_per_tenant_and_shard_and_forgotten_per_tenant() {
        let mut cache = ClosedHours::default();
        let (acme, globex) = (tenant("acme"), tenant("globex"));
        let t0 = 1_000_000;
        let shard0 = [(10, counter(1)), (11, counter(2))];
        let shard1 = [(10, counter(3)), (11, counter(4))];
        cache.remember(&acme, [&shard0[..], &shard1[..]].into_iter(), t0);
        assert_eq!(
            cache.cached(&acme, 2, &[10, 11], t0),
            [vec![Some(counter(1)), None], vec![Some(counter(3)), None]]
        );
        assert_eq!(
            cache.cached(&globex, 2, &[10, 11], t0),
            [vec![None; 2], vec![None; 2]]
        );
        // An hour that rolls from current to closed is read once, then cached too.
        let rolled = [(10, counter(1)), (11, counter(2)), (12, counter(0))];
        cache.remember(&acme, [&rolled[..]].into_iter(), t0 + 10);
        assert_eq!(
            cache.cached(&acme, 1, &[10, 11, 12], t0 + 10),
            [vec![Some(counter(1)), Some(counter(2)), None]]
        );
        cache.forget(&acme);
        assert_eq!(cache.cached(&acme, 1, &[10, 11], t0 + 10), [vec![None; 2]]);
    }

    #[test]
    fn a_sweep_drops_tenants_whose_hours_went_stale() {
        let mut cache = ClosedHours::default();
        let t0 = 1_000_000;
        for name in ["a", "b", "c"] {
            cache.remember(
                &tenant(name),
                [&[(1, counter(1)), (2, counter(1))][..]].into_iter(),
                t0,
            );
        }
        cache.cached(&tenant("a"), 1, &[1, 2], t0 + CLOSED_HOURS_TTL_SECS);
        assert!(cache.tenants.is_empty(), "{:?}", cache.tenants);
    }
}
