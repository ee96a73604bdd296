//! `tollgate usage top|anomalies`: usage across every tenant, for operators only (the store's
//! credentials, never a tenant key).
//!
//! `top` finds the tenants active in the range from the activity index (one listing per hour)
//! and sums each one's rollups (one query per tenant, a few at a time), so a month of data
//! costs a bounded number of reads, never a scan of events. `anomalies` lists what the
//! anomaly scheduler recorded.

use std::collections::BTreeSet;

use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, TimeZone, Utc};
use futures_util::stream::{self, StreamExt, TryStreamExt};
use rust_decimal::Decimal;
use serde::Serialize;
use tollgate::domain::ids::TenantId;
use tollgate::domain::usage::hour_start;
use tollgate::ports::store::{AnomalyRecord, AnomalyStore, UsageActivity, UsageQuery};

use super::{Output, StoreArgs, UsageError, table};

/// The longest range `top` reads (hours of index listings are read one by one).
const MAX_RANGE_DAYS: i64 = 93;
/// Tenants read at once by `top`.
const CONCURRENCY: usize = 16;
/// Tenants per activity-index page.
const PAGE: usize = 1_000;

#[derive(clap::Args, Debug)]
pub struct UsageArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(subcommand)]
    pub command: UsageCommand,
}

/// A range of time: `--from` inclusive, `--to` exclusive.
#[derive(clap::Args, Debug, Clone)]
pub struct Range {
    /// Start (inclusive), UTC: `2026-03-14`, `2026-03-14T15` (an hour), or RFC 3339.
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub from: DateTime<Utc>,
    /// End (exclusive), same formats; defaults to now.
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub to: Option<DateTime<Utc>>,
}

impl Range {
    fn resolve(&self) -> Result<(DateTime<Utc>, DateTime<Utc>), UsageError> {
        let to = self.to.unwrap_or_else(Utc::now);
        if to <= self.from {
            return Err(UsageError::new(format!(
                "--to ({}) must be after --from ({})",
                to.to_rfc3339(),
                self.from.to_rfc3339()
            )));
        }
        Ok((self.from, to))
    }
}

#[derive(clap::Subcommand, Debug)]
pub enum UsageCommand {
    /// The tenants that cost the most over a range: cost, requests, errors and tokens, from the
    /// hourly rollups (whole hours that start inside the range).
    #[command(
        after_help = "Examples:\n  tollgate usage top --from 2026-03-01 --to 2026-04-01 --limit 20\n  tollgate usage top --by user --tenant acme --from 2026-03-01"
    )]
    Top {
        #[command(flatten)]
        range: Range,
        /// Rank tenants, or one tenant's end users (`--tenant`; whole UTC days the range
        /// touches, from the per-user day rollups).
        #[arg(long, value_enum, default_value = "tenant")]
        by: TopBy,
        /// The tenant whose end users `--by user` ranks.
        #[arg(long, value_parser = super::parse::tenant_id)]
        tenant: Option<TenantId>,
        /// How many tenants to list.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=100_000))]
        limit: u64,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// The anomalies the scheduler recorded over a range (by the hour they are about), every
    /// tenant's, oldest first.
    #[command(after_help = "Example:\n  tollgate usage anomalies --from 2026-03-14")]
    Anomalies {
        #[command(flatten)]
        range: Range,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// What `usage top` ranks.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopBy {
    /// Tenants, by cost.
    Tenant,
    /// One tenant's end users, by cost.
    User,
}

/// Most user-days `usage top --by user` reads.
const MAX_USER_DAYS: usize = 100_000;

/// `2026-03-14` (midnight UTC), `2026-03-14T15` (an hour), `2026-03-14T15:30` or RFC 3339.
pub fn parse_time(raw: &str) -> Result<DateTime<Utc>, String> {
    let raw = raw.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(raw) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(day) = NaiveDate::parse_from_str(raw, "%Y-%m-%d") {
        return Ok(Utc.from_utc_datetime(&day.and_hms_opt(0, 0, 0).unwrap_or_default()));
    }
    for format in ["%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(raw, format) {
            return Ok(Utc.from_utc_datetime(&t));
        }
    }
    if let Ok(t) = NaiveDateTime::parse_from_str(&format!("{raw}:00"), "%Y-%m-%dT%H:%M") {
        return Ok(Utc.from_utc_datetime(&t));
    }
    Err(format!(
        "`{raw}` is not a time: use 2026-03-14, 2026-03-14T15 or RFC 3339 (2026-03-14T15:00:00Z)"
    ))
}

/// One tenant's usage over the range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TenantUsage {
    pub tenant: TenantId,
    pub cost_usd: Decimal,
    pub requests: u64,
    pub errors: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

/// What `top` read, for the operator's note.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TopReads {
    pub active_tenants: usize,
    pub index_pages: u64,
    pub rollup_queries: u64,
}

pub async fn execute<S>(store: &S, command: UsageCommand) -> anyhow::Result<Output>
where
    S: UsageActivity + UsageQuery + AnomalyStore + ?Sized,
{
    match command {
        UsageCommand::Top {
            range,
            by,
            tenant,
            limit,
            json,
        } => {
            let (from, to) = range.resolve()?;
            let limit = usize::try_from(limit).unwrap_or(usize::MAX);
            match (by, tenant) {
                (TopBy::User, Some(tenant)) => {
                    top_users(store, &tenant, from, to, limit, json).await
                }
                (TopBy::User, None) => Err(UsageError::new(
                    "--by user ranks one tenant's end users: give --tenant",
                )
                .into()),
                (TopBy::Tenant, Some(_)) => {
                    Err(UsageError::new("--tenant goes with --by user").into())
                }
                (TopBy::Tenant, None) => {
                    let (rows, reads) = top(store, from, to, limit).await?;
                    Ok(render_top(&rows, reads, from, to, json))
                }
            }
        }
        UsageCommand::Anomalies { range, json } => {
            let (from, to) = range.resolve()?;
            let all = store.anomalies(from, to).await?;
            Ok(render_anomalies(&all, json))
        }
    }
}

/// The `limit` tenants with the highest cost over `[from, to)` (ties by tenant id).
pub async fn top<S>(
    store: &S,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    limit: usize,
) -> anyhow::Result<(Vec<TenantUsage>, TopReads)>
where
    S: UsageActivity + UsageQuery + ?Sized,
{
    if to - from > Duration::days(MAX_RANGE_DAYS) {
        return Err(UsageError::new(format!(
            "the range is longer than {MAX_RANGE_DAYS} days: run `top` per month"
        ))
        .into());
    }
    // Rollups whose hour starts in [from, to): the first such hour is `from` rounded up.
    let mut hour = hour_start(from);
    if hour < from {
        hour += Duration::hours(1);
    }
    let mut reads = TopReads::default();
    let mut tenants = BTreeSet::new();
    while hour < to {
        let mut cursor = None;
        loop {
            let page = store.active_tenants(hour, cursor, PAGE).await?;
            reads.index_pages += 1;
            tenants.extend(page.tenants);
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        hour += Duration::hours(1);
    }
    reads.active_tenants = tenants.len();
    reads.rollup_queries = tenants.len() as u64;
    let mut rows: Vec<TenantUsage> = stream::iter(tenants)
        .map(|tenant| async move {
            let rollups = store.rollups(&tenant, from, to).await?;
            let mut row = TenantUsage {
                tenant,
                cost_usd: Decimal::ZERO,
                requests: 0,
                errors: 0,
                prompt_tokens: 0,
                completion_tokens: 0,
            };
            for r in rollups {
                row.cost_usd += r.cost_usd;
                row.requests += r.requests;
                row.errors += r.errors;
                row.prompt_tokens += r.prompt_tokens;
                row.completion_tokens += r.completion_tokens;
            }
            Ok::<_, anyhow::Error>(row)
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect()
        .await?;
    rows.sort_by(|a, b| b.cost_usd.cmp(&a.cost_usd).then(a.tenant.cmp(&b.tenant)));
    rows.truncate(limit);
    Ok((rows, reads))
}

/// One tenant's end users with the highest cost over the UTC days `[from, to)` touches.
async fn top_users<S>(
    store: &S,
    tenant: &TenantId,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    limit: usize,
    json: bool,
) -> anyhow::Result<Output>
where
    S: UsageQuery + ?Sized,
{
    let first = from.date_naive();
    let last = (to - Duration::nanoseconds(1)).date_naive();
    let end = last.succ_opt().unwrap_or(last);
    let read = store
        .user_rollups(tenant, first, end, MAX_USER_DAYS)
        .await?;
    let mut ranked = tollgate::domain::usage::rank_users(&read.rows);
    let count = ranked.len();
    ranked.truncate(limit);
    let mut note = format!(
        "{count} end users of `{tenant}` with usage from {first} to {last} (UTC days); read {} user-days",
        read.rows.len()
    );
    if !read.complete {
        note.push_str(&format!(
            "; stopped at {MAX_USER_DAYS} user-days: narrow the range for an exact ranking"
        ));
    }
    if json {
        let lines: String = ranked
            .iter()
            .filter_map(|r| serde_json::to_string(r).ok())
            .map(|line| line + "\n")
            .collect();
        return Ok(Output::stdout(lines).note(note));
    }
    let rows: Vec<Vec<String>> = ranked
        .iter()
        .enumerate()
        .map(|(i, r)| {
            vec![
                (i + 1).to_string(),
                r.user.to_string(),
                r.cost_usd.round_dp(6).normalize().to_string(),
                r.requests.to_string(),
                (r.prompt_tokens + r.completion_tokens).to_string(),
            ]
        })
        .collect();
    Ok(Output::stdout(table(
        &["RANK", "USER", "COST_USD", "REQUESTS", "TOKENS"],
        &rows,
    ))
    .note(note))
}

fn render_top(
    rows: &[TenantUsage],
    reads: TopReads,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    json: bool,
) -> Output {
    let note = format!(
        "{} tenants active from {} to {}; read {} activity-index pages and {} rollup queries",
        reads.active_tenants,
        from.to_rfc3339(),
        to.to_rfc3339(),
        reads.index_pages,
        reads.rollup_queries
    );
    if json {
        let lines: String = rows
            .iter()
            .filter_map(|r| serde_json::to_string(r).ok())
            .map(|line| line + "\n")
            .collect();
        return Output::stdout(lines).note(note);
    }
    let table_rows: Vec<Vec<String>> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| {
            vec![
                (i + 1).to_string(),
                r.tenant.to_string(),
                r.cost_usd.round_dp(6).normalize().to_string(),
                r.requests.to_string(),
                r.errors.to_string(),
                (r.prompt_tokens + r.completion_tokens).to_string(),
            ]
        })
        .collect();
    Output::stdout(table(
        &["RANK", "TENANT", "COST_USD", "REQUESTS", "ERRORS", "TOKENS"],
        &table_rows,
    ))
    .note(note)
}

/// `observed / baseline` to 2 places, or `-`.
pub fn ratio(anomaly: &AnomalyRecord) -> String {
    anomaly
        .observed
        .checked_div(anomaly.baseline)
        .map_or_else(|| "-".to_owned(), |r| r.round_dp(2).normalize().to_string())
}

pub fn render_anomalies(all: &[AnomalyRecord], json: bool) -> Output {
    if json {
        let lines: String = all
            .iter()
            .filter_map(|a| serde_json::to_string(a).ok())
            .map(|line| line + "\n")
            .collect();
        return Output::stdout(lines);
    }
    if all.is_empty() {
        return Output::stdout("").note("no anomalies recorded in this range");
    }
    let rows: Vec<Vec<String>> = all
        .iter()
        .map(|a| {
            vec![
                a.hour.format("%Y-%m-%dT%H:%MZ").to_string(),
                a.tenant_id.to_string(),
                a.kind.clone(),
                a.observed.normalize().to_string(),
                a.baseline.normalize().to_string(),
                ratio(a),
                a.detected_at.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
            ]
        })
        .collect();
    Output::stdout(table(
        &[
            "HOUR", "TENANT", "KIND", "OBSERVED", "BASELINE", "RATIO", "DETECTED",
        ],
        &rows,
    ))
}
