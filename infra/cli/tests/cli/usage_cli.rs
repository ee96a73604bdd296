//! `tollgate usage top|anomalies` and `tollgate anomalies run`, the built binary against
//! DynamoDB and CloudWatch in moto (when `TOLLGATE_TEST_DYNAMODB_ENDPOINT` names it; otherwise
//! the session skips and says so, except in CI where it fails).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::process::{Command, Output};

use chrono::{Duration, TimeZone, Utc};
use rust_decimal::Decimal;
use tollgate::adapters::dynamodb::{DynamoStore, TableNames};
use tollgate::domain::ids::RequestId;
use tollgate::ports::store::UsageSink;

use crate::usage_event;

fn tollgate(endpoint: &str, prefix: &str) -> Command {
    let mut cmd = crate::tollgate_at(endpoint);
    cmd.env("TOLLGATE_TABLE_PREFIX", prefix);
    cmd
}

fn ok(mut cmd: Command, args: &[&str]) -> String {
    let out: Output = cmd.args(args).output().expect("the tollgate binary runs");
    let (stdout, stderr) = (
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    );
    assert!(
        out.status.success(),
        "{args:?} exited {:?}\nstdout: {stdout}\nstderr: {stderr}",
        out.status.code()
    );
    stdout
}

#[test]
fn a_range_that_ends_before_it_starts_is_a_usage_error() {
    let out = tollgate("http://127.0.0.1:9", "none")
        .args([
            "usage",
            "top",
            "--from",
            "2026-03-15",
            "--to",
            "2026-03-14",
            "--store",
            "memory",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("must be after --from"), "{stderr}");
}

#[tokio::test]
async fn an_operator_checks_usage_and_runs_the_scheduler_against_moto() {
    let Some(endpoint) = tollgate_tests::moto::endpoint("usage CLI") else {
        return;
    };
    let prefix = format!(
        "ucli{}-{}",
        std::process::id(),
        Utc::now().timestamp_subsec_nanos()
    );
    ok(tollgate(&endpoint, &prefix), &["init"]);

    let hour = Utc.with_ymd_and_hms(2026, 3, 14, 15, 0, 0).unwrap();
    let store = DynamoStore::emulator(&endpoint, TableNames::with_prefix(&prefix));
    let mut events = vec![
        usage_event(
            RequestId::generate(),
            "acme",
            hour + Duration::minutes(5),
            Decimal::new(9, 0),
        ),
        usage_event(
            RequestId::generate(),
            "globex",
            hour + Duration::minutes(6),
            Decimal::new(2, 0),
        ),
    ];
    for day in 1..=7 {
        events.push(usage_event(
            RequestId::generate(),
            "acme",
            hour - Duration::days(day),
            Decimal::ONE,
        ));
    }
    for e in &events {
        store.record(e, &[]).await.unwrap();
    }

    let top = ok(
        tollgate(&endpoint, &prefix),
        &[
            "usage",
            "top",
            "--from",
            "2026-03-14T15",
            "--to",
            "2026-03-14T16",
        ],
    );
    let ranked: Vec<Vec<&str>> = top
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().take(3).collect())
        .collect();
    assert_eq!(ranked, [["1", "acme", "9"], ["2", "globex", "2"]], "{top}");

    let run = ok(
        tollgate(&endpoint, &prefix),
        &["anomalies", "run", "--hour", "2026-03-14T15"],
    );
    assert!(run.contains("anomalies recorded 1"), "{run}");
    let again = ok(
        tollgate(&endpoint, &prefix),
        &["anomalies", "run", "--hour", "2026-03-14T15"],
    );
    assert!(
        again.contains("anomalies recorded 0, already recorded 1"),
        "{again}"
    );

    let listed = ok(
        tollgate(&endpoint, &prefix),
        &[
            "usage",
            "anomalies",
            "--from",
            "2026-03-14",
            "--to",
            "2026-03-15",
            "--json",
        ],
    );
    let anomalies: Vec<serde_json::Value> = listed
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(anomalies.len(), 1, "{listed}");
    assert_eq!(anomalies[0]["tenant_id"], "acme");
    assert_eq!(anomalies[0]["kind"], "cost_spike");
}
