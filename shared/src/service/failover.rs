//! Failover across a route's targets (its own provider model, then its `fallbacks` in order)
//! and a circuit breaker per target.
//!
//! A call moves to the next target only on a failure the provider had not started answering:
//! a connect failure, a 429, a 5xx before any output ([`ProviderError::is_retryable`], the
//! same failures the retry policy retries, each target with its own retries first), or an open
//! circuit. Never after a reply started: a stream that fails midway fails, and a timeout after
//! the request was sent may be generating. A rejection or a credentials error is returned as
//! it is: another provider would not fix the request.
//!
//! The breaker is per container and per target (provider and model): it opens after
//! [`Breakers::threshold`] failures in a row, skips the target for [`Breakers::cooldown`],
//! then lets one call through (half-open): a success closes it, a failure opens it again. A
//! route without fallbacks never consults it (there is nowhere else to go). When every target
//! of a chain is open, the chain is tried in order anyway: the calls are the probes.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::adapters::retry::RetryPolicy;
use crate::domain::chat::Completion;
use crate::domain::pricing::ModelPrice;
use crate::domain::tenant::ProviderKind;
use crate::domain::tenant::{Route, Target};
use crate::ports::metrics::MetricsSink;
use crate::ports::provider::{
    EventStream, LlmProvider, ProviderError, ProviderErrorKind, ProviderRequest,
};

/// One target of a chain, ready to call: its route, price and provider.
#[derive(Clone)]
pub(crate) struct Leg {
    pub route: Route,
    pub price: ModelPrice,
    pub provider: Arc<dyn LlmProvider>,
    /// The tenant's Bedrock application inference profile for this target, if any.
    pub inference_profile: Option<String>,
}

/// A circuit's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    /// Calls go through.
    Closed,
    /// Calls skip the target until the cool-down ends.
    Open,
    /// The cool-down ended; one call is on its way to find out.
    HalfOpen,
}

#[derive(Debug, Default)]
struct Circuit {
    failures: u32,
    opened_at: Option<Instant>,
    /// When the half-open circuit's one call was let through; a probe older than the
    /// cool-down was abandoned (its request was dropped) and the next call may probe.
    probing: Option<Instant>,
}

/// Every target's circuit in this container (see the module docs). A list, searched in
/// order: a deployment has a few dozen targets at most, and a map keyed by target would be
/// more code in the invoke bootstrap than the search costs.
pub struct Breakers {
    circuits: Mutex<Vec<(Target, Circuit)>>,
    /// Where circuit changes are reported (EMF `CircuitOpen`); `None`: logs only.
    metrics: Option<Arc<dyn MetricsSink>>,
    /// Failures in a row that open a circuit.
    pub threshold: u32,
    /// How long an open circuit skips its target.
    pub cooldown: Duration,
}

impl Default for Breakers {
    fn default() -> Self {
        Self::new(5, Duration::from_secs(30))
    }
}

impl Breakers {
    /// Circuits that open after `threshold` failures in a row, for `cooldown`.
    pub fn new(threshold: u32, cooldown: Duration) -> Self {
        Self {
            circuits: Mutex::default(),
            metrics: None,
            threshold: threshold.max(1),
            cooldown,
        }
    }

    /// These breakers, reporting each circuit that opens or closes to `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<dyn MetricsSink>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    fn report(&self, target: &Target, open: bool) {
        if let Some(metrics) = &self.metrics {
            metrics.circuit(&target.to_string(), open);
        }
    }

    fn with<T>(&self, target: &Target, f: impl FnOnce(&mut Circuit) -> T) -> T {
        let mut all = self.circuits.lock().unwrap_or_else(|e| e.into_inner());
        let at = match all.iter().position(|(t, _)| t == target) {
            Some(at) => at,
            None => {
                all.push((target.clone(), Circuit::default()));
                all.len() - 1
            }
        };
        f(&mut all[at].1)
    }

    /// `target`'s state now.
    pub fn state(&self, target: &Target) -> CircuitState {
        let cooldown = self.cooldown;
        self.with(target, |c| match c.opened_at {
            None => CircuitState::Closed,
            Some(at) if at.elapsed() < cooldown => CircuitState::Open,
            Some(_) => CircuitState::HalfOpen,
        })
    }

    /// Whether a call may go to `target` now; a half-open circuit lets one through.
    pub fn admits(&self, target: &Target) -> bool {
        let cooldown = self.cooldown;
        self.with(target, |c| match c.opened_at {
            None => true,
            Some(at) if at.elapsed() < cooldown => false,
            Some(_) if c.probing.is_some_and(|at| at.elapsed() < cooldown) => false,
            Some(_) => {
                c.probing = Some(Instant::now());
                true
            }
        })
    }

    /// A call to `target` succeeded: its circuit closes.
    pub fn succeeded(&self, target: &Target) {
        let closed = self.with(target, |c| {
            let was_open = c.opened_at.is_some();
            *c = Circuit::default();
            was_open
        });
        if closed {
            tracing::info!(target = %target, circuit = "closed", "provider circuit closed");
            self.report(target, false);
        }
    }

    /// A call to `target` ended without a verdict on the provider's health (a rejection, a
    /// timeout after sending): a half-open circuit may probe again with the next call.
    pub fn settled(&self, target: &Target) {
        self.with(target, |c| c.probing = None);
    }

    /// A call to `target` failed before the provider started: one more failure in a row.
    /// Returns whether the circuit opened now.
    pub fn failed(&self, target: &Target) -> bool {
        let threshold = self.threshold;
        let opened = self.with(target, |c| {
            c.failures = c.failures.saturating_add(1);
            let open = c.probing.is_some() || (c.opened_at.is_none() && c.failures >= threshold);
            if open {
                c.opened_at = Some(Instant::now());
                c.probing = None;
            }
            open
        });
        if opened {
            tracing::warn!(target = %target, circuit = "open", cooldown_s = self.cooldown.as_secs(), "provider circuit opened");
            self.report(target, true);
        }
        opened
    }
}

/// Which call a chain makes. One function serves both (rather than a generic one per reply
/// type): the invoke bootstrap has little room, and each instance of the chain and of the
/// retry loop inside it is code in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ask {
    /// A buffered completion.
    Complete,
    /// A streamed completion.
    Stream,
}

/// What a provider answered, for the [`Ask`] made.
pub(crate) enum Answer {
    /// The buffered completion.
    Completion(Completion),
    /// The opened stream.
    Stream(EventStream),
}

impl Answer {
    /// The completion of an [`Ask::Complete`] call.
    pub(crate) fn completion(self) -> Result<Completion, ProviderError> {
        match self {
            Answer::Completion(completion) => Ok(completion),
            Answer::Stream(_) => Err(mismatch()),
        }
    }

    /// The stream of an [`Ask::Stream`] call.
    pub(crate) fn stream(self) -> Result<EventStream, ProviderError> {
        match self {
            Answer::Stream(events) => Ok(events),
            Answer::Completion(_) => Err(mismatch()),
        }
    }
}

fn mismatch() -> ProviderError {
    ProviderError::new(
        ProviderKind::Openai,
        ProviderErrorKind::Upstream,
        "internal: a provider answer of the other kind",
    )
}

async fn once(
    ask: Ask,
    provider: &dyn LlmProvider,
    request: &ProviderRequest,
) -> Result<Answer, ProviderError> {
    match ask {
        Ask::Complete => provider.complete(request).await.map(Answer::Completion),
        Ask::Stream => provider.stream(request).await.map(Answer::Stream),
    }
}

/// What a chain of calls came to.
pub(crate) struct Chained<T> {
    /// The last leg's result.
    pub result: Result<T, ProviderError>,
    /// Attempts over every leg.
    pub attempts: u32,
    /// The leg that answered (or failed last).
    pub leg: usize,
}

/// Calls `legs` in order (see the module docs): each with `retry`, the next on a failure the
/// provider had not started, skipping open circuits. One leg: `retry.run` alone. `legs` is
/// never empty (a route's own target is its first).
pub(crate) async fn call(
    retry: &RetryPolicy,
    breakers: &Breakers,
    legs: &[Leg],
    upstream: &ProviderRequest,
    pool_key: Option<u16>,
    ask: Ask,
) -> Chained<Answer> {
    // A route without fallbacks never consults the breaker: there is nowhere else to go.
    let chained = legs.len() > 1;
    let mut attempts = 0;
    let mut outcome = None;
    // The first pass skips open circuits, asking each target only when its turn comes (a
    // half-open circuit lets exactly the call it admits through). If it called none of them,
    // every circuit was open: the second pass calls them in order anyway, as probes.
    for honour_circuits in [true, false] {
        let mut called = false;
        for (i, leg) in legs.iter().enumerate() {
            let target = leg.route.target();
            if chained && honour_circuits && !breakers.admits(&target) {
                continue;
            }
            called = true;
            // The reserved key belongs to the route's own target: a fallback's provider
            // takes its keys in turn.
            let key = if i == 0 { pool_key } else { None };
            let retargeted;
            let request = if upstream.model == leg.route.model
                && upstream.inference_profile == leg.inference_profile
                && upstream.pool_key == key
            {
                upstream
            } else {
                let mut r = upstream.clone();
                r.model = leg.route.model.clone();
                r.inference_profile = leg.inference_profile.clone();
                r.pool_key = key;
                retargeted = r;
                &retargeted
            };
            let (result, tried) = retry
                .run(|| once(ask, leg.provider.as_ref(), request))
                .await;
            attempts += tried;
            match result {
                Ok(value) => {
                    if chained {
                        breakers.succeeded(&target);
                    }
                    return Chained {
                        result: Ok(value),
                        attempts,
                        leg: i,
                    };
                }
                Err(err) if err.is_retryable() => {
                    if chained {
                        breakers.failed(&target);
                        tracing::warn!(from = %target, error = %err, "provider failed before answering; failing over to the route's next target");
                    }
                    outcome = Some((err, i));
                }
                Err(err) => {
                    // The provider answered (a rejection) or may be answering (a timeout
                    // after sending): nothing to fail over for, and no verdict on its health.
                    if chained {
                        breakers.settled(&target);
                    }
                    return Chained {
                        result: Err(err),
                        attempts,
                        leg: i,
                    };
                }
            }
        }
        if called {
            break;
        }
    }
    let (err, leg) = outcome.unwrap_or_else(|| {
        let provider = legs
            .first()
            .map_or(ProviderKind::Openai, |l| l.route.provider);
        let err = ProviderError::new(
            provider,
            ProviderErrorKind::Upstream,
            "the route has no target",
        );
        (err, 0)
    });
    Chained {
        result: Err(err),
        attempts,
        leg,
    }
}
