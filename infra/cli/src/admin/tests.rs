//! The operator commands against the embedded store, driven through the same argument parser
//! the binary uses: each test reads like a shell session.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Cursor;

use clap::{CommandFactory, Parser};
use rust_decimal_macros::dec;
use tollgate::adapters::emf::render_metering_failure;
use tollgate::adapters::memory::MemoryStore;
use tollgate::domain::ids::{RequestId, TenantId};
use tollgate::domain::tenant::{ProviderKind, TenantConfig, Tier};
use tollgate::domain::usage::{TokenUsage, UsageEvent};
use tollgate::ports::store::{Catalog, TenantAdmin, TenantConfigSource, UsageSink};
use tollgate::service::caller::authenticate;

use super::parse::TierArg;
use super::replay::{ReplayReport, replay};
use super::{AdminCommand, Output, UsageError, execute};

#[derive(Parser)]
struct TestCli {
    #[command(subcommand)]
    command: AdminCommand,
}

fn parse(args: &[&str]) -> Result<AdminCommand, clap::Error> {
    TestCli::try_parse_from(std::iter::once("tollgate").chain(args.iter().copied()))
        .map(|cli| cli.command)
}

/// Runs one command line against `store`; a clap error panics (use `parse` to test those).
async fn run(store: &MemoryStore, args: &[&str]) -> anyhow::Result<Output> {
    let command = parse(args).unwrap_or_else(|e| panic!("{args:?} did not parse: {e}"));
    execute(store, command).await
}

async fn ok(store: &MemoryStore, args: &[&str]) -> Output {
    run(store, args)
        .await
        .unwrap_or_else(|e| panic!("{args:?} failed: {e:#}"))
}

async fn err(store: &MemoryStore, args: &[&str]) -> anyhow::Error {
    match run(store, args).await {
        Ok(out) => panic!("{args:?} succeeded: {}", out.stdout),
        Err(e) => e,
    }
}

/// A clap usage error (exit code 2), with its message.
fn usage_error(args: &[&str]) -> String {
    match parse(args) {
        Ok(command) => panic!("{args:?} parsed: {command:?}"),
        Err(e) => {
            assert_eq!(e.exit_code(), 2, "{e}");
            e.to_string()
        }
    }
}

fn tenant(id: &str) -> TenantId {
    TenantId::parse(id).unwrap()
}

async fn config(store: &MemoryStore, id: &str) -> TenantConfig {
    (*store.tenant_config(&tenant(id)).await.unwrap().unwrap()).clone()
}

const ACME: &[&str] = &[
    "tenant",
    "create",
    "acme",
    "--name",
    "Acme Rockets",
    "--tier",
    "pro",
    "--system-prompt",
    "You help {{tenant_name}} with {{product}}. Today is {{date}}.",
    "--var",
    "product=rockets",
    "--route",
    "gpt-4o=openai:gpt-4o",
    "--route",
    "gpt-4o-mini=openai:gpt-4o-mini",
    "--route",
    "claude=anthropic:claude-haiku-4-5",
    "--cache",
    "on",
    "--cache-ttl",
    "600",
    "--tpm",
    "50000",
    "--degrade-at",
    "80",
    "--degrade",
    "gpt-4o=gpt-4o-mini",
];

async fn with_acme() -> MemoryStore {
    let store = MemoryStore::new();
    ok(&store, ACME).await;
    store
}

// ---------------------------------------------------------------------------------------------
// tenant
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_created_tenant_has_every_setting_the_flags_gave() {
    let store = MemoryStore::new();
    let out = ok(&store, ACME).await;
    assert_eq!(out.stdout, "created tenant `acme` (version 1)\n");
    assert!(out.stderr.is_empty(), "{:?}", out.stderr);

    let c = config(&store, "acme").await;
    assert_eq!(c.display_name, "Acme Rockets");
    assert_eq!(c.tier, Tier::Pro);
    assert_eq!(c.version, 1);
    assert_eq!(c.prompt_variables["product"], "rockets");
    assert_eq!(c.routes.len(), 3);
    assert_eq!(c.routes["claude"].provider, ProviderKind::Anthropic);
    assert!(c.response_cache.enabled);
    assert_eq!(c.response_cache.ttl_seconds, 600);
    assert_eq!(c.limits.tokens_per_minute, Some(50_000));
    assert_eq!(c.limits.requests_per_minute, None);
    let policy = c.degradation.unwrap();
    assert_eq!(policy.threshold_percent, 80);
    assert_eq!(policy.routes["gpt-4o"], "gpt-4o-mini");
    assert!(!c.disabled);
}

#[tokio::test]
async fn show_prints_the_stored_configuration_as_json() {
    let store = with_acme().await;
    let out = ok(&store, &["tenant", "show", "acme"]).await;
    let shown: TenantConfig = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(shown.tenant_id, tenant("acme"));
    assert_eq!(shown.routes, config(&store, "acme").await.routes);
    assert!(out.stdout.contains("\n  \""), "pretty-printed");

    let e = err(&store, &["tenant", "show", "nobody"]).await;
    assert!(e.to_string().contains("no tenant `nobody`"), "{e}");
}

#[tokio::test]
async fn list_shows_one_row_per_tenant_with_routes_disabled_and_version() {
    let store = with_acme().await;
    ok(
        &store,
        &[
            "tenant",
            "create",
            "globex",
            "--name",
            "Globex",
            "--tier",
            "free",
            "--route",
            "mini=openai:gpt-4o-mini",
            "--disabled",
        ],
    )
    .await;
    let out = ok(&store, &["tenant", "list"]).await;
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", out.stdout);
    let words = |l: &str| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
    assert_eq!(
        words(lines[0]),
        ["ID", "NAME", "TIER", "ROUTES", "DISABLED", "VERSION"]
    );
    assert_eq!(
        words(lines[1]),
        ["acme", "Acme", "Rockets", "pro", "3", "no", "1"]
    );
    assert_eq!(
        words(lines[2]),
        ["globex", "Globex", "free", "1", "yes", "1"]
    );
}

#[tokio::test]
async fn an_existing_tenant_cannot_be_created_again() {
    let store = with_acme().await;
    let e = err(&store, ACME).await;
    assert!(e.to_string().contains("already exists"), "{e}");
    assert_eq!(config(&store, "acme").await.version, 1);
}

#[tokio::test]
async fn update_changes_only_what_its_flags_name_and_bumps_the_version() {
    let store = with_acme().await;
    let before = config(&store, "acme").await;
    let out = ok(
        &store,
        &[
            "tenant",
            "update",
            "acme",
            "--rpm",
            "99",
            "--reset-limit",
            "tpm",
            "--route",
            "sonnet=anthropic:claude-sonnet-4-5",
            "--remove-route",
            "claude",
            "--var",
            "tone=brief",
        ],
    )
    .await;
    assert_eq!(out.stdout, "updated tenant `acme` (version 1 -> 2)\n");
    let after = config(&store, "acme").await;
    assert_eq!(after.version, 2);
    assert_eq!(after.limits.requests_per_minute, Some(99));
    assert_eq!(after.limits.tokens_per_minute, None);
    assert!(after.routes.contains_key("sonnet") && !after.routes.contains_key("claude"));
    assert_eq!(after.prompt_variables.len(), 2);
    // Everything not named is as it was.
    assert_eq!(after.display_name, before.display_name);
    assert_eq!(after.tier, before.tier);
    assert_eq!(after.system_prompt, before.system_prompt);
    assert_eq!(after.response_cache, before.response_cache);
    assert_eq!(after.degradation, before.degradation);
    assert_eq!(after.routes["gpt-4o"], before.routes["gpt-4o"]);
}

#[tokio::test]
async fn the_structured_output_retry_policy_is_switched_by_update() {
    let store = with_acme().await;
    let policy = config(&store, "acme").await.structured_output;
    assert!(!policy.retry_on_invalid, "off by default");
    for (flag, expected) in [("on", true), ("off", false)] {
        let args = ["tenant", "update", "acme", "--retry-invalid-output", flag];
        ok(&store, &args).await;
        let policy = config(&store, "acme").await.structured_output;
        assert_eq!(policy.retry_on_invalid, expected);
    }
}

#[tokio::test]
async fn fallbacks_are_set_in_order_kept_when_a_route_is_restated_and_cleared() {
    let store = with_acme().await;
    let args = [
        "tenant",
        "update",
        "acme",
        "--fallback",
        "gpt-4o=anthropic:claude-haiku-4-5",
        "--fallback",
        "gpt-4o=openai:gpt-4o-mini",
    ];
    ok(&store, &args).await;
    let chain: Vec<String> = config(&store, "acme").await.routes["gpt-4o"]
        .fallbacks
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(chain, ["anthropic/claude-haiku-4-5", "openai/gpt-4o-mini"]);
    // Re-stating the route's own target keeps its chain; a new target starts without one.
    ok(
        &store,
        &[
            "tenant",
            "update",
            "acme",
            "--route",
            "gpt-4o=openai:gpt-4o",
        ],
    )
    .await;
    assert_eq!(
        config(&store, "acme").await.routes["gpt-4o"]
            .fallbacks
            .len(),
        2
    );
    ok(
        &store,
        &["tenant", "update", "acme", "--clear-fallbacks", "gpt-4o"],
    )
    .await;
    assert!(
        config(&store, "acme").await.routes["gpt-4o"]
            .fallbacks
            .is_empty()
    );
    // A fine-tuned target is refused by the configuration's own check, naming the route.
    let args = [
        "tenant",
        "update",
        "acme",
        "--fallback",
        "gpt-4o=openai:ft:gpt-4o-mini:x::y",
    ];
    let e = err(&store, &args).await;
    assert!(format!("{e:#}").contains("fine-tuned"), "{e:#}");
    let e = err(
        &store,
        &[
            "tenant",
            "update",
            "acme",
            "--fallback",
            "nope=openai:gpt-4o",
        ],
    )
    .await;
    assert!(e.to_string().contains("no route `nope`"), "{e}");
}

#[tokio::test]
async fn bedrock_profiles_are_set_checked_and_removed() {
    let store = with_acme().await;
    let model = "us.anthropic.claude-sonnet-4-5-20250929-v1:0";
    let arn = "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/acme01";
    ok(
        &store,
        &[
            "tenant",
            "update",
            "acme",
            "--bedrock-profile",
            &format!("{model}={arn}"),
        ],
    )
    .await;
    assert_eq!(config(&store, "acme").await.bedrock_profiles[model], arn);
    let bad = format!("{model}=arn:aws:bedrock:us-east-1:123456789012:inference-profile/x");
    let e = parse(&["tenant", "update", "acme", "--bedrock-profile", &bad])
        .expect_err("a system-defined profile is refused");
    assert!(
        e.to_string().contains("application inference profile"),
        "{e}"
    );
    ok(
        &store,
        &[
            "tenant",
            "update",
            "acme",
            "--remove-bedrock-profile",
            model,
        ],
    )
    .await;
    assert!(config(&store, "acme").await.bedrock_profiles.is_empty());
}

#[tokio::test]
async fn an_update_that_changes_nothing_keeps_the_version() {
    let store = with_acme().await;
    let out = ok(&store, &["tenant", "update", "acme", "--tier", "pro"]).await;
    assert_eq!(out.stdout, "tenant `acme` unchanged (version 1)\n");
    assert_eq!(config(&store, "acme").await.version, 1);
}

#[tokio::test]
async fn an_update_without_flags_is_a_usage_error() {
    let store = with_acme().await;
    let e = err(&store, &["tenant", "update", "acme"]).await;
    assert!(e.downcast_ref::<UsageError>().is_some(), "{e}");
    assert!(e.to_string().contains("nothing to change"));
}

#[tokio::test]
async fn degradation_can_be_changed_and_removed() {
    let store = with_acme().await;
    ok(
        &store,
        &[
            "tenant",
            "update",
            "acme",
            "--degrade-at",
            "90",
            "--degrade",
            "claude=gpt-4o-mini",
        ],
    )
    .await;
    let policy = config(&store, "acme").await.degradation.unwrap();
    assert_eq!(policy.threshold_percent, 90);
    assert_eq!(policy.routes.len(), 2);

    ok(&store, &["tenant", "update", "acme", "--no-degradation"]).await;
    assert_eq!(config(&store, "acme").await.degradation, None);

    // A threshold alone maps nothing.
    let e = err(&store, &["tenant", "update", "acme", "--degrade-at", "50"]).await;
    assert!(e.downcast_ref::<UsageError>().is_some(), "{e}");

    // Without a policy, a mapping alone does not say when to degrade.
    let e = err(
        &store,
        &[
            "tenant",
            "update",
            "acme",
            "--degrade",
            "gpt-4o=gpt-4o-mini",
        ],
    )
    .await;
    assert!(e.to_string().contains("--degrade-at"), "{e}");
}

#[tokio::test]
async fn disable_and_enable_flip_the_flag_once() {
    let store = with_acme().await;
    let out = ok(&store, &["tenant", "disable", "acme"]).await;
    assert_eq!(out.stdout, "tenant `acme` disabled (version 2)\n");
    assert!(config(&store, "acme").await.disabled);
    let again = ok(&store, &["tenant", "disable", "acme"]).await;
    assert_eq!(again.stdout, "tenant `acme` is already disabled\n");
    assert_eq!(config(&store, "acme").await.version, 2);

    ok(&store, &["tenant", "enable", "acme"]).await;
    let c = config(&store, "acme").await;
    assert!(!c.disabled);
    assert_eq!(c.version, 3);

    let e = err(&store, &["tenant", "disable", "nobody"]).await;
    assert!(e.to_string().contains("no tenant `nobody`"), "{e}");
}

#[tokio::test]
async fn a_degradation_to_a_model_the_tenant_lacks_is_refused_and_nothing_is_stored() {
    let store = MemoryStore::new();
    let mut args = ACME.to_vec();
    let last = args.len() - 1;
    args[last] = "gpt-4o=gpt-5";
    let e = err(&store, &args).await;
    let message = format!("{e:#}");
    assert!(
        message.contains("tenant `acme` would be invalid"),
        "{message}"
    );
    assert!(
        message.contains("`gpt-5` is not one of the tenant's models"),
        "{message}"
    );
    assert!(
        e.downcast_ref::<UsageError>().is_none(),
        "a validation error: exit 1"
    );
    assert!(
        store
            .tenant_config(&tenant("acme"))
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn removing_a_route_that_degradation_uses_is_refused() {
    let store = with_acme().await;
    let e = err(
        &store,
        &["tenant", "update", "acme", "--remove-route", "gpt-4o-mini"],
    )
    .await;
    assert!(format!("{e:#}").contains("degradation maps `gpt-4o` to `gpt-4o-mini`"));
    assert_eq!(config(&store, "acme").await.version, 1);

    let e = err(
        &store,
        &["tenant", "update", "acme", "--remove-route", "nope"],
    )
    .await;
    assert!(e.to_string().contains("no route `nope`"), "{e}");
}

#[tokio::test]
async fn system_prompts_are_parsed_and_their_variables_checked() {
    let store = with_acme().await;
    let e = err(
        &store,
        &["tenant", "update", "acme", "--system-prompt", "Hi {{who}}"],
    )
    .await;
    assert!(format!("{e:#}").contains("`{{who}}`"), "{e:#}");
    let e = err(
        &store,
        &["tenant", "update", "acme", "--system-prompt", "Hi {{who"],
    )
    .await;
    assert!(
        format!("{e:#}").contains("invalid system prompt: unclosed"),
        "{e:#}"
    );
    // Clearing a variable the prompt still uses is refused too.
    let e = err(
        &store,
        &["tenant", "update", "acme", "--clear-var", "product"],
    )
    .await;
    assert!(format!("{e:#}").contains("`{{product}}`"), "{e:#}");

    let dir = std::env::temp_dir().join(format!("tollgate-prompt-{}", std::process::id()));
    std::fs::write(&dir, "From a file, for {{tenant_id}}.").unwrap();
    ok(
        &store,
        &[
            "tenant",
            "update",
            "acme",
            "--system-prompt-file",
            dir.to_str().unwrap(),
            "--clear-var",
            "product",
        ],
    )
    .await;
    let _ = std::fs::remove_file(&dir);
    let c = config(&store, "acme").await;
    assert_eq!(c.system_prompt.source(), "From a file, for {{tenant_id}}.");
    assert!(c.prompt_variables.is_empty());
}

#[test]
fn malformed_flags_are_usage_errors_that_say_what_was_expected() {
    let create = |extra: &[&'static str]| {
        let mut args = vec!["tenant", "create", "t1", "--name", "T", "--tier", "free"];
        args.extend_from_slice(extra);
        usage_error(&args)
    };
    assert!(create(&["--route", "fast"]).contains("expected LOGICAL=PROVIDER:MODEL"));
    assert!(create(&["--route", "fast=azure:gpt-4o"]).contains("unknown provider `azure`"));
    // No route at all.
    assert!(create(&[]).contains("--route"));
    // A threshold without mappings, and mappings without a threshold.
    let r = ["--route", "a=openai:gpt-4o"];
    assert!(create(&[r[0], r[1], "--degrade-at", "80"]).contains("--degrade"));
    assert!(create(&[r[0], r[1], "--degrade", "a=b"]).contains("--degrade-at"));
    assert!(create(&[r[0], r[1], "--degrade-at", "0", "--degrade", "a=b"]).contains("0"));
    assert!(create(&[r[0], r[1], "--price-override", "a=1,-2"]).contains("negative"));
    assert!(create(&[r[0], r[1], "--var", "no-equals"]).contains("KEY=VALUE"));
    assert!(
        usage_error(&["tenant", "create", "t1", "--name", "T", "--tier", "gold"]).contains("gold")
    );
    assert!(
        create(&[
            r[0],
            r[1],
            "--system-prompt",
            "x",
            "--system-prompt-file",
            "y"
        ])
        .contains("cannot be used with")
    );
    assert!(usage_error(&["tenant", "show", "Bad Id"]).contains("invalid tenant id"));
    assert!(usage_error(&["key", "revoke", "tg_short"]).contains("key prefix"));
    assert!(
        usage_error(&[
            "price", "set", "openai", "m", "--input", "-1", "--output", "1"
        ])
        .contains("negative")
    );
    assert!(usage_error(&["quota", "set", "openai", "m", "--tpm", "0"]).contains("0"));
}

#[test]
fn a_limit_above_ten_to_the_fifteen_is_a_usage_error_naming_its_flag() {
    let over = (tollgate::domain::limits::MAX_LIMIT + 1).to_string();
    let max = tollgate::domain::limits::MAX_LIMIT.to_string();
    for flag in ["--tpm", "--rpm", "--daily-tokens", "--storage-chunks"] {
        let e = usage_error(&["tenant", "update", "acme", flag, &over]);
        assert!(e.contains(flag) && e.contains(&over), "{e}");
        // 2^63 would be negative once the limiter makes it a signed counter.
        let wraps = (1_u64 << 63).to_string();
        assert!(usage_error(&["tenant", "update", "acme", flag, &wraps]).contains(flag));
        assert!(parse(&["tenant", "update", "acme", flag, &max]).is_ok());
    }
    let e = usage_error(&["quota", "set", "openai", "m", "--tpm", &over]);
    assert!(e.contains("--tpm"), "{e}");
}

#[tokio::test]
async fn a_flag_that_sets_and_removes_the_same_name_is_a_usage_error() {
    let store = with_acme().await;
    for args in [
        &[
            "tenant",
            "update",
            "acme",
            "--var",
            "x=1",
            "--clear-var",
            "x",
        ][..],
        &[
            "tenant",
            "update",
            "acme",
            "--tpm",
            "5",
            "--reset-limit",
            "tpm",
        ][..],
        &[
            "tenant",
            "update",
            "acme",
            "--route",
            "a=openai:x",
            "--route",
            "a=openai:y",
        ][..],
    ] {
        let e = err(&store, args).await;
        assert!(e.downcast_ref::<UsageError>().is_some(), "{args:?}: {e}");
    }
}

#[tokio::test]
async fn a_fine_tuned_route_warns_until_it_is_registered_and_ownership_is_not_taken_silently() {
    let store = with_acme().await;
    ok(
        &store,
        &[
            "tenant",
            "create",
            "globex",
            "--name",
            "G",
            "--tier",
            "free",
            "--route",
            "m=openai:gpt-4o-mini",
        ],
    )
    .await;
    let model = "ft:gpt-4o-mini-2024-07-18:acme::x1";
    let route = format!("support=openai:{model}");
    let out = ok(&store, &["tenant", "update", "acme", "--route", &route]).await;
    let notes = out.stderr.join("\n");
    assert!(notes.contains("registered to no tenant"), "{notes}");
    assert!(notes.contains("no price"), "{notes}");

    let register = [
        "tenant",
        "register-fine-tuned",
        "acme",
        "--provider",
        "openai",
        "--model",
        model,
    ];
    ok(&store, &register).await;
    assert_eq!(
        store
            .fine_tuned_owner(ProviderKind::Openai, model)
            .await
            .unwrap(),
        Some(tenant("acme"))
    );
    let price = format!("{model}=0.30,1.20");
    let out = ok(
        &store,
        &["tenant", "update", "acme", "--price-override", &price],
    )
    .await;
    assert!(out.stderr.is_empty(), "{:?}", out.stderr);

    let steal = [
        "tenant",
        "register-fine-tuned",
        "globex",
        "--provider",
        "openai",
        "--model",
        model,
    ];
    let e = err(&store, &steal).await;
    assert!(e.to_string().contains("--reassign"), "{e}");
    let mut reassign = steal.to_vec();
    reassign.push("--reassign");
    ok(&store, &reassign).await;
    assert_eq!(
        store
            .fine_tuned_owner(ProviderKind::Openai, model)
            .await
            .unwrap(),
        Some(tenant("globex"))
    );
    // The move is in both tenants' audit logs, with the owner before and after.
    use tollgate::ports::store::AuditLog;
    for log in ["acme", "globex"] {
        let page = store.audit_page(Some(&tenant(log)), None, 1).await.unwrap();
        let record = &page.records[0];
        assert_eq!(
            record.action,
            tollgate::domain::audit::AuditAction::FineTunedRegister,
            "{log}"
        );
        assert_eq!(record.before, Some(serde_json::json!({"owner": "acme"})));
        assert_eq!(record.after, Some(serde_json::json!({"owner": "globex"})));
    }
}

// ---------------------------------------------------------------------------------------------
// key
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_key_carries_its_name_scopes_and_expiry_and_a_rotation_prints_its_successor_once() {
    let store = with_acme().await;
    let out = ok(
        &store,
        &[
            "key",
            "create",
            "acme",
            "--name",
            "billing",
            "--scope",
            "chat",
            "--scope",
            "usage:read",
            "--expires-in",
            "7d",
        ],
    )
    .await;
    let key = out.stdout.trim_end().to_owned();
    let notes = out.stderr.join("\n");
    assert!(notes.contains("name `billing`"), "{notes}");
    assert!(notes.contains("scopes chat,usage:read"), "{notes}");
    assert!(notes.contains("expires 20"), "{notes}");
    let prefix = key.split('_').nth(1).unwrap().to_owned();
    let list = ok(&store, &["key", "list", "acme"]).await;
    let row: Vec<&str> = list
        .stdout
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap()
        .split_whitespace()
        .collect();
    // PREFIX NAME SCOPES CREATED(3) EXPIRES(3) LAST-USED(1: never) STATE
    assert_eq!(row.len(), 11, "{row:?}");
    assert_eq!(
        (row[1], row[2], row[9], row[10]),
        ("billing", "chat,usage:read", "-", "live")
    );

    let rotated = ok(&store, &["key", "rotate", &prefix, "--overlap", "1h"]).await;
    let successor = rotated.stdout.trim_end().to_owned();
    assert!(
        successor.starts_with("tg_") && successor != key,
        "{successor}"
    );
    let notes = rotated.stderr.join("\n");
    assert!(notes.contains("keeps working until"), "{notes}");
    assert!(!notes.contains(&successor), "the new key is printed once");
    let keys = store.keys_for(&tenant("acme")).await.unwrap();
    let old = keys.iter().find(|k| k.prefix.as_str() == prefix).unwrap();
    let new = keys
        .iter()
        .find(|k| successor.contains(k.prefix.as_str()))
        .unwrap();
    let left = old.expires_at.unwrap() - chrono::Utc::now();
    assert!(left <= chrono::Duration::hours(1) && left > chrono::Duration::minutes(59));
    assert_eq!(
        (new.name.as_deref(), &new.scopes),
        (Some("billing"), &old.scopes)
    );
    assert_eq!(new.expires_at, None);

    assert!(usage_error(&["key", "create", "acme", "--scope", "admin"]).contains("unknown scope"));
    assert!(usage_error(&["key", "create", "acme", "--expires-in", "7w"]).contains("span"));
    assert!(usage_error(&["key", "create", "acme", "--name", ""]).contains("empty"));
    let e = err(&store, &["key", "rotate", &prefix, "--overlap", "31d"]).await;
    assert!(e.to_string().contains("overlap"), "{e}");
    let e = err(&store, &["key", "rotate", "AAAAAAAAAAAA"]).await;
    assert!(e.to_string().contains("no key with prefix"), "{e}");
}

#[tokio::test]
async fn a_created_key_is_printed_once_authenticates_and_stops_after_revocation() {
    let store = with_acme().await;
    let out = ok(&store, &["key", "create", "acme"]).await;
    let key = out.stdout.trim_end().to_owned();
    assert_eq!(out.stdout, format!("{key}\n"), "stdout holds the key alone");
    let notes = out.stderr.join("\n");
    assert!(notes.contains("only time the key is shown"), "{notes}");
    assert!(!notes.contains(&key), "the key is printed once");
    assert_eq!(
        authenticate(&store, Some(&key), chrono::Utc::now())
            .await
            .unwrap()
            .0,
        tenant("acme")
    );

    let prefix = key.split('_').nth(1).unwrap().to_owned();
    let list = ok(&store, &["key", "list", "acme"]).await;
    assert!(list.stdout.starts_with("PREFIX"), "{}", list.stdout);
    assert!(list.stdout.contains(&prefix));
    assert!(!list.stdout.contains(&key), "never the key");
    let hash = store.keys_for(&tenant("acme")).await.unwrap()[0]
        .hash
        .to_hex();
    assert!(!list.stdout.contains(&hash), "never the hash");
    assert!(
        list.stdout
            .lines()
            .nth(1)
            .unwrap()
            .trim_end()
            .ends_with("live"),
        "{}",
        list.stdout
    );

    let revoked = ok(&store, &["key", "revoke", &prefix]).await;
    assert_eq!(
        revoked.stdout,
        format!("revoked key {prefix} of tenant `acme`\n")
    );
    let refused = authenticate(&store, Some(&key), chrono::Utc::now())
        .await
        .unwrap_err();
    assert_eq!(refused.status(), 401);
    let list = ok(&store, &["key", "list", "acme"]).await;
    assert!(list.stdout.lines().nth(1).unwrap().ends_with("revoked"));
    let again = ok(&store, &["key", "revoke", &format!("tg_{prefix}")]).await;
    assert!(again.stdout.contains("already revoked"));
}

#[tokio::test]
async fn keys_are_refused_for_unknown_tenants_and_unknown_prefixes() {
    let store = with_acme().await;
    let e = err(&store, &["key", "create", "nobody"]).await;
    assert!(e.to_string().contains("no tenant `nobody`"), "{e}");
    assert!(store.keys_for(&tenant("nobody")).await.unwrap().is_empty());
    let e = err(&store, &["key", "list", "nobody"]).await;
    assert!(e.to_string().contains("no tenant `nobody`"), "{e}");
    let e = err(&store, &["key", "revoke", "abcdefghijkl"]).await;
    assert_eq!(e.to_string(), "no key with prefix abcdefghijkl");
}

// ---------------------------------------------------------------------------------------------
// price and quota
// ---------------------------------------------------------------------------------------------

fn row<'a>(table: &'a str, provider: &str, model: &str) -> Vec<&'a str> {
    table
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|cells| cells.len() > 1 && cells[0] == provider && cells[1] == model)
        .unwrap_or_else(|| panic!("no row for {provider} {model} in\n{table}"))
}

#[tokio::test]
async fn price_set_overrides_or_adds_and_list_marks_the_operator_entries() {
    let store = MemoryStore::new();
    let before = ok(&store, &["price", "list"]).await;
    assert_eq!(
        row(&before.stdout, "openai", "gpt-4o")[2..4],
        ["2.5", "10"],
        "{}",
        before.stdout
    );
    assert_eq!(
        *row(&before.stdout, "openai", "gpt-4o").last().unwrap(),
        "bundled"
    );

    ok(
        &store,
        &[
            "price",
            "set",
            "openai",
            "gpt-4o",
            "--input",
            "2.00",
            "--output",
            "8",
            "--cached-input",
            "1",
        ],
    )
    .await;
    ok(
        &store,
        &[
            "price",
            "set",
            "anthropic",
            "claude-new",
            "--input",
            "1",
            "--output",
            "5",
            "--cache-write",
            "1.25",
        ],
    )
    .await;
    let stored = store.prices().await.unwrap();
    assert_eq!(stored.len(), 2);
    assert!(
        stored
            .iter()
            .any(|e| e.model == "gpt-4o" && e.price.input == dec!(2.00))
    );

    let after = ok(&store, &["price", "list"]).await;
    // The bundled aliases of gpt-4o stay with it, at the operator's price.
    assert_eq!(
        row(&after.stdout, "openai", "gpt-4o")[2..],
        [
            "2",
            "8",
            "1",
            "-",
            "gpt-4o-2024-08-06,gpt-4o-2024-11-20",
            "operator",
            "(overrides",
            "bundled)"
        ]
    );
    assert_eq!(
        row(&after.stdout, "anthropic", "claude-new")[2..],
        ["1", "5", "-", "1.25", "-", "operator"]
    );
    assert_eq!(
        before.stdout.lines().count() + 1,
        after.stdout.lines().count(),
        "one model added, one replaced"
    );
}

#[tokio::test]
async fn a_snapshot_is_priced_only_once_an_entry_lists_it_as_an_alias() {
    let store = with_acme().await;
    let snapshot = "gpt-4.1-2025-04-14";
    let route = format!("snap=openai:{snapshot}");
    let out = ok(&store, &["tenant", "update", "acme", "--route", &route]).await;
    let notes = out.stderr.join("\n");
    assert!(
        notes.contains("no price") && notes.contains(snapshot),
        "{notes}"
    );

    let set = [
        "price", "set", "openai", "gpt-4.1", "--input", "2", "--output", "8", "--alias", snapshot,
    ];
    let out = ok(&store, &set).await;
    assert!(out.stdout.contains(snapshot), "{}", out.stdout);
    let stored = store.prices().await.unwrap();
    assert_eq!(stored[0].aliases, [snapshot]);
    let list = ok(&store, &["price", "list"]).await;
    assert_eq!(row(&list.stdout, "openai", "gpt-4.1")[6], snapshot);
    // The route's warning is gone: the snapshot has a price now.
    let route = format!("snap2=openai:{snapshot}");
    let out = ok(&store, &["tenant", "update", "acme", "--route", &route]).await;
    assert!(out.stderr.is_empty(), "{:?}", out.stderr);
}

#[tokio::test]
async fn a_price_entry_that_would_give_a_name_two_meanings_is_not_written() {
    let store = MemoryStore::new();
    let set = |model: &'static str, alias: &'static str| {
        [
            "price", "set", "openai", model, "--input", "1", "--output", "1", "--alias", alias,
        ]
    };
    ok(&store, &set("a-model", "a-snapshot")).await;
    // Another entry claiming the same alias: the gateway would refuse the whole catalog.
    let e = err(&store, &set("b-model", "a-snapshot")).await;
    assert!(e.downcast_ref::<UsageError>().is_some(), "{e}");
    assert!(e.to_string().contains("listed twice"), "{e}");
    // An alias naming another operator entry.
    let e = err(&store, &set("c-model", "a-model")).await;
    assert!(e.to_string().contains("entry of its own"), "{e}");
    assert_eq!(store.prices().await.unwrap().len(), 1);
    // Re-setting the same entry is not a conflict with itself.
    ok(&store, &set("a-model", "a-snapshot")).await;
    assert!(usage_error(&set("a-model", "two words")).contains("whitespace"));
}

#[tokio::test]
async fn quota_set_stores_the_upstream_quota_and_list_shows_it() {
    let store = MemoryStore::new();
    let empty = ok(&store, &["quota", "list"]).await;
    assert_eq!(empty.stdout, "");
    ok(
        &store,
        &["quota", "set", "openai", "gpt-4o", "--tpm", "800000"],
    )
    .await;
    ok(
        &store,
        &["quota", "set", "openai", "gpt-4o", "--tpm", "900000"],
    )
    .await;
    let quotas = store.upstream_quotas().await.unwrap();
    assert_eq!(quotas.len(), 1);
    assert_eq!(quotas[0].tokens_per_minute, 900_000);
    let out = ok(&store, &["quota", "list"]).await;
    let whole = row(&out.stdout, "openai", "gpt-4o");
    assert_eq!((whole[2], whole[3]), ("all", "900000"));

    // A key of the pool gets a quota of its own, beside the model's.
    let set = ok(
        &store,
        &[
            "quota", "set", "openai", "gpt-4o", "--key", "1", "--tpm", "30000",
        ],
    )
    .await;
    assert!(set.stdout.contains("through key 1"), "{}", set.stdout);
    let mut quotas = store.upstream_quotas().await.unwrap();
    quotas.sort_by_key(|q| q.key);
    assert_eq!(
        quotas
            .iter()
            .map(|q| (q.key, q.tokens_per_minute))
            .collect::<Vec<_>>(),
        [(None, 900_000), (Some(1), 30_000)]
    );
    let out = ok(&store, &["quota", "list"]).await;
    let lines: Vec<Vec<&str>> = out
        .stdout
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines,
        [
            ["openai", "gpt-4o", "all", "900000"],
            ["openai", "gpt-4o", "1", "30000"]
        ]
    );
    // Bedrock signs with the function's role: it has no keys to give quotas to.
    let e = err(
        &store,
        &["quota", "set", "bedrock", "m", "--key", "0", "--tpm", "1"],
    )
    .await;
    assert!(e.to_string().contains("no key pool"), "{e}");
    assert!(
        usage_error(&["quota", "set", "openai", "m", "--key", "-1", "--tpm", "1"]).contains("-1")
    );
}

// ---------------------------------------------------------------------------------------------
// replay
// ---------------------------------------------------------------------------------------------

fn event(request_id: &str) -> UsageEvent {
    UsageEvent {
        request_id: RequestId::from_upstream(request_id),
        tenant_id: tenant("acme"),
        created_at: chrono::Utc::now(),
        model_requested: "gpt-4o-mini".into(),
        model_served: "gpt-4o-mini".into(),
        provider: ProviderKind::Openai,
        usage: TokenUsage {
            prompt_tokens: 120,
            completion_tokens: 30,
            cached_tokens: 0,
            cache_write_tokens: 0,
        },
        cost_usd: dec!(0.000036),
        latency_ms: 420,
        provider_latency_ms: Some(400),
        success: true,
        error_type: None,
        streamed: false,
        cache_hit: false,
        attempts: 1,
        client_disconnected: false,
        degraded_from: None,
        quality_score: None,
        usage_source: Default::default(),
        user: None,
    }
}

fn failure_line(event: &UsageEvent) -> String {
    render_metering_failure(event, "store unavailable: timed out").to_string()
}

#[tokio::test]
async fn replay_records_new_events_skips_recorded_ones_and_reports_garbage_by_line() {
    let store = MemoryStore::new();
    let (new, old) = (event("req-new"), event("req-old"));
    store.record(&old, &[]).await.unwrap();
    let request_line = r#"{"_aws":{},"Function":"invoke","RequestId":"r9","Status":200}"#;
    let input = [
        failure_line(&new),
        failure_line(&old),
        "this is not a log line".to_owned(),
        request_line.to_owned(),
        String::new(),
    ]
    .join("\n");

    let report = replay(&store, Cursor::new(input)).await.unwrap();
    assert_eq!(
        report,
        ReplayReport {
            replayed: vec![(1, "req-new".into())],
            already_recorded: 1,
            skipped: 1,
            unreadable: vec![(3, "not a JSON log line".into())],
            unreadable_events: 0,
            stopped: None,
        }
    );
    let events = store.usage_events();
    assert_eq!(events.len(), 2);
    assert_eq!(events[1], new, "the event is recorded exactly as logged");

    let out = super::replay::render(&report);
    assert!(out.complete);
    assert!(out.stdout.contains("replayed: 1\n"), "{}", out.stdout);
    assert!(out.stdout.contains("already recorded: 1\n"));
    assert!(
        out.stdout
            .contains("unreadable: 1\n  line 3: not a JSON log line\n")
    );
}

#[tokio::test]
async fn replay_reads_cloudwatch_exports_and_is_idempotent() {
    let store = MemoryStore::new();
    let (a, b, c) = (event("req-a"), event("req-b"), event("req-c"));
    let wrapped_string =
        serde_json::json!({"timestamp": 1, "message": failure_line(&a)}).to_string();
    let wrapped_object =
        serde_json::json!({"message": render_metering_failure(&b, "x")}).to_string();
    let tailed = format!(
        "2026-11-26T10:00:00.000000+00:00 2026/11/26/[$LATEST]abc {}",
        failure_line(&c)
    );
    let plain_message = r#"{"message": "START RequestId: 1 Version: $LATEST"}"#;
    let input = [
        wrapped_string,
        wrapped_object,
        tailed,
        plain_message.to_owned(),
    ]
    .join("\n");

    let first = replay(&store, Cursor::new(input.clone())).await.unwrap();
    assert_eq!(first.replayed.len(), 3, "{first:?}");
    assert_eq!(first.skipped, 1);
    assert!(first.unreadable.is_empty());
    let second = replay(&store, Cursor::new(input)).await.unwrap();
    assert!(second.replayed.is_empty());
    assert_eq!(second.already_recorded, 3);
    assert_eq!(store.usage_events().len(), 3);
}

#[tokio::test]
async fn a_usage_event_that_does_not_decode_fails_the_replay() {
    let store = MemoryStore::new();
    let mut broken = render_metering_failure(&event("req-x"), "x");
    broken["UsageEvent"]["cost_usd"] = serde_json::json!("not money");
    let whole = failure_line(&event("req-y"));
    let truncated = &whole[..whole.len() / 2];
    let input = format!("{broken}\n{truncated}\n");
    let report = replay(&store, Cursor::new(input)).await.unwrap();
    assert_eq!(report.unreadable.len(), 2);
    assert_eq!(report.unreadable_events, 2);
    assert!(
        report.unreadable[0]
            .1
            .contains("UsageEvent does not decode")
    );
    let out = super::replay::render(&report);
    assert!(!out.complete, "an event may be lost: exit non-zero");
    assert!(store.usage_events().is_empty());
}

// ---------------------------------------------------------------------------------------------
// help
// ---------------------------------------------------------------------------------------------

#[test]
fn the_command_tree_is_consistent() {
    crate::Cli::command().debug_assert();
}

#[test]
fn every_operator_command_and_flag_explains_itself() {
    fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
        for arg in cmd.get_arguments() {
            let builtin = matches!(arg.get_id().as_str(), "help" | "version");
            if !builtin && arg.get_help().is_none() && arg.get_long_help().is_none() {
                missing.push(format!("{path} {}", arg.get_id()));
            }
        }
        for sub in cmd.get_subcommands() {
            let sub_path = format!("{path} {}", sub.get_name());
            if sub.get_name() != "help" && sub.get_about().is_none() {
                missing.push(sub_path.clone());
            }
            walk(sub, &sub_path, missing);
        }
    }
    let cli = crate::Cli::command();
    let mut missing = Vec::new();
    for name in ["tenant", "key", "price", "quota", "replay"] {
        let cmd = cli.find_subcommand(name).unwrap();
        assert!(cmd.get_about().is_some(), "{name}");
        walk(cmd, name, &mut missing);
    }
    assert!(missing.is_empty(), "without help: {missing:?}");
    assert!(
        cli.get_long_about()
            .unwrap()
            .to_string()
            .contains("Example:")
    );
}

#[test]
fn the_tier_help_states_the_limits_the_domain_applies() {
    use clap::ValueEnum;
    let human = |n: u64| match n {
        n if n >= 1_000_000 && n % 1_000_000 == 0 => format!("{}M", n / 1_000_000),
        n if n >= 10_000 && n % 1_000 == 0 => format!("{}k", n / 1_000),
        n if n >= 1_000 => format!("{},{:03}", n / 1_000, n % 1_000),
        n => n.to_string(),
    };
    for tier in TierArg::value_variants() {
        let limits = Tier::from(*tier).limits();
        let expected = format!(
            "{} tokens/min, {} requests/min, {} tokens/day.",
            human(limits.tokens_per_minute),
            human(limits.requests_per_minute),
            human(limits.tokens_per_day)
        );
        let help = tier
            .to_possible_value()
            .unwrap()
            .get_help()
            .unwrap()
            .to_string();
        assert_eq!(help, expected.trim_end_matches('.'), "{tier:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// budgets and end users
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn tenant_update_sets_resets_and_lifts_dollar_budgets() {
    use tollgate::domain::budget::BudgetCap;
    let store = with_acme().await;
    ok(
        &store,
        &[
            "tenant",
            "update",
            "acme",
            "--budget-daily-usd",
            "12.50",
            "--budget-monthly-usd",
            "unlimited",
            "--budget-alert-at",
            "75",
        ],
    )
    .await;
    let c = config(&store, "acme").await;
    assert_eq!(c.limits.budget_daily_usd, Some(BudgetCap::Usd(dec!(12.5))));
    assert_eq!(c.limits.budget_monthly_usd, Some(BudgetCap::Unlimited));
    let budget = c.budget();
    assert_eq!(budget.daily_usd, Some(dec!(12.5)));
    assert_eq!(
        budget.monthly_usd, None,
        "unlimited lifts the Pro tier's default"
    );
    assert_eq!(budget.alert_at_percent, 75);
    // Reset: the tier's default applies again.
    ok(
        &store,
        &[
            "tenant",
            "update",
            "acme",
            "--reset-limit",
            "budget-daily-usd",
        ],
    )
    .await;
    let c = config(&store, "acme").await;
    assert_eq!(c.budget().daily_usd, Some(dec!(250)));
    // Nonsense is a usage error naming the flag's value.
    let message = usage_error(&["tenant", "update", "acme", "--budget-daily-usd=-3"]);
    assert!(message.contains("negative"), "{message}");
    let message = usage_error(&["tenant", "update", "acme", "--budget-alert-at", "0"]);
    assert!(message.contains("budget-alert-at"), "{message}");
    let e = err(
        &store,
        &[
            "tenant",
            "update",
            "acme",
            "--budget-daily-usd",
            "5",
            "--reset-limit",
            "budget-daily-usd",
        ],
    )
    .await;
    assert!(e.to_string().contains("both set and reset"), "{e}");
}

#[tokio::test]
async fn user_limits_set_show_and_clear_defaults_and_one_user() {
    use tollgate::domain::budget::BudgetCap;
    use tollgate::domain::profile::UserId;
    let store = with_acme().await;
    ok(
        &store,
        &[
            "user",
            "limits",
            "set",
            "acme",
            "*",
            "--tpm",
            "20000",
            "--daily-usd",
            "2",
        ],
    )
    .await;
    ok(
        &store,
        &[
            "user",
            "limits",
            "set",
            "acme",
            "vip@x.io",
            "--daily-usd",
            "unlimited",
        ],
    )
    .await;
    let c = config(&store, "acme").await;
    let vip = UserId::parse("vip@x.io").unwrap();
    assert_eq!(c.end_users.defaults.tokens_per_minute, Some(20_000));
    assert_eq!(c.end_users.limits_for(&vip).tokens_per_minute, Some(20_000));
    assert_eq!(
        c.end_users.limits_for(&vip).usd_per_day,
        Some(BudgetCap::Unlimited)
    );
    let anyone = UserId::parse("someone-new").unwrap();
    assert_eq!(c.end_users.limits_for(&anyone).daily_usd(), Some(dec!(2)));

    let shown = ok(&store, &["user", "limits", "show", "acme", "vip@x.io"]).await;
    assert!(shown.stdout.contains("unlimited"), "{}", shown.stdout);
    assert!(shown.stdout.contains("20000"), "{}", shown.stdout);
    let json = ok(
        &store,
        &["user", "limits", "show", "acme", "vip@x.io", "--json"],
    )
    .await;
    let value: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(value["limits"]["usd_per_day"], "unlimited");

    ok(&store, &["user", "limits", "clear", "acme", "vip@x.io"]).await;
    let c = config(&store, "acme").await;
    assert!(c.end_users.overrides.is_empty());
    assert_eq!(c.end_users.limits_for(&vip).daily_usd(), Some(dec!(2)));
    ok(&store, &["user", "limits", "clear", "acme", "*"]).await;
    assert!(config(&store, "acme").await.end_users.is_empty());

    // Bad input: an id that could not be a user, nothing to set, an unknown tenant.
    let message = usage_error(&["user", "limits", "set", "acme", "no spaces", "--tpm", "5"]);
    assert!(message.contains("invalid user id"), "{message}");
    let e = err(&store, &["user", "limits", "set", "acme", "bob"]).await;
    assert!(e.to_string().contains("nothing to set"), "{e}");
    let e = err(&store, &["user", "limits", "show", "nobody", "bob"]).await;
    assert!(e.to_string().contains("no tenant `nobody`"), "{e}");
}

#[tokio::test]
async fn usage_top_by_user_ranks_one_tenants_end_users_by_cost() {
    use tollgate::domain::profile::UserId;
    let store = with_acme().await;
    let at = chrono::DateTime::parse_from_rfc3339("2026-12-05T10:00:00Z")
        .unwrap()
        .with_timezone(&chrono::Utc);
    for (id, user, cost) in [
        ("r1", "ann", dec!(0.5)),
        ("r2", "ann", dec!(0.25)),
        ("r3", "bo", dec!(1)),
        ("r4", "cy", dec!(0.1)),
    ] {
        let mut e = event(id);
        e.created_at = at;
        e.cost_usd = cost;
        e.user = Some(UserId::parse(user).unwrap());
        store.record(&e, &[]).await.unwrap();
    }
    let out = ok(
        &store,
        &[
            "usage",
            "top",
            "--by",
            "user",
            "--tenant",
            "acme",
            "--from",
            "2026-12-05",
            "--to",
            "2026-12-06",
            "--limit",
            "2",
        ],
    )
    .await;
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", out.stdout);
    assert!(
        lines[1].contains("bo") && lines[1].contains("1"),
        "{}",
        out.stdout
    );
    assert!(
        lines[2].contains("ann") && lines[2].contains("0.75"),
        "{}",
        out.stdout
    );
    assert!(out.stderr[0].contains("3 end users"), "{:?}", out.stderr);
    let e = err(
        &store,
        &["usage", "top", "--by", "user", "--from", "2026-12-05"],
    )
    .await;
    assert!(e.to_string().contains("--tenant"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// audit
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn every_change_is_audited_with_actor_before_and_after_and_no_key_material() {
    use tollgate::domain::audit::AuditAction as A;
    use tollgate::ports::store::AuditLog;

    let store = with_acme().await;
    ok(&store, &["tenant", "update", "acme", "--tpm", "1234"]).await;
    ok(&store, &["tenant", "disable", "acme"]).await;
    ok(&store, &["tenant", "enable", "acme"]).await;
    ok(
        &store,
        &["user", "limits", "set", "acme", "ann", "--tpm", "100"],
    )
    .await;
    // Setting the same limits again changes nothing and records nothing.
    ok(
        &store,
        &["user", "limits", "set", "acme", "ann", "--tpm", "100"],
    )
    .await;
    ok(
        &store,
        &[
            "tenant",
            "register-fine-tuned",
            "acme",
            "--provider",
            "openai",
            "--model",
            "ft:gpt-4o-mini:acme::audit",
        ],
    )
    .await;
    let created = ok(&store, &["key", "create", "acme", "--name", "ci"]).await;
    let key = created.stdout.trim_end().to_owned();
    let prefix = key.split('_').nth(1).unwrap().to_owned();
    let rotated = ok(&store, &["key", "rotate", &prefix, "--overlap", "1h"]).await;
    let successor = rotated.stdout.trim_end().to_owned();
    ok(&store, &["key", "revoke", &prefix]).await;
    // Nothing changes, nothing is recorded.
    ok(&store, &["key", "revoke", &prefix]).await;
    ok(&store, &["tenant", "disable", "acme"]).await;
    ok(&store, &["tenant", "enable", "acme"]).await;
    ok(
        &store,
        &[
            "price", "set", "openai", "gpt-x", "--input", "1", "--output", "2",
        ],
    )
    .await;
    ok(
        &store,
        &[
            "quota", "set", "openai", "gpt-x", "--key", "1", "--tpm", "9",
        ],
    )
    .await;

    let acme = store
        .audit_page(Some(&tenant("acme")), None, 100)
        .await
        .unwrap();
    let actions: Vec<A> = acme.records.iter().rev().map(|r| r.action).collect();
    assert_eq!(
        actions,
        [
            A::TenantCreate,
            A::TenantUpdate,
            A::TenantDisable,
            A::TenantEnable,
            A::TenantUpdate,
            A::FineTunedRegister,
            A::KeyCreate,
            A::KeyRotate,
            A::KeyRevoke,
            A::TenantDisable,
            A::TenantEnable,
        ]
    );
    let users = &acme.records[acme.records.len() - 5];
    assert_eq!(users.action, A::TenantUpdate);
    assert!(users.before.as_ref().unwrap()["end_users"].is_null());
    assert_eq!(
        users.after.as_ref().unwrap()["end_users"]["overrides"]["ann"]["tokens_per_minute"],
        100
    );
    let registered = &acme.records[acme.records.len() - 6];
    assert_eq!(
        registered.resource,
        "fine_tuned/openai/ft:gpt-4o-mini:acme::audit"
    );
    assert_eq!(registered.after, Some(serde_json::json!({"owner": "acme"})));
    assert_eq!(registered.before, None);
    let update = &acme.records[acme.records.len() - 2];
    assert_eq!(update.action, A::TenantUpdate);
    assert_eq!(update.resource, "tenant/acme");
    assert_eq!(
        update.before.as_ref().unwrap()["limits"]["tokens_per_minute"],
        50000
    );
    assert_eq!(
        update.after.as_ref().unwrap()["limits"]["tokens_per_minute"],
        1234
    );
    assert!(acme.records.iter().all(|r| r.actor.starts_with("local:")));
    let revoke = acme
        .records
        .iter()
        .find(|r| r.action == A::KeyRevoke)
        .unwrap();
    assert_eq!(revoke.resource, format!("key/{prefix}"));
    assert!(revoke.before.as_ref().unwrap()["revoked_at"].is_null());
    assert!(revoke.after.as_ref().unwrap()["revoked_at"].is_string());

    let operator = store.audit_page(None, None, 100).await.unwrap();
    let resources: Vec<&str> = operator
        .records
        .iter()
        .map(|r| r.resource.as_str())
        .collect();
    assert_eq!(resources, ["quota/openai/gpt-x/key1", "price/openai/gpt-x"]);

    // No record holds a key or a key's hash.
    let everything = serde_json::to_string(&[&acme.records, &operator.records]).unwrap();
    for hash in store
        .keys_for(&tenant("acme"))
        .await
        .unwrap()
        .iter()
        .map(|k| k.hash.to_hex())
    {
        assert!(!everything.contains(&hash), "a key hash in the audit log");
    }
    for secret in [&key, &successor] {
        assert!(
            !everything.contains(secret.as_str()),
            "a key in the audit log"
        );
        let tail = secret.rsplit('_').next().unwrap();
        assert!(
            !everything.contains(tail),
            "a key's secret part in the audit log"
        );
    }

    // `tollgate audit` prints them, newest first, a page at a time.
    let page = ok(&store, &["audit", "--tenant", "acme", "--limit", "2"]).await;
    let lines: Vec<serde_json::Value> = page
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["action"], "tenant.enable");
    let more = page.stderr.join("\n");
    let cursor = more.split('\'').nth(1).expect("a cursor");
    let next = ok(
        &store,
        &[
            "audit", "--tenant", "acme", "--limit", "2", "--cursor", cursor,
        ],
    )
    .await;
    assert!(next.stdout.contains("\"key.revoke\""), "{}", next.stdout);
    assert!(usage_error(&["audit"]).contains("--tenant"));
}

// ---------------------------------------------------------------------------------------------
// the CLI and the admin API: one implementation
// ---------------------------------------------------------------------------------------------

/// The admin API's answer to one request from `principal` on `store`.
async fn api(
    store: &std::sync::Arc<MemoryStore>,
    method: http::Method,
    path: &str,
    body: Option<serde_json::Value>,
    if_match: Option<&str>,
) -> (u16, serde_json::Value) {
    let state = ::admin::AdminState::build(&tollgate::bootstrap::Stores::embedded(store.clone()));
    let mut req = http::Request::builder()
        .method(method)
        .uri(path)
        .body(bytes::Bytes::from(
            body.map(|b| b.to_string()).unwrap_or_default(),
        ))
        .unwrap();
    req.extensions_mut()
        .insert(tollgate::lambda::PlatformPrincipal(
            "arn:aws:iam::123456789012:user/ops".into(),
        ));
    if let Some(tag) = if_match {
        req.headers_mut().insert("if-match", tag.parse().unwrap());
    }
    let res = ::admin::handle(&state, req).await;
    let status = res.status().as_u16();
    let bytes = res.into_body().collect().await;
    (status, serde_json::from_slice(&bytes).unwrap_or_default())
}

#[tokio::test]
async fn the_cli_and_the_admin_api_store_the_same_state_for_the_same_changes() {
    use std::sync::Arc;
    use tollgate::ports::store::AuditLog;

    let (cli, http_store) = (Arc::new(MemoryStore::new()), Arc::new(MemoryStore::new()));
    // Create: the CLI from flags; the API from the configuration `tenant show` prints.
    ok(&cli, ACME).await;
    let shown: serde_json::Value =
        serde_json::from_str(&ok(&cli, &["tenant", "show", "acme"]).await.stdout).unwrap();
    let (status, _) = api(
        &http_store,
        http::Method::POST,
        "/admin/v1/tenants",
        Some(shown),
        None,
    )
    .await;
    assert_eq!(status, 201);
    // Update the same field each way.
    ok(&cli, &["tenant", "update", "acme", "--tpm", "1234"]).await;
    let (_, got) = api(
        &http_store,
        http::Method::GET,
        "/admin/v1/tenants/acme",
        None,
        None,
    )
    .await;
    let mut changed = got["tenant"].clone();
    changed["limits"]["tokens_per_minute"] = serde_json::json!(1234);
    let (status, _) = api(
        &http_store,
        http::Method::PUT,
        "/admin/v1/tenants/acme",
        Some(changed),
        Some("\"1\""),
    )
    .await;
    assert_eq!(status, 200);
    // Disable, and a scoped, named key.
    ok(&cli, &["tenant", "disable", "acme"]).await;
    let (status, _) = api(
        &http_store,
        http::Method::POST,
        "/admin/v1/tenants/acme/disable",
        None,
        None,
    )
    .await;
    assert_eq!(status, 200);
    ok(
        &cli,
        &[
            "key", "create", "acme", "--name", "ci", "--scope", "chat", "--scope", "profiles",
        ],
    )
    .await;
    let (status, _) = api(
        &http_store,
        http::Method::POST,
        "/admin/v1/tenants/acme/keys",
        Some(serde_json::json!({"name": "ci", "scopes": ["profiles", "chat"]})),
        None,
    )
    .await;
    assert_eq!(status, 201);
    // A budget: the CLI's tenant update flags, the API's budget resource.
    ok(
        &cli,
        &[
            "tenant",
            "update",
            "acme",
            "--budget-daily-usd",
            "25",
            "--budget-alert-at",
            "90",
        ],
    )
    .await;
    let (status, _) = api(
        &http_store,
        http::Method::PUT,
        "/admin/v1/tenants/acme/budget",
        Some(serde_json::json!({"daily_usd": "25", "alert_at_percent": 90})),
        Some("\"3\""),
    )
    .await;
    assert_eq!(status, 200);
    // A price and a key quota.
    ok(
        &cli,
        &[
            "price",
            "set",
            "openai",
            "ft-model",
            "--input",
            "1.5",
            "--output",
            "2",
            "--alias",
            "ft-model-v2",
        ],
    )
    .await;
    let (status, _) = api(
        &http_store,
        http::Method::PUT,
        "/admin/v1/prices",
        Some(
            serde_json::json!({"provider": "openai", "model": "ft-model",
            "aliases": ["ft-model-v2"], "input": "1.5", "output": "2"}),
        ),
        None,
    )
    .await;
    assert_eq!(status, 200);
    ok(
        &cli,
        &[
            "quota", "set", "openai", "gpt-4o", "--key", "1", "--tpm", "3000",
        ],
    )
    .await;
    let (status, _) = api(
        &http_store,
        http::Method::PUT,
        "/admin/v1/quotas",
        Some(
            serde_json::json!({"provider": "openai", "model": "gpt-4o", "key": 1,
            "tokens_per_minute": 3000}),
        ),
        None,
    )
    .await;
    assert_eq!(status, 200);
    // Equal, and not because neither wrote anything.
    let prices = cli.prices().await.unwrap();
    assert_eq!(prices, http_store.prices().await.unwrap());
    assert_eq!(prices.len(), 1);
    assert_eq!(prices[0].aliases, ["ft-model-v2"]);
    let quotas = cli.upstream_quotas().await.unwrap();
    assert_eq!(quotas, http_store.upstream_quotas().await.unwrap());
    assert_eq!(
        quotas
            .iter()
            .map(|q| (q.key, q.tokens_per_minute))
            .collect::<Vec<_>>(),
        [(Some(1), 3000)]
    );

    // The same tenant, version included.
    let a = serde_json::to_value(config(&cli, "acme").await).unwrap();
    let b = serde_json::to_value(
        (*http_store
            .tenant_config(&tenant("acme"))
            .await
            .unwrap()
            .unwrap())
        .clone(),
    )
    .unwrap();
    assert_eq!(a, b);
    assert_eq!(a["version"], 4);
    assert_eq!(a["limits"]["budget_daily_usd"], "25");
    // The same key, but for its random prefix, hash and issue time.
    let key_of = |k: &tollgate::domain::keys::StoredKey| {
        (
            k.tenant_id.clone(),
            k.name.clone(),
            k.scopes.clone(),
            k.expires_at,
            k.revoked_at,
        )
    };
    let a: Vec<_> = cli
        .keys_for(&tenant("acme"))
        .await
        .unwrap()
        .iter()
        .map(key_of)
        .collect();
    let b: Vec<_> = http_store
        .keys_for(&tenant("acme"))
        .await
        .unwrap()
        .iter()
        .map(key_of)
        .collect();
    assert_eq!(a, b);
    // The same audit trail, but for who did it.
    let actions = |page: tollgate::ports::store::AuditPage| {
        page.records
            .iter()
            .map(|r| (r.action, r.resource.starts_with("key/"), r.after.is_some()))
            .collect::<Vec<_>>()
    };
    for scope in [Some(tenant("acme")), None] {
        assert_eq!(
            actions(cli.audit_page(scope.as_ref(), None, 100).await.unwrap()),
            actions(
                http_store
                    .audit_page(scope.as_ref(), None, 100)
                    .await
                    .unwrap()
            )
        );
    }
    let operator = cli.audit_page(None, None, 100).await.unwrap();
    assert_eq!(operator.records.len(), 2, "a price and a quota");
}
