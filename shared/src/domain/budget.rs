//! Dollar budgets (per tenant, per day and per UTC calendar month) and end-user limits, and
//! the integer money unit their counters hold.
//!
//! ## Money on the counters
//!
//! Costs are exact `Decimal`s everywhere they are reported (usage events, rollups, the usage
//! API). The limiter's counters are integers, as its token counters are, in **nano-USD**
//! (10⁻⁹ USD; an `i64` holds up to $9.2 billion). A call's cost goes onto a counter rounded
//! *up* to the next nano-dollar ([`nanos_ceil`]) and a budget is read rounded *down*
//! ([`cap_nanos`]), so a counter never holds less than the spend it stands for: it exceeds the
//! exact sum of its events by less than one nano-dollar per call, which can only make a budget
//! refuse that much early, never admit past it.
//!
//! ## Periods
//!
//! A day is a UTC calendar day and a month a UTC calendar month: a budget resets at 00:00 UTC
//! (and on the 1st), unlike the sliding token windows. Spend is charged to the period its
//! request was admitted in, including the reconciliation that lands after midnight.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::profile::UserId;
use super::tenant::Tier;

/// Nano-dollars per dollar.
pub const NANOS_PER_USD: i64 = 1_000_000_000;

/// The largest budget that may be configured, in USD: one billion, so every counter value
/// (which a reconciliation can push past its cap) stays far inside an `i64` of nano-dollars.
pub const MAX_BUDGET_USD: i64 = 1_000_000_000;

/// Most per-user overrides a tenant may keep (they travel with its configuration, read on
/// every request); beyond them, the defaults apply.
pub const MAX_USER_OVERRIDES: usize = 1_000;

/// `usd` in nano-dollars, rounded up; negative amounts round toward zero, saturating.
pub fn nanos_ceil(usd: Decimal) -> i64 {
    (usd * Decimal::from(NANOS_PER_USD))
        .ceil()
        .to_i64()
        .unwrap_or(if usd.is_sign_negative() {
            i64::MIN
        } else {
            i64::MAX
        })
}

/// A budget in nano-dollars, rounded down (a budget never admits more than it says).
pub fn cap_nanos(usd: Decimal) -> i64 {
    (usd * Decimal::from(NANOS_PER_USD))
        .floor()
        .to_i64()
        .unwrap_or(i64::MAX)
}

/// Nano-dollars back in USD, exactly.
pub fn usd_of_nanos(nanos: i64) -> Decimal {
    Decimal::new(nanos, 9).normalize()
}

/// A configured budget: an amount in USD, or none at all (lifts a tier's default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetCap {
    /// At most this many USD per period.
    Usd(Decimal),
    /// No budget.
    Unlimited,
}

impl BudgetCap {
    /// The amount, `None` when unlimited.
    pub fn usd(self) -> Option<Decimal> {
        match self {
            Self::Usd(usd) => Some(usd),
            Self::Unlimited => None,
        }
    }

    /// Reads `12.50`, `"12.50"` or `"unlimited"` (also `none`), refusing a negative amount or
    /// one above [`MAX_BUDGET_USD`].
    pub fn parse(raw: &str) -> Result<Self, String> {
        let raw = raw.trim();
        if raw.eq_ignore_ascii_case("unlimited") || raw.eq_ignore_ascii_case("none") {
            return Ok(Self::Unlimited);
        }
        let usd: Decimal = raw.parse().map_err(|_| {
            format!("`{raw}` is not an amount in USD (e.g. 25 or 0.50) nor `unlimited`")
        })?;
        if usd.is_sign_negative() {
            return Err(format!("a budget cannot be negative, got {usd}"));
        }
        if usd > Decimal::from(MAX_BUDGET_USD) {
            return Err(format!(
                "a budget of {usd} USD is above the maximum of {MAX_BUDGET_USD} USD"
            ));
        }
        Ok(Self::Usd(usd.normalize()))
    }
}

impl std::fmt::Display for BudgetCap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Usd(usd) => write!(f, "{usd}"),
            Self::Unlimited => f.write_str("unlimited"),
        }
    }
}

impl Serialize for BudgetCap {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for BudgetCap {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let raw = match serde_json::Value::deserialize(d)? {
            serde_json::Value::String(s) => s,
            serde_json::Value::Number(n) => n.to_string(),
            other => {
                return Err(D::Error::custom(format!(
                    "a budget is an amount in USD or \"unlimited\", got {other}"
                )));
            }
        };
        Self::parse(&raw).map_err(D::Error::custom)
    }
}

/// A tenant's own dollar budgets, each replacing its tier's where set (`None`: the tier's):
/// the budget fields of its limit overrides, as `PUT /admin/v1/tenants/{id}/budget` takes them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetOverrides {
    /// USD per UTC day, or `"unlimited"`.
    #[serde(default)]
    pub daily_usd: Option<BudgetCap>,
    /// USD per UTC calendar month, or `"unlimited"`.
    #[serde(default)]
    pub monthly_usd: Option<BudgetCap>,
    /// The soft threshold, 1-100 % of a budget.
    #[serde(default)]
    pub alert_at_percent: Option<u8>,
}

/// A tenant's dollar budgets in force: its tier's, with its overrides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Budget {
    /// USD per UTC day; `None`: no daily budget.
    pub daily_usd: Option<Decimal>,
    /// USD per UTC calendar month; `None`: no monthly budget.
    pub monthly_usd: Option<Decimal>,
    /// Percent of a budget at which the soft threshold is crossed: the degradation policy
    /// applies from there on.
    pub alert_at_percent: u8,
}

impl Budget {
    /// No budgets at all.
    pub const NONE: Budget = Budget {
        daily_usd: None,
        monthly_usd: None,
        alert_at_percent: DEFAULT_ALERT_PERCENT,
    };

    /// The budget for `period`.
    pub fn cap(&self, period: Period) -> Option<Decimal> {
        match period {
            Period::Day => self.daily_usd,
            Period::Month => self.monthly_usd,
        }
    }

    /// Whether `spent_nanos` in `period` has reached the soft threshold.
    pub fn past_alert(&self, period: Period, spent_nanos: i64) -> bool {
        self.cap(period).is_some_and(|cap| {
            let threshold = cap_nanos(cap) as i128 * i128::from(self.alert_at_percent) / 100;
            i128::from(spent_nanos) >= threshold
        })
    }
}

/// The soft threshold when none is configured: 80 %.
pub const DEFAULT_ALERT_PERCENT: u8 = 80;

impl Tier {
    /// What each pricing tier may spend by default. Enterprise tenants have no default budget.
    pub fn budget(self) -> Budget {
        let usd = |n: i64| Some(Decimal::from(n));
        match self {
            Tier::Free => Budget {
                daily_usd: usd(2),
                monthly_usd: usd(20),
                ..Budget::NONE
            },
            Tier::Pro => Budget {
                daily_usd: usd(250),
                monthly_usd: usd(5_000),
                ..Budget::NONE
            },
            Tier::Enterprise => Budget::NONE,
        }
    }
}

/// A budget period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    /// A UTC calendar day.
    Day,
    /// A UTC calendar month.
    Month,
}

impl Period {
    /// Both periods, shortest first.
    pub const ALL: [Period; 2] = [Period::Day, Period::Month];

    /// How the budget is named in messages (`daily`, `monthly`).
    pub fn adjective(self) -> &'static str {
        match self {
            Self::Day => "daily",
            Self::Month => "monthly",
        }
    }

    /// The period as a noun (`day`, `month`), as it is serialized.
    pub fn noun(self) -> &'static str {
        match self {
            Self::Day => "day",
            Self::Month => "month",
        }
    }

    /// A short tag for counter keys (`d`, `M`).
    pub fn tag(self) -> &'static str {
        match self {
            Self::Day => "d",
            Self::Month => "M",
        }
    }

    /// The period containing `now` (Unix seconds): days since the epoch, or months since
    /// year 0 (`year * 12 + month - 1`).
    pub fn index(self, now: i64) -> i64 {
        match self {
            Self::Day => now.div_euclid(86_400),
            Self::Month => {
                let date = date_of(now);
                i64::from(date.year()) * 12 + i64::from(date.month0())
            }
        }
    }

    /// When the period containing `now` started (Unix seconds): 00:00 UTC of the day, or of
    /// the 1st of the month.
    pub fn starts_at(self, now: i64) -> i64 {
        match self {
            Self::Day => now.div_euclid(86_400) * 86_400,
            Self::Month => {
                let date = date_of(now);
                NaiveDate::from_ymd_opt(date.year(), date.month(), 1)
                    .and_then(|d| d.and_hms_opt(0, 0, 0))
                    .map_or(now, |t| t.and_utc().timestamp())
            }
        }
    }

    /// When the period containing `now` ends (Unix seconds): the next 00:00 UTC, or the 1st of
    /// the next month at 00:00 UTC.
    pub fn ends_at(self, now: i64) -> i64 {
        match self {
            Self::Day => (now.div_euclid(86_400) + 1) * 86_400,
            Self::Month => {
                let next = self.index(now) + 1;
                let (year, month0) = (next.div_euclid(12), next.rem_euclid(12));
                NaiveDate::from_ymd_opt(year as i32, month0 as u32 + 1, 1)
                    .and_then(|d| d.and_hms_opt(0, 0, 0))
                    .map_or(now + 31 * 86_400, |t| t.and_utc().timestamp())
            }
        }
    }

    /// The period containing `now`, as people write it: `2026-12-05`, `2026-12`.
    pub fn label(self, now: i64) -> String {
        let date = date_of(now);
        match self {
            Self::Day => date.format("%Y-%m-%d").to_string(),
            Self::Month => date.format("%Y-%m").to_string(),
        }
    }

    /// How long a period's counter is kept after the period starts (DynamoDB TTL): the period
    /// and two days more, so a reconciliation landing late still finds it.
    pub fn expires_at(self, now: i64) -> i64 {
        self.ends_at(now) + 2 * 86_400
    }
}

fn date_of(now: i64) -> NaiveDate {
    DateTime::<Utc>::from_timestamp(now, 0)
        .unwrap_or_default()
        .date_naive()
}

/// Limits on one end user of a tenant. Every field is optional; an unset one does not limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserLimits {
    /// Tokens per sliding minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_minute: Option<u64>,
    /// Tokens per UTC day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_day: Option<u64>,
    /// USD per UTC day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usd_per_day: Option<BudgetCap>,
}

impl UserLimits {
    /// Whether no field is set.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// `self`, with each field `over` sets in its place (`unlimited` clears a default budget).
    pub fn overridden_by(self, over: &UserLimits) -> UserLimits {
        UserLimits {
            tokens_per_minute: over.tokens_per_minute.or(self.tokens_per_minute),
            tokens_per_day: over.tokens_per_day.or(self.tokens_per_day),
            usd_per_day: over.usd_per_day.or(self.usd_per_day),
        }
    }

    /// The daily USD budget, `None` when unset or unlimited.
    pub fn daily_usd(&self) -> Option<Decimal> {
        self.usd_per_day.and_then(BudgetCap::usd)
    }

    /// Whether any limit applies (a user with none costs the limiter nothing extra).
    pub fn limits_anything(&self) -> bool {
        self.tokens_per_minute.is_some()
            || self.tokens_per_day.is_some()
            || self.daily_usd().is_some()
    }

    /// The first token limit above [`super::limits::MAX_LIMIT`], by field name.
    pub fn above_max(&self) -> Option<(&'static str, u64)> {
        [
            ("tokens_per_minute", self.tokens_per_minute),
            ("tokens_per_day", self.tokens_per_day),
        ]
        .into_iter()
        .find_map(|(field, v)| {
            v.filter(|v| *v > super::limits::MAX_LIMIT)
                .map(|v| (field, v))
        })
    }
}

/// The tenant's policy for its own end users (the `user` of its requests): limits for any
/// user, including one never seen before, and per-user overrides.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndUserPolicy {
    /// What limits every user.
    #[serde(default, skip_serializing_if = "UserLimits::is_empty")]
    pub defaults: UserLimits,
    /// Per-user replacements of single default fields.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub overrides: BTreeMap<UserId, UserLimits>,
}

impl EndUserPolicy {
    /// Whether the policy limits nobody.
    pub fn is_empty(&self) -> bool {
        self.defaults.is_empty() && self.overrides.is_empty()
    }

    /// The limits in force for `user`.
    pub fn limits_for(&self, user: &UserId) -> UserLimits {
        match self.overrides.get(user) {
            Some(over) => self.defaults.overridden_by(over),
            None => self.defaults,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    #[test]
    fn a_period_starts_at_midnight_utc_and_on_the_first() {
        let at = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().timestamp();
        let last_second = at("2026-12-31T23:59:59Z");
        assert_eq!(
            Period::Day.starts_at(last_second),
            at("2026-12-31T00:00:00Z")
        );
        assert_eq!(
            Period::Month.starts_at(last_second),
            at("2026-12-01T00:00:00Z")
        );
        // The previous period starts where the current one's start, less a second, falls.
        let january = at("2027-01-01T00:00:00Z");
        assert_eq!(Period::Month.starts_at(january), january);
        assert_eq!(
            Period::Month.starts_at(january - 1),
            at("2026-12-01T00:00:00Z")
        );
        assert_eq!(Period::Month.ends_at(january - 1), january);
        assert_eq!(Period::Day.noun(), "day");
        assert_eq!(Period::Month.noun(), "month");
    }

    #[test]
    fn nano_rounding_never_undercounts_spend_nor_overstates_a_budget() {
        // A text-embedding-3-small token costs 2e-8 USD: 20 nano-dollars, exactly.
        assert_eq!(nanos_ceil(dec!(0.00000002)), 20);
        // Below a nano-dollar rounds up to one: a counter never holds less than the spend.
        assert_eq!(nanos_ceil(dec!(0.0000000001)), 1);
        assert_eq!(nanos_ceil(dec!(0.0000000010000001)), 2);
        assert_eq!(nanos_ceil(Decimal::ZERO), 0);
        // A budget rounds down.
        assert_eq!(cap_nanos(dec!(0.01)), 10_000_000);
        assert_eq!(cap_nanos(dec!(0.0000000019)), 1);
        assert_eq!(usd_of_nanos(10_000_000), dec!(0.01));
        // A refund is exact: ceil of a negative amount moves toward zero.
        assert_eq!(nanos_ceil(dec!(-0.0000000015)), -1);
    }

    #[test]
    fn caps_read_amounts_and_unlimited_and_refuse_nonsense() {
        let read = |json: &str| serde_json::from_str::<BudgetCap>(json);
        assert_eq!(read("\"12.50\"").unwrap(), BudgetCap::Usd(dec!(12.5)));
        assert_eq!(read("0.01").unwrap(), BudgetCap::Usd(dec!(0.01)));
        assert_eq!(read("\"unlimited\"").unwrap(), BudgetCap::Unlimited);
        assert!(read("-1").unwrap_err().to_string().contains("negative"));
        assert!(
            read("\"2000000000\"")
                .unwrap_err()
                .to_string()
                .contains("maximum")
        );
        assert!(read("true").is_err());
        assert_eq!(
            serde_json::to_string(&BudgetCap::Usd(dec!(0.01))).unwrap(),
            "\"0.01\""
        );
    }

    #[test]
    fn periods_are_utc_calendar_days_and_months() {
        let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().timestamp();
        let last_second = t("2026-12-31T23:59:59Z");
        let new_year = t("2027-01-01T00:00:00Z");
        assert_eq!(Period::Day.ends_at(last_second), new_year);
        assert_eq!(Period::Month.ends_at(last_second), new_year);
        assert_ne!(
            Period::Month.index(last_second),
            Period::Month.index(new_year)
        );
        assert_eq!(
            Period::Month.index(new_year) - Period::Month.index(last_second),
            1
        );
        assert_eq!(Period::Month.label(last_second), "2026-12");
        assert_eq!(Period::Day.label(new_year), "2027-01-01");
        assert_eq!(
            Period::Month.ends_at(t("2028-02-10T12:00:00Z")),
            t("2028-03-01T00:00:00Z")
        );
    }

    #[test]
    fn the_soft_threshold_is_a_percent_of_the_budget_and_reached_counts() {
        let budget = Budget {
            daily_usd: Some(dec!(1)),
            ..Budget::NONE
        };
        assert!(!budget.past_alert(Period::Day, 799_999_999));
        assert!(budget.past_alert(Period::Day, 800_000_000));
        assert!(!budget.past_alert(Period::Month, i64::MAX));
    }

    #[test]
    fn user_overrides_replace_single_default_fields() {
        let policy = EndUserPolicy {
            defaults: UserLimits {
                tokens_per_minute: Some(1_000),
                usd_per_day: Some(BudgetCap::Usd(dec!(1))),
                ..UserLimits::default()
            },
            overrides: BTreeMap::from([(
                UserId::parse("vip").unwrap(),
                UserLimits {
                    usd_per_day: Some(BudgetCap::Unlimited),
                    ..UserLimits::default()
                },
            )]),
        };
        let vip = policy.limits_for(&UserId::parse("vip").unwrap());
        assert_eq!(vip.tokens_per_minute, Some(1_000));
        assert_eq!(vip.daily_usd(), None);
        let anyone = policy.limits_for(&UserId::parse("never-seen").unwrap());
        assert_eq!(anyone.daily_usd(), Some(dec!(1)));
    }
}
