//! Retrying provider calls: exponential backoff with full jitter, and the provider's own
//! `Retry-After` when it sends one.
//!
//! Adapters make exactly one attempt; the caller wraps them in a [`RetryPolicy`] so the number
//! of attempts is known (it is recorded on the usage event).

use std::future::Future;
use std::time::Duration;

use crate::ports::provider::{ProviderError, ProviderErrorKind};

/// How often and how long to retry a failed provider call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt; `0` means one attempt only.
    pub max_retries: u32,
    /// The backoff ceiling before the first retry; it doubles for each further retry.
    pub base_delay: Duration,
    /// No wait is longer than this. A provider asking for a longer wait (`Retry-After`) gets
    /// no retry at all: the error goes back to the client, who can wait without holding a
    /// Lambda open.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 2,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(8),
        }
    }
}

impl RetryPolicy {
    /// One attempt, no retries.
    pub const NEVER: Self = Self {
        max_retries: 0,
        base_delay: Duration::ZERO,
        max_delay: Duration::ZERO,
    };

    /// Runs `op` until it succeeds, fails with an error that is not retryable, or the retries
    /// are used up. Returns the last result and the number of attempts made (at least 1).
    pub async fn run<T, F, Fut>(&self, mut op: F) -> (Result<T, ProviderError>, u32)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, ProviderError>>,
    {
        let mut attempts = 0_u32;
        loop {
            attempts += 1;
            let err = match op().await {
                Ok(value) => return (Ok(value), attempts),
                Err(err) => err,
            };
            let retry = attempts - 1;
            if !err.is_retryable() || retry >= self.max_retries {
                return (Err(err), attempts);
            }
            let Some(delay) = self.delay_before_retry(retry, &err) else {
                return (Err(err), attempts);
            };
            tracing::warn!(
                provider = %err.provider,
                error = %err,
                attempt = attempts,
                delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                "provider call failed; retrying"
            );
            tokio::time::sleep(delay).await;
        }
    }

    /// How long to wait before retry number `retry` (0-based), or `None` to give up now.
    fn delay_before_retry(&self, retry: u32, err: &ProviderError) -> Option<Duration> {
        match err.kind {
            ProviderErrorKind::RateLimited {
                retry_after: Some(wait),
            } => (wait <= self.max_delay).then_some(wait),
            _ => Some(jitter(self.backoff_ceiling(retry))),
        }
    }

    /// The longest backoff before retry number `retry` (0-based): `base_delay * 2^retry`,
    /// capped at `max_delay`.
    pub fn backoff_ceiling(&self, retry: u32) -> Duration {
        let factor = 2_u32.checked_pow(retry).unwrap_or(u32::MAX);
        self.base_delay
            .checked_mul(factor)
            .map_or(self.max_delay, |d| d.min(self.max_delay))
    }
}

/// "Full jitter": a uniform wait in `[0, ceiling]`, so clients that failed together do not
/// retry together.
fn jitter(ceiling: Duration) -> Duration {
    let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(rand::random_range(0..=nanos))
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use tokio::time::Instant;

    use super::*;
    use crate::domain::tenant::ProviderKind;

    fn error(kind: ProviderErrorKind) -> ProviderError {
        ProviderError::new(ProviderKind::Openai, kind, "test")
    }

    /// An operation that fails with `failures` in order, then succeeds with the attempt number.
    fn scripted(
        failures: Vec<ProviderErrorKind>,
    ) -> impl FnMut() -> std::future::Ready<Result<u32, ProviderError>> {
        let calls = Cell::new(0_usize);
        move || {
            let n = calls.get();
            calls.set(n + 1);
            std::future::ready(match failures.get(n) {
                Some(kind) => Err(error(kind.clone())),
                None => Ok(u32::try_from(n).unwrap_or(u32::MAX) + 1),
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_first_success_is_one_attempt_with_no_wait() {
        let start = Instant::now();
        let (result, attempts) = RetryPolicy::default().run(scripted(vec![])).await;
        assert_eq!(result, Ok(1));
        assert_eq!(attempts, 1);
        assert_eq!(start.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn upstream_errors_and_timeouts_are_retried_with_bounded_backoff() {
        let policy = RetryPolicy::default();
        let start = Instant::now();
        let (result, attempts) = policy
            .run(scripted(vec![
                ProviderErrorKind::Upstream,
                ProviderErrorKind::Timeout,
            ]))
            .await;
        assert_eq!(result, Ok(3));
        assert_eq!(attempts, 3);
        assert!(start.elapsed() <= policy.backoff_ceiling(0) + policy.backoff_ceiling(1));
    }

    #[tokio::test(start_paused = true)]
    async fn retries_stop_after_max_retries_and_return_the_last_error() {
        let (result, attempts) = RetryPolicy::default()
            .run(scripted(vec![ProviderErrorKind::Upstream; 5]))
            .await;
        assert_eq!(result.map_err(|e| e.kind), Err(ProviderErrorKind::Upstream));
        assert_eq!(attempts, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn rejections_and_credential_errors_are_never_retried() {
        for kind in [ProviderErrorKind::Rejected, ProviderErrorKind::Credentials] {
            let start = Instant::now();
            let (result, attempts) = RetryPolicy::default()
                .run(scripted(vec![kind.clone()]))
                .await;
            assert_eq!(result.map_err(|e| e.kind), Err(kind));
            assert_eq!(attempts, 1);
            assert_eq!(start.elapsed(), Duration::ZERO);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_rate_limit_with_retry_after_waits_exactly_that_long() {
        let wait = Duration::from_secs(3);
        let start = Instant::now();
        let (result, attempts) = RetryPolicy::default()
            .run(scripted(vec![ProviderErrorKind::RateLimited {
                retry_after: Some(wait),
            }]))
            .await;
        assert_eq!(result, Ok(2));
        assert_eq!(attempts, 2);
        assert_eq!(start.elapsed(), wait);
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_after_beyond_max_delay_is_returned_at_once() {
        let kind = ProviderErrorKind::RateLimited {
            retry_after: Some(Duration::from_secs(30)),
        };
        let start = Instant::now();
        let (result, attempts) = RetryPolicy::default()
            .run(scripted(vec![kind.clone()]))
            .await;
        assert_eq!(result.map_err(|e| e.kind), Err(kind));
        assert_eq!(attempts, 1);
        assert_eq!(start.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_rate_limit_without_retry_after_backs_off() {
        let policy = RetryPolicy::default();
        let start = Instant::now();
        let (result, attempts) = policy
            .run(scripted(vec![ProviderErrorKind::RateLimited {
                retry_after: None,
            }]))
            .await;
        assert_eq!(result, Ok(2));
        assert_eq!(attempts, 2);
        assert!(start.elapsed() <= policy.backoff_ceiling(0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_policy_with_no_retries_makes_one_attempt() {
        let (result, attempts) = RetryPolicy::NEVER
            .run(scripted(vec![ProviderErrorKind::Upstream]))
            .await;
        assert!(result.is_err());
        assert_eq!(attempts, 1);
    }

    #[test]
    fn the_backoff_ceiling_doubles_and_is_capped_at_max_delay() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.backoff_ceiling(0), Duration::from_millis(200));
        assert_eq!(policy.backoff_ceiling(1), Duration::from_millis(400));
        assert_eq!(policy.backoff_ceiling(3), Duration::from_millis(1600));
        assert_eq!(policy.backoff_ceiling(6), Duration::from_secs(8));
        assert_eq!(policy.backoff_ceiling(40), Duration::from_secs(8));
        assert_eq!(policy.backoff_ceiling(u32::MAX), Duration::from_secs(8));
    }

    #[test]
    fn jittered_delays_stay_within_the_ceiling_and_vary() {
        let ceiling = Duration::from_millis(400);
        let samples: Vec<Duration> = (0..200).map(|_| jitter(ceiling)).collect();
        assert!(samples.iter().all(|d| *d <= ceiling));
        assert!(samples.iter().any(|d| *d != samples[0]));
        assert_eq!(jitter(Duration::ZERO), Duration::ZERO);
    }
}
