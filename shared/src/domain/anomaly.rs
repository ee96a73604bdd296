//! Anomaly rules: when an hour of a tenant's spend is a cost spike, and when a day's answer
//! quality dropped. Pure functions over hourly rollups; `service::anomaly` reads the rollups,
//! applies these rules and records what they find.
//!
//! ## Cost spike (hourly)
//!
//! For a full hour `h`, `cost(h)` is the tenant's cost in it (every model) and the **baseline**
//! is its average hourly cost over the 168 hours before it, `[h − 7 days, h)`: their total
//! divided by 168, so hours with no usage count as zero. The hour is a spike when both hold:
//!
//! - `cost(h) ≥ spike_ratio × baseline` (default 3; `TOLLGATE_ANOMALY_SPIKE_RATIO`), and
//! - `cost(h) ≥ cost_floor_usd` (default $0.50; `TOLLGATE_ANOMALY_COST_FLOOR_USD`), so a
//!   tenant going from $0.001 to $0.004 an hour pages nobody.
//!
//! A tenant whose baseline is zero (no usage in the 7 days: a new tenant; or only usage that
//! cost nothing) has **no baseline**: no ratio can be judged, so no spike is raised, and the run
//! summary counts it. Both comparisons are inclusive and exact (`Decimal`, no division):
//! `cost(h) × 168 ≥ spike_ratio × Σ baseline hours`.
//!
//! ## Quality drop (daily)
//!
//! For a UTC day `d`, the day's average quality score is `Σ quality_score_sum / Σ
//! quality_score_count` over its 24 hourly rollups (every graded answer weighs the same), and
//! the baseline is the same average over the 7 days before it. The day is a drop when:
//!
//! - both the day and the 7 days hold at least `quality_min_graded` graded answers (default 20;
//!   `TOLLGATE_ANOMALY_QUALITY_MIN_GRADED`): a handful of answers is noise, not a trend, and
//! - `day average ≤ (1 − quality_drop) × baseline average`, a relative drop of at least
//!   `quality_drop` (default 20 %; `TOLLGATE_ANOMALY_QUALITY_DROP_PERCENT`). Scores are
//!   groundedness in 0–1 (`domain::quality`): 0.80 → 0.64 is a drop, 0.80 → 0.65 is not.

use chrono::{DateTime, Duration, Utc};
use rust_decimal::Decimal;

use super::usage::UsageRollup;

/// The hours a baseline averages over: 7 days.
pub const BASELINE_HOURS: i64 = 168;
/// The days a quality baseline averages over.
pub const BASELINE_DAYS: i64 = 7;

/// What an anomaly is about. Stored as [`AnomalyKind::as_str`] in `AnomalyRecord::kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AnomalyKind {
    /// An hour's cost far above the tenant's 7-day hourly average.
    CostSpike,
    /// A day's average quality score far below the tenant's 7-day average.
    QualityDrop,
}

impl AnomalyKind {
    /// Every kind, in a fixed order.
    pub const ALL: [Self; 2] = [Self::CostSpike, Self::QualityDrop];

    /// The stored and logged name (`cost_spike`, `quality_drop`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CostSpike => "cost_spike",
            Self::QualityDrop => "quality_drop",
        }
    }

    /// The kind [`AnomalyKind::as_str`] names; `None` for any other string.
    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == raw)
    }

    /// The CloudWatch metric an alert of this kind is published as.
    pub fn metric_name(self) -> &'static str {
        match self {
            Self::CostSpike => "CostAnomaly",
            Self::QualityDrop => "QualityAnomaly",
        }
    }
}

impl std::fmt::Display for AnomalyKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The thresholds, configurable per deployment (`config::anomaly`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnomalyRules {
    /// An hour at least this many times the baseline is a spike.
    pub spike_ratio: Decimal,
    /// An hour costing less than this (USD) is never a spike.
    pub cost_floor_usd: Decimal,
    /// The relative quality drop (a fraction, 0.20 = 20 %) that counts as an anomaly.
    pub quality_drop: Decimal,
    /// Graded answers needed in the day and in the 7 days before it.
    pub quality_min_graded: u64,
}

impl Default for AnomalyRules {
    fn default() -> Self {
        Self {
            spike_ratio: Decimal::from(3),
            cost_floor_usd: Decimal::new(50, 2),
            quality_drop: Decimal::new(20, 2),
            quality_min_graded: 20,
        }
    }
}

/// Thresholds [`AnomalyRules::validate`] refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RulesError {
    /// The spike ratio is not above 1.
    #[error("the spike ratio must be above 1 (got {0})")]
    SpikeRatio(Decimal),
    /// The cost floor is negative.
    #[error("the cost floor must not be negative (got {0})")]
    CostFloor(Decimal),
    /// The quality drop is not strictly between 0 and 1.
    #[error("the quality drop must be between 0 and 1, exclusive (got {0})")]
    QualityDrop(Decimal),
}

impl AnomalyRules {
    /// Refuses thresholds that would alert on everything or nothing by accident.
    pub fn validate(&self) -> Result<(), RulesError> {
        if self.spike_ratio <= Decimal::ONE {
            return Err(RulesError::SpikeRatio(self.spike_ratio));
        }
        if self.cost_floor_usd.is_sign_negative() && !self.cost_floor_usd.is_zero() {
            return Err(RulesError::CostFloor(self.cost_floor_usd));
        }
        if self.quality_drop <= Decimal::ZERO || self.quality_drop >= Decimal::ONE {
            return Err(RulesError::QualityDrop(self.quality_drop));
        }
        Ok(())
    }

    /// The rollups the checks of `hour` need: `[hour − 7 days, hour + 1 h)`, extended back to
    /// the quality baseline's start when `hour` is the last of its UTC day.
    pub fn window(hour: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
        let end = hour + Duration::hours(1);
        let start = match closes_day(hour) {
            Some(day) => day - Duration::days(BASELINE_DAYS),
            None => hour - Duration::hours(BASELINE_HOURS),
        };
        (start, end)
    }

    /// The cost rule for `hour` over `rollups` (one tenant's; others outside
    /// `[hour − 168 h, hour]` are ignored).
    pub fn check_cost(&self, hour: DateTime<Utc>, rollups: &[UsageRollup]) -> CostCheck {
        let from = hour - Duration::hours(BASELINE_HOURS);
        let observed: Decimal = rollups
            .iter()
            .filter(|r| r.hour == hour)
            .map(|r| r.cost_usd)
            .sum();
        let baseline_total: Decimal = rollups
            .iter()
            .filter(|r| r.hour >= from && r.hour < hour)
            .map(|r| r.cost_usd)
            .sum();
        let baseline = baseline_total / Decimal::from(BASELINE_HOURS);
        if baseline_total <= Decimal::ZERO {
            return CostCheck {
                observed,
                baseline,
                ratio: None,
                verdict: CostVerdict::NoBaseline,
            };
        }
        let ratio = observed.checked_div(baseline).map(|r| r.round_dp(2));
        // observed / (total / 168) ≥ ratio  ⇔  observed × 168 ≥ ratio × total: exact, and exactly
        // inclusive at the boundary. Overflow needs costs near 10^26 USD: treated as no spike.
        let at_ratio = match (
            observed.checked_mul(Decimal::from(BASELINE_HOURS)),
            self.spike_ratio.checked_mul(baseline_total),
        ) {
            (Some(lhs), Some(rhs)) => lhs >= rhs,
            _ => false,
        };
        let verdict = match (at_ratio, observed >= self.cost_floor_usd) {
            (true, true) => CostVerdict::Spike,
            (true, false) => CostVerdict::BelowFloor,
            (false, _) => CostVerdict::Normal,
        };
        CostCheck {
            observed,
            baseline,
            ratio,
            verdict,
        }
    }

    /// The quality rule for the UTC day starting at `day` over `rollups` (one tenant's).
    pub fn check_quality(&self, day: DateTime<Utc>, rollups: &[UsageRollup]) -> QualityCheck {
        let day_end = day + Duration::days(1);
        let from = day - Duration::days(BASELINE_DAYS);
        let sum = |lo: DateTime<Utc>, hi: DateTime<Utc>| {
            rollups
                .iter()
                .filter(|r| r.hour >= lo && r.hour < hi)
                .fold((Decimal::ZERO, 0_u64), |(s, n), r| {
                    (s + r.quality_score_sum, n + r.quality_score_count)
                })
        };
        let (day_sum, day_graded) = sum(day, day_end);
        let (base_sum, baseline_graded) = sum(from, day);
        let average = |s: Decimal, n: u64| {
            (n > 0)
                .then(|| s.checked_div(Decimal::from(n)))
                .flatten()
                .map(|a| a.round_dp(4))
        };
        let (observed, baseline) = (
            average(day_sum, day_graded),
            average(base_sum, baseline_graded),
        );
        let enough = day_graded >= self.quality_min_graded.max(1)
            && baseline_graded >= self.quality_min_graded.max(1);
        let verdict = if !enough {
            QualityVerdict::TooFewGraded
        } else {
            // day_sum / day_n ≤ (1 − drop) × base_sum / base_n, multiplied out (both n > 0).
            let keep = Decimal::ONE - self.quality_drop;
            let lhs = day_sum.checked_mul(Decimal::from(baseline_graded));
            let rhs = keep
                .checked_mul(base_sum)
                .and_then(|v| v.checked_mul(Decimal::from(day_graded)));
            match (lhs, rhs) {
                (Some(lhs), Some(rhs)) if base_sum > Decimal::ZERO && lhs <= rhs => {
                    QualityVerdict::Drop
                }
                _ => QualityVerdict::Normal,
            }
        };
        QualityCheck {
            observed,
            baseline,
            day_graded,
            baseline_graded,
            verdict,
        }
    }
}

/// The UTC day `hour` closes (its start), when `hour` is 23:00: the run for that hour is the
/// first that sees the whole day.
pub fn closes_day(hour: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let hour = super::usage::hour_start(hour);
    let secs = hour.timestamp();
    let into_day = secs.rem_euclid(86_400);
    (into_day == 23 * 3600).then(|| hour - Duration::hours(23))
}

/// The cost rule's verdict on one tenant's hour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CostVerdict {
    /// At or above the ratio and the floor: record an anomaly.
    Spike,
    /// At or above the ratio but under the absolute floor: too small to page anyone.
    BelowFloor,
    /// Under the ratio.
    Normal,
    /// The 7 days before cost nothing: no ratio to judge (a new tenant).
    NoBaseline,
}

/// The cost rule's finding for one tenant and hour, with its figures (for the log line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CostCheck {
    /// The hour's cost.
    pub observed: Decimal,
    /// The average hourly cost over the 168 hours before.
    pub baseline: Decimal,
    /// `observed / baseline`, to 2 places; `None` without a baseline.
    pub ratio: Option<Decimal>,
    /// What to do about it.
    pub verdict: CostVerdict,
}

/// The quality rule's verdict on one tenant's day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QualityVerdict {
    /// The day's average is at least `quality_drop` below the baseline's: record an anomaly.
    Drop,
    /// Enough graded answers, and no drop.
    Normal,
    /// The day or its baseline has fewer graded answers than the rule needs.
    TooFewGraded,
}

/// The quality rule's finding for one tenant and day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QualityCheck {
    /// The day's average score (4 places); `None` when nothing was graded.
    pub observed: Option<Decimal>,
    /// The 7 days' average score (4 places); `None` when nothing was graded.
    pub baseline: Option<Decimal>,
    /// Graded answers in the day.
    pub day_graded: u64,
    /// Graded answers in the 7 days before it.
    pub baseline_graded: u64,
    /// What to do about it.
    pub verdict: QualityVerdict,
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use rust_decimal_macros::dec;

    use super::*;
    use crate::domain::ids::TenantId;

    fn hour() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 14, 15, 0, 0).unwrap()
    }

    fn rollup(at: DateTime<Utc>, model: &str, cost: Decimal) -> UsageRollup {
        let mut r = UsageRollup::empty(TenantId::parse("acme").unwrap(), at, model.into());
        r.requests = 1;
        r.cost_usd = cost;
        r
    }

    /// `per_hour` in each of the 168 hours before `hour()`, and `last` in it.
    fn steady(per_hour: Decimal, last: Decimal) -> Vec<UsageRollup> {
        let mut all: Vec<_> = (1..=BASELINE_HOURS)
            .map(|i| rollup(hour() - Duration::hours(i), "gpt-4o", per_hour))
            .collect();
        all.push(rollup(hour(), "gpt-4o", last));
        all
    }

    #[test]
    fn an_hour_at_three_times_the_baseline_and_over_the_floor_is_a_spike() {
        let check = AnomalyRules::default().check_cost(hour(), &steady(dec!(1), dec!(3)));
        assert_eq!(check.verdict, CostVerdict::Spike);
        assert_eq!(check.observed, dec!(3));
        assert_eq!(check.baseline, dec!(1));
        assert_eq!(check.ratio, Some(dec!(3)));
    }

    #[test]
    fn the_boundary_is_inclusive_and_exact() {
        let rules = AnomalyRules::default();
        // Baseline $1/3 an hour: 3 × baseline is exactly $1, which no division reaches.
        let third = dec!(1) / dec!(3);
        let mut history: Vec<_> = (1..=BASELINE_HOURS)
            .map(|i| rollup(hour() - Duration::hours(i), "m", Decimal::ZERO))
            .collect();
        // 56 hours at $1 = $56 over 168 hours: a baseline of exactly $1/3.
        for r in history.iter_mut().take(56) {
            r.cost_usd = dec!(1);
        }
        history.push(rollup(hour(), "m", dec!(1)));
        let check = rules.check_cost(hour(), &history);
        assert_eq!(check.verdict, CostVerdict::Spike, "{check:?}");
        assert_eq!(check.baseline.round_dp(10), third.round_dp(10));
        // A hair under the ratio is not.
        history.last_mut().unwrap().cost_usd = dec!(0.9999999999);
        assert_eq!(
            rules.check_cost(hour(), &history).verdict,
            CostVerdict::Normal
        );

        // Exactly at the floor counts; a cent under does not.
        let at_floor = rules.check_cost(hour(), &steady(dec!(0.1), dec!(0.50)));
        assert_eq!(at_floor.verdict, CostVerdict::Spike);
        let under = rules.check_cost(hour(), &steady(dec!(0.1), dec!(0.49)));
        assert_eq!(under.verdict, CostVerdict::BelowFloor);
    }

    #[test]
    fn steady_growth_is_not_a_spike() {
        // Linear growth from $1 to $10 an hour over the week: the last hour is ~1.8× the
        // week's average.
        let mut all: Vec<_> = (1..=BASELINE_HOURS)
            .map(|i| {
                let cost = dec!(10) - Decimal::from(i - 1) * dec!(9) / dec!(167);
                rollup(hour() - Duration::hours(i), "gpt-4o", cost)
            })
            .collect();
        all.push(rollup(hour(), "gpt-4o", dec!(10.05)));
        let check = AnomalyRules::default().check_cost(hour(), &all);
        assert_eq!(check.verdict, CostVerdict::Normal, "{check:?}");
        assert!(check.ratio.unwrap() < dec!(2));
    }

    #[test]
    fn a_new_tenant_has_no_baseline_and_no_spike() {
        let only_now = [rollup(hour(), "gpt-4o", dec!(500))];
        let check = AnomalyRules::default().check_cost(hour(), &only_now);
        assert_eq!(check.verdict, CostVerdict::NoBaseline);
        assert_eq!(check.ratio, None);
        assert_eq!(check.observed, dec!(500));
    }

    #[test]
    fn a_zero_baseline_is_no_baseline() {
        // Usage in every hour of the week, all of it free (failed calls, cache hits).
        let check = AnomalyRules::default().check_cost(hour(), &steady(dec!(0), dec!(5)));
        assert_eq!(check.verdict, CostVerdict::NoBaseline);
        assert_eq!(check.baseline, Decimal::ZERO);
    }

    #[test]
    fn a_tiny_tenant_under_the_floor_pages_nobody() {
        // $0.001 → $0.004 an hour: four times the baseline, but under $0.50.
        let check = AnomalyRules::default().check_cost(hour(), &steady(dec!(0.001), dec!(0.004)));
        assert_eq!(check.verdict, CostVerdict::BelowFloor);
        assert_eq!(check.ratio, Some(dec!(4)));
    }

    #[test]
    fn every_model_counts_and_hours_outside_the_window_do_not() {
        let mut all = steady(dec!(1), dec!(1));
        // Other models in the checked hour add up: $1 + $2 = 3× the baseline.
        all.push(rollup(hour(), "claude-haiku", dec!(2)));
        // Far older usage and a later hour are outside the rule.
        all.push(rollup(hour() - Duration::hours(169), "gpt-4o", dec!(1000)));
        all.push(rollup(hour() + Duration::hours(1), "gpt-4o", dec!(1000)));
        let check = AnomalyRules::default().check_cost(hour(), &all);
        assert_eq!(check.observed, dec!(3));
        assert_eq!(check.baseline, dec!(1));
        assert_eq!(check.verdict, CostVerdict::Spike);
    }

    #[test]
    fn a_configured_ratio_and_floor_apply() {
        let rules = AnomalyRules {
            spike_ratio: dec!(1.5),
            cost_floor_usd: dec!(0),
            ..AnomalyRules::default()
        };
        let check = rules.check_cost(hour(), &steady(dec!(0.001), dec!(0.0015)));
        assert_eq!(check.verdict, CostVerdict::Spike);
    }

    fn graded(at: DateTime<Utc>, count: u64, average: Decimal) -> UsageRollup {
        let mut r = rollup(at, "gpt-4o", dec!(0.01));
        r.quality_score_count = count;
        r.quality_score_sum = average * Decimal::from(count);
        r
    }

    fn day() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 14, 0, 0, 0).unwrap()
    }

    /// Four graded answers an hour at `before` over the 7 days, and at `today` on the day.
    fn quality_history(before: Decimal, today: Decimal, per_hour_today: u64) -> Vec<UsageRollup> {
        let mut all: Vec<_> = (1..=BASELINE_HOURS)
            .map(|i| graded(day() - Duration::hours(i), 4, before))
            .collect();
        all.extend((0..24).map(|i| graded(day() + Duration::hours(i), per_hour_today, today)));
        all
    }

    #[test]
    fn a_day_twenty_percent_below_its_week_is_a_quality_drop() {
        let rules = AnomalyRules::default();
        let drop = rules.check_quality(day(), &quality_history(dec!(0.80), dec!(0.64), 4));
        assert_eq!(drop.verdict, QualityVerdict::Drop, "{drop:?}");
        assert_eq!(drop.observed, Some(dec!(0.64)));
        assert_eq!(drop.baseline, Some(dec!(0.80)));
        let slight = rules.check_quality(day(), &quality_history(dec!(0.80), dec!(0.65), 4));
        assert_eq!(slight.verdict, QualityVerdict::Normal);
    }

    #[test]
    fn too_few_graded_answers_are_not_a_trend() {
        let rules = AnomalyRules::default();
        // 19 graded answers in the whole day.
        let mut few = quality_history(dec!(0.80), dec!(0.10), 0);
        few.push(graded(day() + Duration::hours(3), 19, dec!(0.10)));
        let check = rules.check_quality(day(), &few);
        assert_eq!(check.verdict, QualityVerdict::TooFewGraded);
        assert_eq!(check.day_graded, 19);
        // No graded baseline at all.
        let fresh: Vec<_> = (0..24)
            .map(|i| graded(day() + Duration::hours(i), 4, dec!(0.2)))
            .collect();
        let check = rules.check_quality(day(), &fresh);
        assert_eq!(check.verdict, QualityVerdict::TooFewGraded);
        assert_eq!(check.baseline, None);
    }

    #[test]
    fn only_the_last_hour_of_a_day_closes_it_and_widens_the_window() {
        let late = Utc.with_ymd_and_hms(2026, 3, 14, 23, 0, 0).unwrap();
        assert_eq!(closes_day(late), Some(day()));
        assert_eq!(closes_day(hour()), None);
        assert_eq!(
            AnomalyRules::window(hour()),
            (hour() - Duration::hours(168), hour() + Duration::hours(1))
        );
        assert_eq!(
            AnomalyRules::window(late),
            (day() - Duration::days(7), late + Duration::hours(1))
        );
    }

    #[test]
    fn kinds_round_trip_and_bad_thresholds_are_refused() {
        for kind in AnomalyKind::ALL {
            assert_eq!(AnomalyKind::parse(kind.as_str()), Some(kind));
        }
        assert!(AnomalyRules::default().validate().is_ok());
        let bad = AnomalyRules {
            spike_ratio: dec!(1),
            ..AnomalyRules::default()
        };
        assert!(matches!(bad.validate(), Err(RulesError::SpikeRatio(_))));
        let bad = AnomalyRules {
            quality_drop: dec!(1),
            ..AnomalyRules::default()
        };
        assert!(matches!(bad.validate(), Err(RulesError::QualityDrop(_))));
    }
}
