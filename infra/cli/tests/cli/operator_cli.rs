//! The built `tollgate` binary, as an operator runs it.
//!
//! Exit codes and one-line errors are checked on every `cargo test` (with `--store memory`, no
//! AWS). The DynamoDB session (`init`, `tenant create`, `key create`, `key list`, `tenant show`,
//! `key revoke`, `replay`) runs against moto when `TOLLGATE_TEST_DYNAMODB_ENDPOINT` names one
//! (`infra/test.sh` starts it); without it the test skips and says so, except in CI
//! (`CI=true`), where it fails.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::io::Write;
use std::process::{Command, Output, Stdio};

use tollgate::adapters::dynamodb::{DynamoStore, TableNames};
use tollgate::adapters::emf::render_metering_failure;
use tollgate::domain::ids::{RequestId, TenantId};
use tollgate::domain::tenant::{TenantConfig, Tier};
use tollgate::ports::store::UsageQuery;
use tollgate::service::caller::authenticate;

/// The binary with an environment that can only reach `endpoint` (or nothing at all).
fn tollgate(endpoint: Option<&str>) -> Command {
    // Nothing listens on port 9 (discard): without an emulator every call fails fast.
    crate::tollgate_at(endpoint.unwrap_or("http://127.0.0.1:9"))
}

fn run(mut cmd: Command, args: &[&str]) -> Output {
    cmd.args(args).output().expect("the tollgate binary runs")
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8(out.stderr.clone()).unwrap()
}

/// Runs and expects success; on failure the panic shows what the operator would have seen.
fn ok(cmd: Command, args: &[&str]) -> Output {
    let out = run(cmd, args);
    assert!(
        out.status.success(),
        "{args:?} exited {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        stdout(&out),
        stderr(&out)
    );
    out
}

#[test]
fn bad_flags_exit_2_and_bad_configurations_exit_1_with_one_line_and_no_panic() {
    let create = [
        "tenant", "create", "acme", "--store", "memory", "--name", "Acme", "--tier", "pro",
    ];
    let usage = run(
        tollgate(None),
        &[&create[..], &["--route", "fast=azure:gpt-4o"]].concat(),
    );
    assert_eq!(usage.status.code(), Some(2), "{}", stderr(&usage));
    assert!(stderr(&usage).contains("unknown provider `azure`"));

    let invalid = run(
        tollgate(None),
        &[
            &create[..],
            &[
                "--route",
                "fast=openai:gpt-4o-mini",
                "--degrade-at",
                "80",
                "--degrade",
                "fast=slow",
            ],
        ]
        .concat(),
    );
    assert_eq!(invalid.status.code(), Some(1));
    let message = stderr(&invalid);
    assert_eq!(
        message,
        "error: tenant `acme` would be invalid: degradation maps `fast` to `slow`, but `slow` \
         is not one of the tenant's models\n"
    );
    assert!(stdout(&invalid).is_empty());

    let nothing = run(
        tollgate(None),
        &["tenant", "update", "acme", "--store", "memory"],
    );
    assert_eq!(nothing.status.code(), Some(2), "{}", stderr(&nothing));

    let unreachable = run(tollgate(None), &["tenant", "list"]);
    assert_eq!(unreachable.status.code(), Some(1));
    let message = stderr(&unreachable);
    assert!(
        message.starts_with("error: store unavailable: DynamoDB"),
        "{message}"
    );
    assert_eq!(message.lines().count(), 1, "{message}");
    assert!(!message.contains("panicked"));
}

#[test]
fn a_dry_run_on_the_memory_store_validates_and_keeps_nothing() {
    let out = ok(
        tollgate(None),
        &[
            "tenant",
            "create",
            "acme",
            "--store",
            "memory",
            "--name",
            "Acme",
            "--tier",
            "free",
            "--route",
            "fast=openai:gpt-4o-mini",
        ],
    );
    assert_eq!(stdout(&out), "created tenant `acme` (version 1)\n");
}

#[tokio::test]
async fn an_operator_session_against_dynamodb_in_moto() {
    let Some(endpoint) = tollgate_tests::moto::endpoint("operator CLI") else {
        return;
    };
    let nanos = chrono::Utc::now().timestamp_subsec_nanos();
    let prefix = format!("cli{}-{nanos}", std::process::id());
    let cli = || {
        let mut cmd = tollgate(Some(&endpoint));
        cmd.env("TOLLGATE_TABLE_PREFIX", &prefix);
        cmd
    };

    ok(cli(), &["init", "--prefix", &prefix]);
    let created = ok(
        cli(),
        &[
            "tenant",
            "create",
            "acme",
            "--name",
            "Acme Rockets",
            "--tier",
            "enterprise",
            "--system-prompt",
            "You help {{tenant_name}}.",
            "--route",
            "fast=openai:gpt-4o-mini",
            "--route",
            "smart=openai:gpt-4o",
            "--tpm",
            "1000",
            "--degrade-at",
            "90",
            "--degrade",
            "smart=fast",
        ],
    );
    assert_eq!(stdout(&created), "created tenant `acme` (version 1)\n");

    let issued = ok(cli(), &["key", "create", "acme"]);
    let key = stdout(&issued).trim_end().to_owned();
    assert!(key.starts_with("tg_"), "{key}");
    assert!(!stderr(&issued).contains(&key), "the key is printed once");

    let store = DynamoStore::emulator(&endpoint, TableNames::with_prefix(&prefix));
    let acme = TenantId::parse("acme").unwrap();
    let now = chrono::Utc::now();
    assert_eq!(authenticate(&store, Some(&key), now).await.unwrap().0, acme);

    let prefix_of_key = key.split('_').nth(1).unwrap();
    let listed = stdout(&ok(cli(), &["key", "list", "acme"]));
    assert!(listed.contains(prefix_of_key), "{listed}");
    assert!(!listed.contains(&key));

    let shown: TenantConfig =
        serde_json::from_str(&stdout(&ok(cli(), &["tenant", "show", "acme"])))
            .expect("tenant show prints the configuration as JSON");
    assert_eq!(shown.tier, Tier::Enterprise);
    assert_eq!(shown.version, 1);
    assert_eq!(shown.routes.len(), 2);
    assert_eq!(shown.limits.tokens_per_minute, Some(1000));
    assert_eq!(shown.degradation.unwrap().threshold_percent, 90);

    ok(cli(), &["key", "revoke", prefix_of_key]);
    assert_eq!(
        authenticate(&store, Some(&key), now)
            .await
            .unwrap_err()
            .status(),
        401
    );

    // Each change is in the tenant's audit log on DynamoDB, newest first, without the key.
    let audit = stdout(&ok(cli(), &["audit", "--tenant", "acme"]));
    let actions: Vec<String> = audit
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["action"].to_string())
        .collect();
    assert_eq!(
        actions[..3],
        ["\"key.revoke\"", "\"key.create\"", "\"tenant.create\""],
        "{audit}"
    );
    assert!(!audit.contains(&key));

    // A metering failure replayed twice is recorded once.
    let event = crate::usage_event(
        RequestId::from_upstream("cli-replay-1"),
        "acme",
        chrono::Utc::now(),
        rust_decimal::Decimal::new(27, 6),
    );
    let line = render_metering_failure(&event, "store unavailable").to_string();
    let replay = |input: String| {
        let mut child = cli()
            .args(["replay", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out)
    };
    assert!(replay(format!("{line}\n")).contains("replayed: 1\n"));
    assert!(replay(format!("{line}\n")).contains("already recorded: 1\n"));
    assert_eq!(
        store.usage_event(&event.request_id).await.unwrap(),
        Some(event)
    );
}
