//! Several API keys for one provider: `OPENAI_API_KEY=sk-a,sk-b` (or the same in the provider
//! secret's field). Calls take the keys in turn; a key the provider answers 429 is rested for
//! the provider's `retry-after` (10 s when it gives none, at most a minute) and the call moves
//! to the next awake key at once, so a rate limit on one key is not a failed call while another
//! has room. A key the provider refuses (401/403) rests for [`MAX_REST`] the same way, so one
//! revoked key of a pool does not fail one call in n. Each key is tried at most once per call;
//! when every key left is resting, the call goes to the one that wakes first.
//!
//! State is per container (each Lambda container spreads and rests its own calls), and a
//! key's position is its identity: rotating the secret to a list of another length starts the
//! rests over.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// How long a key rests after a 429 without `retry-after`.
pub const DEFAULT_REST: Duration = Duration::from_secs(10);
/// The longest rest: a provider asking for more gets this (its next 429 rests the key again).
pub const MAX_REST: Duration = Duration::from_secs(60);

/// The keys of a configured value, in order: split on commas, blanks dropped.
pub fn keys(raw: &str) -> impl Iterator<Item = &str> {
    raw.split(',').map(str::trim).filter(|k| !k.is_empty())
}

/// Which key goes next, and which are resting (see the module docs).
#[derive(Debug, Default)]
pub struct KeyPool {
    cursor: AtomicUsize,
    /// Per key position: resting until then.
    rested: Mutex<Vec<Option<Instant>>>,
}

impl KeyPool {
    /// The key to use out of `n`, other than those `tried` by this call: the next in turn
    /// that is awake, else the one that wakes first.
    pub fn pick(&self, n: usize, tried: &[usize]) -> usize {
        if n <= 1 {
            return 0;
        }
        let start = self.cursor.fetch_add(1, Ordering::Relaxed) % n;
        let now = Instant::now();
        let mut rested = self.rested.lock().unwrap_or_else(|e| e.into_inner());
        rested.resize(n, None);
        let order = (0..n)
            .map(|step| (start + step) % n)
            .filter(|i| !tried.contains(i));
        if let Some(awake) = order
            .clone()
            .find(|&i| rested[i].is_none_or(|until| until <= now))
        {
            return awake;
        }
        order.min_by_key(|&i| rested[i]).unwrap_or(start)
    }

    /// Rests key `index` of `n` for the provider's `retry_after` (see the module docs).
    pub fn rest(&self, index: usize, n: usize, retry_after: Option<Duration>) {
        let wait = retry_after.unwrap_or(DEFAULT_REST).min(MAX_REST);
        let mut rested = self.rested.lock().unwrap_or_else(|e| e.into_inner());
        rested.resize(n, None);
        if let Some(slot) = rested.get_mut(index) {
            *slot = Some(Instant::now() + wait);
        }
    }

    /// Whether any of the `n` keys not `tried` by this call is awake.
    pub fn any_awake(&self, n: usize, tried: &[usize]) -> bool {
        let now = Instant::now();
        let rested = self.rested.lock().unwrap_or_else(|e| e.into_inner());
        (0..n).filter(|i| !tried.contains(i)).any(|i| {
            rested
                .get(i)
                .copied()
                .flatten()
                .is_none_or(|until| until <= now)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_lists_its_keys_in_order_without_blanks() {
        assert_eq!(keys(" sk-a , sk-b,,").collect::<Vec<_>>(), ["sk-a", "sk-b"]);
        assert_eq!(keys("sk-only").count(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn keys_take_turns_and_a_rested_one_is_skipped_until_it_wakes() {
        let pool = KeyPool::default();
        let turns: Vec<usize> = (0..4).map(|_| pool.pick(2, &[])).collect();
        assert_eq!(turns, [0, 1, 0, 1]);
        pool.rest(0, 2, Some(Duration::from_secs(5)));
        assert_eq!(
            (0..3).map(|_| pool.pick(2, &[])).collect::<Vec<_>>(),
            [1, 1, 1]
        );
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(
            (0..2).map(|_| pool.pick(2, &[])).any(|k| k == 0),
            "awake again"
        );
        // A key this call already tried is not handed back, awake or not.
        assert_eq!(
            (0..4).map(|_| pool.pick(3, &[0, 2])).collect::<Vec<_>>(),
            [1; 4]
        );
        assert!(!pool.any_awake(2, &[0, 1]));
    }

    #[tokio::test(start_paused = true)]
    async fn when_every_key_rests_the_first_to_wake_is_used_and_rests_are_capped() {
        let pool = KeyPool::default();
        pool.rest(0, 2, Some(Duration::from_secs(600)));
        pool.rest(1, 2, None);
        assert!(!pool.any_awake(2, &[]));
        assert_eq!(pool.pick(2, &[]), 1, "10 s beats the 60 s cap");
        tokio::time::advance(MAX_REST).await;
        assert!(pool.any_awake(2, &[]));
    }
}
