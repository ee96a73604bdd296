//! The anomaly scheduler's settings (the `anomaly-scheduler` function and `tollgate anomalies
//! run`), read once at start-up like every other variable (the table in [`crate::config`]).
//! The rules themselves are documented in [`crate::domain::anomaly`].

use std::str::FromStr;

use rust_decimal::Decimal;

use super::ConfigError;
use crate::domain::anomaly::{AnomalyRules, RulesError};
use crate::service::anomaly::SchedulerOptions;

/// Where the scheduler's alerts go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertsKind {
    /// `PutMetricData` (the alarm's metric); the production default.
    Cloudwatch,
    /// One EMF line per anomaly on stdout: the same metrics through the Lambda log agent, with
    /// no API call (and no `cloudwatch:PutMetricData` permission).
    Emf,
}

/// The anomaly scheduler's settings (`TOLLGATE_ANOMALY_*`), validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnomalySettings {
    /// The spike and quality-drop thresholds; they pass [`AnomalyRules::validate`].
    pub rules: AnomalyRules,
    /// Tenants checked at once.
    pub concurrency: usize,
    /// Where alerts go (`TOLLGATE_ANOMALY_ALERTS`).
    pub alerts: AlertsKind,
    /// The EventBridge bus budget events are published to (`TOLLGATE_BUDGET_EVENT_BUS`, a
    /// name or ARN); `None`: JSON lines on stdout.
    pub budget_event_bus: Option<String>,
}

impl AnomalySettings {
    /// Reads the process environment; unset variables take the documented defaults.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads settings through `lookup` (tests pass a map).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| {
            lookup(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let defaults = AnomalyRules::default();
        let decimal = |name: &'static str, default: Decimal| match get(name) {
            None => Ok(default),
            Some(raw) => Decimal::from_str(&raw).map_err(|_| ConfigError::Invalid {
                name,
                value: raw,
                reason: "expected a decimal number",
            }),
        };
        let whole = |name: &'static str, default: u64| match get(name) {
            None => Ok(default),
            Some(raw) => raw.parse::<u64>().map_err(|_| ConfigError::Invalid {
                name,
                value: raw,
                reason: "expected a non-negative whole number",
            }),
        };
        let drop_percent = decimal(
            "TOLLGATE_ANOMALY_QUALITY_DROP_PERCENT",
            defaults.quality_drop * Decimal::ONE_HUNDRED,
        )?;
        let rules = AnomalyRules {
            spike_ratio: decimal("TOLLGATE_ANOMALY_SPIKE_RATIO", defaults.spike_ratio)?,
            cost_floor_usd: decimal("TOLLGATE_ANOMALY_COST_FLOOR_USD", defaults.cost_floor_usd)?,
            quality_drop: drop_percent / Decimal::ONE_HUNDRED,
            quality_min_graded: whole(
                "TOLLGATE_ANOMALY_QUALITY_MIN_GRADED",
                defaults.quality_min_graded,
            )?,
        };
        rules.validate().map_err(|err| {
            let (name, value, reason) = match err {
                RulesError::SpikeRatio(v) => (
                    "TOLLGATE_ANOMALY_SPIKE_RATIO",
                    v,
                    "the spike ratio must be above 1",
                ),
                RulesError::CostFloor(v) => (
                    "TOLLGATE_ANOMALY_COST_FLOOR_USD",
                    v,
                    "the floor must not be negative",
                ),
                RulesError::QualityDrop(_) => (
                    "TOLLGATE_ANOMALY_QUALITY_DROP_PERCENT",
                    drop_percent,
                    "expected a percentage between 0 and 100, exclusive",
                ),
            };
            ConfigError::Invalid {
                name,
                value: value.to_string(),
                reason,
            }
        })?;
        let concurrency = match whole("TOLLGATE_ANOMALY_CONCURRENCY", 16)? {
            n @ 1..=256 => n as usize,
            n => {
                return Err(ConfigError::Invalid {
                    name: "TOLLGATE_ANOMALY_CONCURRENCY",
                    value: n.to_string(),
                    reason: "expected 1 to 256",
                });
            }
        };
        let alerts = match get("TOLLGATE_ANOMALY_ALERTS").as_deref() {
            None | Some("cloudwatch") => AlertsKind::Cloudwatch,
            Some("emf") => AlertsKind::Emf,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    name: "TOLLGATE_ANOMALY_ALERTS",
                    value: other.to_owned(),
                    reason: "expected cloudwatch or emf",
                });
            }
        };
        Ok(Self {
            rules,
            concurrency,
            alerts,
            budget_event_bus: get("TOLLGATE_BUDGET_EVENT_BUS"),
        })
    }

    /// The scheduler's options under these settings.
    pub fn options(&self) -> SchedulerOptions {
        SchedulerOptions {
            rules: self.rules.clone(),
            concurrency: self.concurrency,
            ..SchedulerOptions::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use rust_decimal_macros::dec;

    use super::*;

    fn settings(vars: &[(&str, &str)]) -> Result<AnomalySettings, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        AnomalySettings::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_are_the_documented_thresholds() {
        let s = settings(&[]).unwrap();
        assert_eq!(s.rules, AnomalyRules::default());
        assert_eq!(s.rules.spike_ratio, dec!(3));
        assert_eq!(s.rules.cost_floor_usd, dec!(0.50));
        assert_eq!(s.rules.quality_drop, dec!(0.20));
        assert_eq!(s.concurrency, 16);
        assert_eq!(s.alerts, AlertsKind::Cloudwatch);
    }

    #[test]
    fn thresholds_are_configurable_and_bad_ones_are_named() {
        let s = settings(&[
            ("TOLLGATE_ANOMALY_SPIKE_RATIO", "2.5"),
            ("TOLLGATE_ANOMALY_COST_FLOOR_USD", "10"),
            ("TOLLGATE_ANOMALY_QUALITY_DROP_PERCENT", "35"),
            ("TOLLGATE_ANOMALY_QUALITY_MIN_GRADED", "50"),
            ("TOLLGATE_ANOMALY_CONCURRENCY", "64"),
            ("TOLLGATE_ANOMALY_ALERTS", "emf"),
        ])
        .unwrap();
        assert_eq!(s.rules.spike_ratio, dec!(2.5));
        assert_eq!(s.rules.cost_floor_usd, dec!(10));
        assert_eq!(s.rules.quality_drop, dec!(0.35));
        assert_eq!(s.rules.quality_min_graded, 50);
        assert_eq!(s.options().concurrency, 64);
        assert_eq!(s.alerts, AlertsKind::Emf);
        for (name, value) in [
            ("TOLLGATE_ANOMALY_SPIKE_RATIO", "1"),
            ("TOLLGATE_ANOMALY_SPIKE_RATIO", "three"),
            ("TOLLGATE_ANOMALY_COST_FLOOR_USD", "-1"),
            ("TOLLGATE_ANOMALY_QUALITY_DROP_PERCENT", "100"),
            ("TOLLGATE_ANOMALY_CONCURRENCY", "0"),
            ("TOLLGATE_ANOMALY_ALERTS", "sns"),
        ] {
            let err = settings(&[(name, value)]).unwrap_err();
            assert!(err.to_string().contains(name), "{name}={value}: {err}");
        }
    }
}
