//! Usage report and event listing for the authenticated tenant (the usage-report function).
//!
//! The tenant is the caller's (its bearer key's), as for invoke and ingest: no query parameter can
//! select another tenant (`tenant_id` is refused with a 400, like any unknown parameter).
//! Parameters are parsed here into typed specs; every mistake is a 400 in the OpenAI error shape
//! naming the parameter (`GatewayError::InvalidRequest`, rendered by `http::error`).
//!
//! `GET /v1/usage`: `from`, `to` (RFC 3339 or `YYYY-MM-DD`; a date as `to` means the end of that
//! day; default: the last 24 hours), `granularity` (`hour` | `day`; default `hour` up to 2 days,
//! `day` beyond), `group_by=model`. At most [`MAX_RANGE_DAYS`] days, hourly buckets over at most
//! [`MAX_HOURLY_RANGE_DAYS`]. Read from hourly rollups only.
//!
//! `GET /v1/usage?group_by=user`: the tenant's end users by cost, highest first, over the UTC
//! days `from` to `to` touch (default: the last 24 hours), from per-user day rollups: `limit`
//! (1-[`MAX_EVENTS_LIMIT`], default [`DEFAULT_EVENTS_LIMIT`]) users per page, `cursor` for the
//! next. At most [`MAX_USER_DAYS`] user-days are read per report (`complete: false` beyond).
//!
//! `GET /v1/usage/events`: `model`, `user`, `status` (`ok` | `error`), `error_type`, `from`, `to`,
//! `limit` (1-[`MAX_EVENTS_LIMIT`], default [`DEFAULT_EVENTS_LIMIT`]), `cursor` (an opaque
//! `next_cursor` from a previous page). Newest first.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::Serialize;

use crate::domain::profile::UserId;
use crate::domain::tenant::ProviderKind;
use crate::domain::usage::{UsageEvent, UserDayRollup};
use crate::domain::usage_report::{
    ERROR_KINDS, EventCursor, EventFilter, EventPage, EventStatus, Granularity, ReportSpec,
    UsageReport, build_report, parse_error_kind,
};
use crate::error::GatewayError;
use crate::ports::store::UsageEvents;
use crate::ports::{Clock, UsageQuery};

use super::caller::Caller;

/// Longest report range: about a quarter (a bounded number of rollup reads).
pub const MAX_RANGE_DAYS: i64 = 93;
/// Longest range with hourly buckets (744 buckets).
pub const MAX_HOURLY_RANGE_DAYS: i64 = 31;
/// Up to this range, reports default to hourly buckets.
const HOURLY_DEFAULT_UP_TO: Duration = Duration::hours(48);
/// Events per page of `GET /v1/usage/events` when `limit` is not given.
pub const DEFAULT_EVENTS_LIMIT: usize = 20;
/// Most events per page of `GET /v1/usage/events`.
pub const MAX_EVENTS_LIMIT: usize = 100;
/// Longest accepted `model` filter (model names are short; this bounds the work and echo).
const MAX_MODEL_LEN: usize = 256;
/// Parameter names are echoed in error messages; an absurd one is cut.
const MAX_ECHOED_NAME: usize = 64;

/// Most user-days one `group_by=user` report reads (users × days in its range).
pub const MAX_USER_DAYS: usize = 20_000;

const REPORT_PARAMS: &[&str] = &["from", "to", "granularity", "group_by", "limit", "cursor"];
const EVENT_PARAMS: &[&str] = &[
    "model",
    "user",
    "status",
    "error_type",
    "from",
    "to",
    "limit",
    "cursor",
];

/// The usage routes (`GET /v1/usage`, `GET /v1/usage/events`): read-only ports, nothing else.
#[derive(Clone)]
pub struct UsageReportService {
    /// Hourly rollups, which reports are built from.
    pub usage: Arc<dyn UsageQuery>,
    /// Stored usage events, which the event listing pages through.
    pub events: Arc<dyn UsageEvents>,
    /// "Now": the default end of a report's range.
    pub clock: Arc<dyn Clock>,
}

impl UsageReportService {
    /// `GET /v1/usage`: buckets, or with `group_by=user` the top end users.
    pub async fn report(
        &self,
        caller: &Caller,
        query: Option<&str>,
    ) -> Result<Report, GatewayError> {
        let tenant = &caller.tenant;
        let query = query.unwrap_or_default();
        if let Some(users) = parse_users_query(query, self.clock.now())? {
            return self.top_users(caller, &users).await.map(Report::Users);
        }
        let spec = parse_report_query(query, self.clock.now())?;
        let rollups = self.usage.rollups(tenant, spec.from, spec.to).await?;
        Ok(Report::Buckets(Box::new(build_report(
            tenant, &spec, &rollups,
        ))))
    }

    /// The tenant's end users by cost over `query`'s days, one page of them.
    pub async fn top_users(
        &self,
        caller: &Caller,
        query: &UsersQuery,
    ) -> Result<UserReport, GatewayError> {
        let read = self
            .usage
            .user_rollups(&caller.tenant, query.from, query.to, MAX_USER_DAYS)
            .await?;
        let ranked = crate::domain::usage::rank_users(&read.rows);
        let total = ranked.len();
        let data: Vec<UserUsageView> = ranked
            .into_iter()
            .skip(query.offset)
            .take(query.limit)
            .map(UserUsageView::from)
            .collect();
        let next = query.offset + data.len();
        Ok(UserReport {
            object: "usage.users",
            from: query.from,
            to: query.to.pred_opt().unwrap_or(query.to),
            data,
            has_more: next < total,
            next_cursor: (next < total).then(|| format!("u1.{next}")),
            complete: read.complete,
        })
    }

    /// `GET /v1/usage/events`.
    pub async fn events(
        &self,
        caller: &Caller,
        query: Option<&str>,
    ) -> Result<EventList, GatewayError> {
        let tenant = &caller.tenant;
        let q = parse_events_query(query.unwrap_or_default())?;
        let page = self
            .events
            .events_page(tenant, &q.filter, q.cursor.as_ref(), q.limit)
            .await?;
        Ok(EventList::from(page))
    }
}

// ---------------------------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------------------------

/// `GET /v1/usage`: time buckets, or end users with `group_by=user`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Report {
    /// Buckets over time (optionally per model).
    Buckets(Box<UsageReport>),
    /// End users by cost.
    Users(UserReport),
}

/// `GET /v1/usage?group_by=user`: one page of end users, highest cost first.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UserReport {
    /// Always `usage.users`.
    pub object: &'static str,
    /// The first UTC day counted.
    pub from: NaiveDate,
    /// The last UTC day counted.
    pub to: NaiveDate,
    /// The page's users.
    pub data: Vec<UserUsageView>,
    /// Whether another page follows.
    pub has_more: bool,
    /// Pass as `cursor` for the next page; `null` on the last one.
    pub next_cursor: Option<String>,
    /// `false` when the range held more than [`MAX_USER_DAYS`] user-days and the ranking is
    /// over the first of them only: narrow the range.
    pub complete: bool,
}

/// One end user's usage over a report's days.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UserUsageView {
    /// The end user (`user` of the requests).
    pub user: String,
    /// Calls recorded.
    pub requests: u64,
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
    /// Cost in USD, exact (a string).
    pub cost_usd: Decimal,
}

impl From<UserDayRollup> for UserUsageView {
    fn from(r: UserDayRollup) -> Self {
        Self {
            user: r.user.to_string(),
            requests: r.requests,
            prompt_tokens: r.prompt_tokens,
            completion_tokens: r.completion_tokens,
            cost_usd: r.cost_usd,
        }
    }
}

/// `GET /v1/usage/events`: one page, newest first.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventList {
    /// Always `list`.
    pub object: &'static str,
    /// The page's events, newest first.
    pub data: Vec<EventView>,
    /// Whether another page follows.
    pub has_more: bool,
    /// Pass as `cursor` for the next page; `null` on the last one.
    pub next_cursor: Option<String>,
}

impl From<EventPage> for EventList {
    fn from(page: EventPage) -> Self {
        Self {
            object: "list",
            data: page.events.iter().map(EventView::from).collect(),
            has_more: page.next.is_some(),
            next_cursor: page.next.as_ref().map(EventCursor::encode),
        }
    }
}

/// One request's trace, as a tenant sees it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventView {
    /// The event's id: the request's, with a suffix for a call made on its behalf (`-docN`
    /// for a document's embeddings, `-retrieval`, `-retry`).
    pub request_id: String,
    /// When the event was recorded; decides its hour in reports.
    pub created_at: DateTime<Utc>,
    /// The logical model requested.
    pub model: String,
    /// The model id the provider served.
    pub model_served: String,
    /// The provider called.
    pub provider: ProviderKind,
    /// `ok` or `error`.
    pub status: EventStatus,
    /// Why the call failed (an error type of the metrics); `None` on success.
    pub error_type: Option<&'static str>,
    /// Input tokens, prompt-cache reads and writes included.
    pub prompt_tokens: u64,
    /// Output tokens.
    pub completion_tokens: u64,
    /// Prompt tokens read from the provider's prompt cache.
    pub cached_tokens: u64,
    /// Prompt tokens written to the provider's prompt cache (Anthropic).
    pub cache_write_tokens: u64,
    /// The cost in USD, exact, as a decimal string.
    #[serde(with = "rust_decimal::serde::str")]
    pub cost_usd: Decimal,
    /// Wall-clock time of the request, in milliseconds.
    pub latency_ms: u64,
    /// Time spent waiting on the provider, in milliseconds; `None` when not measured.
    pub provider_latency_ms: Option<u64>,
    /// Whether the reply was streamed.
    pub streamed: bool,
    /// Whether the reply came from the response cache.
    pub cache_hit: bool,
    /// Provider attempts made, retries included.
    pub attempts: u32,
    /// The client went away before the stream finished; the usage is still exact.
    pub client_disconnected: bool,
    /// The model originally requested, when a cheaper one served the request.
    pub degraded_from: Option<String>,
    /// Groundedness of a retrieval-augmented answer, 0 to 1, as a decimal string; `None`
    /// unless the call succeeded with retrieved excerpts and its answer could be scored.
    #[serde(with = "rust_decimal::serde::str_option")]
    pub quality_score: Option<Decimal>,
    /// `provider`, `estimated` or `none` (see `UsageSource`).
    pub usage_source: &'static str,
    /// The end user the call was made for (`user`), when the request named one.
    pub user: Option<String>,
}

impl From<&UsageEvent> for EventView {
    fn from(e: &UsageEvent) -> Self {
        Self {
            request_id: e.request_id.as_str().to_owned(),
            created_at: e.created_at,
            model: e.model_requested.clone(),
            model_served: e.model_served.clone(),
            provider: e.provider,
            status: EventStatus::of(e),
            error_type: e.error_type.map(|k| k.as_str()),
            prompt_tokens: e.usage.prompt_tokens,
            completion_tokens: e.usage.completion_tokens,
            cached_tokens: e.usage.cached_tokens,
            cache_write_tokens: e.usage.cache_write_tokens,
            cost_usd: e.cost_usd.normalize(),
            latency_ms: e.latency_ms,
            provider_latency_ms: e.provider_latency_ms,
            streamed: e.streamed,
            cache_hit: e.cache_hit,
            attempts: e.attempts,
            client_disconnected: e.client_disconnected,
            degraded_from: e.degraded_from.clone(),
            quality_score: e.quality_score,
            usage_source: e.usage_source.as_str(),
            user: e.user.as_ref().map(ToString::to_string),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Parameters
// ---------------------------------------------------------------------------------------------

/// A parsed `GET /v1/usage/events` query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventsQuery {
    /// Which events to list (model, status, error type, time range).
    pub filter: EventFilter,
    /// Where the page starts; `None` for the first page.
    pub cursor: Option<EventCursor>,
    /// Events per page, 1 to [`MAX_EVENTS_LIMIT`].
    pub limit: usize,
}

fn invalid(message: impl Into<String>, param: &str) -> GatewayError {
    GatewayError::invalid(message, Some(param.to_owned()))
}

/// Decodes the query string into one value per known parameter. `tenant_id`, unknown names,
/// repeated names and empty values are refused.
fn params(query: &str, allowed: &[&str]) -> Result<BTreeMap<String, String>, GatewayError> {
    let mut out = BTreeMap::new();
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        let shown: String = name.chars().take(MAX_ECHOED_NAME).collect();
        if name == "tenant_id" {
            return Err(invalid(
                "`tenant_id` cannot be set: usage is always reported for the API key's own tenant",
                "tenant_id",
            ));
        }
        if !allowed.contains(&name.as_ref()) {
            return Err(invalid(
                format!(
                    "unknown parameter `{shown}`; expected one of: {}",
                    allowed.join(", ")
                ),
                &shown,
            ));
        }
        if value.is_empty() {
            return Err(invalid(format!("`{shown}` must not be empty"), &shown));
        }
        if out.insert(name.into_owned(), value.into_owned()).is_some() {
            return Err(invalid(
                format!("`{shown}` is given more than once"),
                &shown,
            ));
        }
    }
    Ok(out)
}

#[derive(Clone, Copy)]
enum Bound {
    Start,
    End,
}

/// Times outside these years are refused (they are mistakes, and bucket arithmetic near
/// chrono's limits would overflow).
const EARLIEST_YEAR: i32 = 2000;
const LATEST_YEAR: i32 = 2999;

/// RFC 3339 (`2026-03-14T15:00:00Z`, any offset) or a UTC date. A date as an end bound means
/// the end of that day, so `from=2026-03-01&to=2026-03-31` is all of March.
fn parse_time(raw: &str, param: &str, bound: Bound) -> Result<DateTime<Utc>, GatewayError> {
    use chrono::Datelike;
    let bad = || {
        invalid(
            format!(
                "`{param}` must be an RFC 3339 time (2026-03-14T15:00:00Z) or a date (2026-03-14) \
                 between the years {EARLIEST_YEAR} and {LATEST_YEAR}"
            ),
            param,
        )
    };
    // An unencoded `+` in an offset arrives as a space.
    let rfc3339 = DateTime::parse_from_rfc3339(raw)
        .or_else(|e| {
            if raw.contains(' ') {
                DateTime::parse_from_rfc3339(&raw.replace(' ', "+"))
            } else {
                Err(e)
            }
        })
        .map(|t| t.with_timezone(&Utc));
    let t = match rfc3339 {
        Ok(t) => t,
        Err(_) => {
            let date = NaiveDate::parse_from_str(raw, "%Y-%m-%d").map_err(|_| bad())?;
            let date = match bound {
                Bound::Start => date,
                Bound::End => date.succ_opt().ok_or_else(bad)?,
            };
            date.and_hms_opt(0, 0, 0).ok_or_else(bad)?.and_utc()
        }
    };
    if (EARLIEST_YEAR..=LATEST_YEAR).contains(&t.year()) {
        Ok(t)
    } else {
        Err(bad())
    }
}

/// `from` and `to` as given (either may be absent).
struct Bounds {
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
}

fn parse_range(
    p: &BTreeMap<String, String>,
    default_to: Option<DateTime<Utc>>,
) -> Result<Bounds, GatewayError> {
    let to = match p.get("to") {
        Some(raw) => Some(parse_time(raw, "to", Bound::End)?),
        None => default_to,
    };
    let from = p
        .get("from")
        .map(|raw| parse_time(raw, "from", Bound::Start))
        .transpose()?;
    if let (Some(from), Some(to)) = (from, to)
        && from >= to
    {
        return Err(invalid("`from` must be before `to`", "from"));
    }
    Ok(Bounds { from, to })
}

/// A `GET /v1/usage?group_by=user` query: UTC days `[from, to)` and a page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsersQuery {
    /// The first day.
    pub from: NaiveDate,
    /// The day after the last.
    pub to: NaiveDate,
    /// Users per page.
    pub limit: usize,
    /// Users before this page.
    pub offset: usize,
}

/// Parses a `GET /v1/usage` query that asks for `group_by=user`; `None` for any other report.
pub fn parse_users_query(
    query: &str,
    now: DateTime<Utc>,
) -> Result<Option<UsersQuery>, GatewayError> {
    let p = params(query, REPORT_PARAMS)?;
    if p.get("group_by").map(String::as_str) != Some("user") {
        return Ok(None);
    }
    if p.contains_key("granularity") {
        return Err(invalid(
            "`granularity` does not apply to `group_by=user` (users are ranked over whole UTC days)",
            "granularity",
        ));
    }
    let Bounds { from, to } = parse_range(&p, Some(now))?;
    let to = to.unwrap_or(now);
    let from = from.unwrap_or(to - Duration::hours(24));
    if from >= to {
        return Err(invalid("`from` must be before `to`", "from"));
    }
    if to - from > Duration::days(MAX_RANGE_DAYS) {
        return Err(invalid(
            format!("the range from `from` to `to` is at most {MAX_RANGE_DAYS} days"),
            "from",
        ));
    }
    // Every UTC day the range touches: `to` is exclusive.
    let last = (to - Duration::nanoseconds(1)).date_naive();
    let limit = page_limit(&p)?;
    let offset = match p.get("cursor") {
        None => 0,
        Some(raw) => raw
            .strip_prefix("u1.")
            .and_then(|n| n.parse::<usize>().ok())
            .ok_or_else(|| {
                invalid(
                    "`cursor` is not valid; pass the `next_cursor` of a previous page unchanged",
                    "cursor",
                )
            })?,
    };
    Ok(Some(UsersQuery {
        from: from.date_naive(),
        to: last.succ_opt().unwrap_or(last),
        limit,
        offset,
    }))
}

/// `limit`: 1 to [`MAX_EVENTS_LIMIT`], [`DEFAULT_EVENTS_LIMIT`] when absent.
fn page_limit(p: &BTreeMap<String, String>) -> Result<usize, GatewayError> {
    match p.get("limit") {
        None => Ok(DEFAULT_EVENTS_LIMIT),
        Some(raw) => raw
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_EVENTS_LIMIT).contains(n))
            .ok_or_else(|| {
                invalid(
                    format!("`limit` must be an integer from 1 to {MAX_EVENTS_LIMIT}"),
                    "limit",
                )
            }),
    }
}

/// Parses a `GET /v1/usage` query into whole buckets. `now` is the default `to`.
pub fn parse_report_query(query: &str, now: DateTime<Utc>) -> Result<ReportSpec, GatewayError> {
    let p = params(query, REPORT_PARAMS)?;
    if let Some(name) = ["limit", "cursor"].into_iter().find(|n| p.contains_key(*n)) {
        return Err(invalid(
            format!("`{name}` applies to `group_by=user` only"),
            name,
        ));
    }
    let Bounds { from, to } = parse_range(&p, Some(now))?;
    let to = to.unwrap_or(now);
    let from = match from {
        Some(from) => from,
        None => to - Duration::hours(24),
    };
    if from >= to {
        return Err(invalid("`from` must be before `to`", "from"));
    }
    let span = to - from;
    if span > Duration::days(MAX_RANGE_DAYS) {
        return Err(invalid(
            format!("the range from `from` to `to` is at most {MAX_RANGE_DAYS} days"),
            "from",
        ));
    }
    let granularity = match p.get("granularity") {
        Some(raw) => Granularity::parse(raw)
            .ok_or_else(|| invalid("`granularity` must be `hour` or `day`", "granularity"))?,
        None if span <= HOURLY_DEFAULT_UP_TO => Granularity::Hour,
        None => Granularity::Day,
    };
    if granularity == Granularity::Hour && span > Duration::days(MAX_HOURLY_RANGE_DAYS) {
        return Err(invalid(
            format!(
                "hourly buckets cover at most {MAX_HOURLY_RANGE_DAYS} days; use `granularity=day`"
            ),
            "granularity",
        ));
    }
    let group_by_model = match p.get("group_by").map(String::as_str) {
        None => false,
        Some("model") => true,
        Some(_) => return Err(invalid("`group_by` must be `model` or `user`", "group_by")),
    };
    Ok(ReportSpec::aligned(from, to, granularity, group_by_model))
}

/// Parses a `GET /v1/usage/events` query.
pub fn parse_events_query(query: &str) -> Result<EventsQuery, GatewayError> {
    let p = params(query, EVENT_PARAMS)?;
    let Bounds { from, to } = parse_range(&p, None)?;
    let limit = page_limit(&p)?;
    let cursor = p
        .get("cursor")
        .map(|raw| {
            EventCursor::decode(raw).map_err(|_| {
                invalid(
                    "`cursor` is not valid; pass the `next_cursor` of a previous page unchanged",
                    "cursor",
                )
            })
        })
        .transpose()?;
    let model = match p.get("model") {
        Some(m) if m.chars().count() > MAX_MODEL_LEN => {
            return Err(invalid(
                format!("`model` is longer than {MAX_MODEL_LEN} characters"),
                "model",
            ));
        }
        other => other.cloned(),
    };
    let status = p
        .get("status")
        .map(|raw| {
            EventStatus::parse(raw)
                .ok_or_else(|| invalid("`status` must be `ok` or `error`", "status"))
        })
        .transpose()?;
    let error_type = p
        .get("error_type")
        .map(|raw| {
            parse_error_kind(raw).ok_or_else(|| {
                let kinds: Vec<&str> = ERROR_KINDS.iter().map(|k| k.as_str()).collect();
                invalid(
                    format!("`error_type` must be one of: {}", kinds.join(", ")),
                    "error_type",
                )
            })
        })
        .transpose()?;
    let user = p
        .get("user")
        .map(|raw| {
            UserId::parse(raw.as_str()).map_err(|_| {
                invalid(
                    "`user` is not a valid end-user id (1-256 characters of A-Z, a-z, 0-9 and - _ . @ : + = | ~)",
                    "user",
                )
            })
        })
        .transpose()?;
    Ok(EventsQuery {
        filter: EventFilter {
            user,
            model,
            status,
            error_type,
            from,
            to,
        },
        cursor,
        limit,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 14, 15, 42, 7).unwrap()
    }

    fn param_of(err: GatewayError) -> String {
        let body = serde_json::to_value(err.to_body()).unwrap();
        assert_eq!(body["error"]["type"], "invalid_request_error");
        body["error"]["param"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    #[test]
    fn the_default_report_is_the_last_24_hours_by_hour() {
        let spec = parse_report_query("", now()).unwrap();
        assert_eq!(spec.granularity, Granularity::Hour);
        assert_eq!(
            spec.to,
            Utc.with_ymd_and_hms(2026, 3, 14, 16, 0, 0).unwrap()
        );
        assert_eq!(
            spec.from,
            Utc.with_ymd_and_hms(2026, 3, 13, 15, 0, 0).unwrap()
        );
        assert_eq!(spec.bucket_starts().len(), 25);
        assert!(!spec.group_by_model);
    }

    #[test]
    fn dates_cover_whole_days_and_long_ranges_default_to_days() {
        let spec =
            parse_report_query("from=2026-03-01&to=2026-03-31&group_by=model", now()).unwrap();
        assert_eq!(spec.granularity, Granularity::Day);
        assert_eq!(
            spec.from,
            Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap()
        );
        assert_eq!(spec.to, Utc.with_ymd_and_hms(2026, 4, 1, 0, 0, 0).unwrap());
        assert_eq!(spec.bucket_starts().len(), 31);
        assert!(spec.group_by_model);
        let offset = parse_report_query(
            "from=2026-03-14T10:00:00+02:00&to=2026-03-14T12:00:00%2B02:00",
            now(),
        )
        .unwrap();
        assert_eq!(
            offset.from,
            Utc.with_ymd_and_hms(2026, 3, 14, 8, 0, 0).unwrap()
        );
    }

    #[test]
    fn bad_report_parameters_are_400s_naming_the_parameter() {
        for (query, param) in [
            ("tenant_id=globex", "tenant_id"),
            ("from=2026-03-14&tenant_id=acme", "tenant_id"),
            ("tenant=globex", "tenant"),
            ("from=yesterday", "from"),
            ("to=2026-13-01", "to"),
            ("from=2026-03-14&to=2026-03-13", "from"),
            ("from=2026-03-14T00:00:00Z&to=2026-03-14T00:00:00Z", "from"),
            ("from=2025-01-01&to=2026-01-01", "from"),
            (
                "from=2026-01-01&to=2026-03-01&granularity=hour",
                "granularity",
            ),
            ("granularity=minute", "granularity"),
            ("group_by=provider", "group_by"),
            ("from=", "from"),
            ("from=2026-03-01&from=2026-03-02", "from"),
            ("from=1900-01-01", "from"),
            ("to=9999-12-31", "to"),
        ] {
            let err = parse_report_query(query, now()).unwrap_err();
            assert_eq!(err.status(), 400, "{query}");
            assert_eq!(param_of(err), param, "{query}");
        }
    }

    #[test]
    fn event_queries_parse_filters_limits_and_cursors() {
        let q = parse_events_query("model=gpt-4o&status=error&error_type=timeout&limit=5").unwrap();
        assert_eq!(q.limit, 5);
        assert_eq!(q.filter.model.as_deref(), Some("gpt-4o"));
        assert_eq!(q.filter.status, Some(EventStatus::Error));
        assert_eq!(q.filter.error_type, Some(crate::error::ErrorKind::Timeout));
        assert_eq!(parse_events_query("").unwrap().limit, DEFAULT_EVENTS_LIMIT);
        for (query, param) in [
            ("limit=0", "limit"),
            ("limit=101", "limit"),
            ("limit=ten", "limit"),
            ("status=failed", "status"),
            ("error_type=boom", "error_type"),
            ("cursor=abc", "cursor"),
            ("tenant_id=globex", "tenant_id"),
            ("order=asc", "order"),
        ] {
            let err = parse_events_query(query).unwrap_err();
            assert_eq!(param_of(err), param, "{query}");
        }
    }
}
