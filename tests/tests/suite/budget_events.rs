#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failure report.
//! Budget events end to end against moto: the limiter records them in DynamoDB under
//! concurrency, the anomaly-scheduler function publishes them to an EventBridge bus from a
//! stream batch (built from the table's items, as the template's stream filter selects them)
//! and from its hourly run, and rules with the template's own patterns deliver them to SQS
//! queues. moto delivers rule targets to SQS but not to SNS, so a queue stands in for the
//! alarm topic behind the template's `BudgetExhaustedRule` pattern.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anomaly_scheduler::{Context, LambdaEvent, SchedulerEvent, SchedulerState, handle_any};
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use serde_json::{Value, json};
use tollgate::adapters::dynamodb::DynamoStore;
use tollgate::adapters::eventbridge::EventBridgeBus;
use tollgate::domain::budget::{Budget, Period};
use tollgate::domain::budget_event::{BudgetEvent, BudgetEventKind};
use tollgate::domain::ids::TenantId;
use tollgate::domain::limits::{Limits, Shards};
use tollgate::domain::profile::UserId;
use tollgate::domain::tenant::ProviderKind;
use tollgate::ports::clock::SystemClock;
use tollgate::ports::store::{BudgetEventRecorder, BudgetEventStore, CounterAdd, LimiterStore};
use tollgate::service::anomaly::SchedulerOptions;
use tollgate::service::budget_events::SWEEP_AFTER;
use tollgate::service::limiter::{Demand, Limiter, Scope, spend_counter};
use tollgate_tests::moto;

const TEMPLATE: &str = include_str!("../../../template.yaml");
const SUITE: &str = "budget events suite";
const ROUTE: (ProviderKind, &str) = (ProviderKind::Openai, "gpt-4o-mini");

/// The JSON value of `key:` in the body of the template resource `resource` (a one-line flow
/// mapping, quoted or not).
fn template_json(resource: &str, key: &str) -> Value {
    let mut inside = false;
    for line in TEMPLATE.lines() {
        let indent = line.len() - line.trim_start().len();
        if indent == 2 && line.trim_end().ends_with(':') {
            inside = line.trim() == format!("{resource}:");
            continue;
        }
        let found = line
            .trim()
            .trim_start_matches("- ")
            .strip_prefix(key)
            .and_then(|rest| rest.strip_prefix(": "));
        if let (true, Some(raw)) = (inside, found) {
            let raw = raw.trim().trim_matches('\'');
            return serde_json::from_str(raw).unwrap_or_else(|e| {
                panic!("{resource}.{key} is not one line of JSON: {e}: {raw}")
            });
        }
    }
    panic!("template.yaml has no {resource} with {key}");
}

/// SQS on moto through its JSON protocol (the tests crate has no SQS SDK; moto does not check
/// signatures, it only reads the service from the credential scope).
struct Sqs {
    http: reqwest::Client,
    endpoint: String,
}

impl Sqs {
    async fn call(&self, action: &str, body: Value) -> Value {
        let res = self
            .http
            .post(&self.endpoint)
            .header("X-Amz-Target", format!("AmazonSQS.{action}"))
            .header("Content-Type", "application/x-amz-json-1.0")
            .header(
                "Authorization",
                "AWS4-HMAC-SHA256 Credential=test/20261206/us-east-1/sqs/aws4_request, SignedHeaders=host, Signature=00",
            )
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let status = res.status();
        let text = res.text().await.unwrap();
        assert!(status.is_success(), "SQS {action}: {status} {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    /// A new queue: its URL and ARN.
    async fn queue(&self, name: &str) -> (String, String) {
        let url = self.call("CreateQueue", json!({"QueueName": name})).await["QueueUrl"]
            .as_str()
            .unwrap()
            .to_owned();
        let attrs = self
            .call(
                "GetQueueAttributes",
                json!({"QueueUrl": url, "AttributeNames": ["QueueArn"]}),
            )
            .await;
        let arn = attrs["Attributes"]["QueueArn"].as_str().unwrap().to_owned();
        (url, arn)
    }

    /// Every message waiting in the queue (received ones stay invisible for 30 s), as the
    /// EventBridge events they carry.
    async fn drain(&self, url: &str) -> Vec<Value> {
        let mut out = Vec::new();
        loop {
            let got = self
                .call(
                    "ReceiveMessage",
                    json!({"QueueUrl": url, "MaxNumberOfMessages": 10, "WaitTimeSeconds": 0}),
                )
                .await;
            let Some(messages) = got["Messages"].as_array().filter(|m| !m.is_empty()) else {
                return out;
            };
            for message in messages {
                out.push(serde_json::from_str(message["Body"].as_str().unwrap()).unwrap());
            }
        }
    }
}

/// A bus with two rules: the template's `BudgetExhaustedRule` pattern into `alarm` (the
/// alarm topic's stand-in), and every budget event into `all`.
struct Bus {
    name: String,
    sqs: Sqs,
    alarm: String,
    all: String,
}

fn events_client(endpoint: &str) -> aws_sdk_eventbridge::Client {
    use aws_sdk_eventbridge::config::{BehaviorVersion, Credentials, Region};
    let config = aws_sdk_eventbridge::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "emulator"))
        .endpoint_url(endpoint)
        .http_client(tollgate::adapters::tls::aws_http_client())
        .build();
    aws_sdk_eventbridge::Client::from_conf(config)
}

impl Bus {
    async fn create(endpoint: &str, tag: &str) -> Self {
        let name = format!(
            "{tag}-{}-{}",
            std::process::id(),
            Utc::now().timestamp_nanos_opt().unwrap_or_default() % 1_000_000_000
        );
        let events = events_client(endpoint);
        events.create_event_bus().name(&name).send().await.unwrap();
        let sqs = Sqs {
            http: reqwest::Client::new(),
            endpoint: endpoint.to_owned(),
        };
        let (alarm, alarm_arn) = sqs.queue(&format!("{name}-alarm")).await;
        let (all, all_arn) = sqs.queue(&format!("{name}-all")).await;
        let exhausted = template_json("BudgetExhaustedRule", "EventPattern");
        let every = json!({"source": [tollgate::domain::budget_event::EVENT_SOURCE]});
        for (rule, pattern, target) in [("alarm", exhausted, alarm_arn), ("all", every, all_arn)] {
            events
                .put_rule()
                .name(rule)
                .event_bus_name(&name)
                .event_pattern(pattern.to_string())
                .send()
                .await
                .unwrap();
            events
                .put_targets()
                .rule(rule)
                .event_bus_name(&name)
                .targets(
                    aws_sdk_eventbridge::types::Target::builder()
                        .id("queue")
                        .arn(target)
                        .build()
                        .unwrap(),
                )
                .send()
                .await
                .unwrap();
        }
        Self {
            name,
            sqs,
            alarm,
            all,
        }
    }
}

fn state(
    store: &Arc<DynamoStore>,
    endpoint: &str,
    bus: &Bus,
    sweep_after: Duration,
) -> SchedulerState {
    SchedulerState {
        store: store.clone(),
        alerts: Arc::new(tollgate::adapters::alerts::MemoryAlerts::default()),
        clock: Arc::new(SystemClock),
        options: SchedulerOptions::default(),
        budget_bus: Arc::new(EventBridgeBus::emulator(endpoint, &bus.name)),
        sweep_after,
    }
}

fn dynamodb_client(endpoint: &str) -> aws_sdk_dynamodb::Client {
    use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "emulator"))
        .endpoint_url(endpoint)
        .http_client(tollgate::adapters::tls::aws_http_client())
        .build();
    aws_sdk_dynamodb::Client::from_conf(config)
}

/// An item in DynamoDB's JSON, as a stream record carries it (strings and booleans: all a
/// budget event item has).
fn dynamodb_json(item: &HashMap<String, AttributeValue>) -> Value {
    item.iter()
        .map(|(name, value)| {
            let value = match value {
                AttributeValue::S(s) => json!({"S": s}),
                AttributeValue::Bool(b) => json!({"BOOL": b}),
                other => panic!("{name}: unexpected attribute {other:?}"),
            };
            (name.clone(), value)
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// The stream batch Lambda would deliver for the usage table's items that the template's
/// filter selects (new items whose `pk` has the filter's prefix).
async fn stream_batch(endpoint: &str, store: &DynamoStore) -> (Value, usize) {
    let filter = template_json("AnomalySchedulerFunction", "Pattern");
    assert_eq!(filter["eventName"], json!(["INSERT"]));
    let prefix = filter["dynamodb"]["Keys"]["pk"]["S"][0]["prefix"]
        .as_str()
        .unwrap()
        .to_owned();
    let items = dynamodb_client(endpoint)
        .scan()
        .table_name(&store.names().usage)
        .send()
        .await
        .unwrap()
        .items
        .unwrap_or_default();
    let records: Vec<Value> = items
        .iter()
        .filter(
            |item| matches!(item.get("pk"), Some(AttributeValue::S(pk)) if pk.starts_with(&prefix)),
        )
        .map(|item| {
            let image = dynamodb_json(item);
            json!({
                "eventName": "INSERT",
                "eventSource": "aws:dynamodb",
                "dynamodb": {
                    "Keys": {"pk": image["pk"], "sk": image["sk"]},
                    "NewImage": image,
                    "StreamViewType": "NEW_IMAGE",
                },
            })
        })
        .collect();
    let n = records.len();
    (json!({ "Records": records }), n)
}

/// EventBridge's hourly "Scheduled Event" for `time`.
fn scheduled(time: DateTime<Utc>) -> Value {
    json!({
        "id": format!("hourly-{}", time.timestamp()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "time": time.to_rfc3339(),
        "detail": {},
    })
}

async fn invoke(state: &SchedulerState, payload: &Value) -> Value {
    let event: SchedulerEvent = serde_json::from_value(payload.clone()).unwrap();
    handle_any(state, LambdaEvent::new(event, Context::default()))
        .await
        .unwrap()
}

fn big_limits() -> Limits {
    Limits {
        tokens_per_minute: 100_000_000,
        requests_per_minute: 100_000,
        tokens_per_day: 1_000_000_000,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_concurrent_refusals_publish_one_exhausted_event_through_the_templates_rule() {
    let Some(endpoint) = moto::endpoint(SUITE) else {
        return;
    };
    let store = Arc::new(moto::fresh_store(SUITE, "be").await.unwrap());
    let limiter = Arc::new(
        Limiter::new(store.clone(), Default::default(), 1024).with_budget_events(store.clone()),
    );
    let tenant = TenantId::parse("acme").unwrap();
    let mut scope = Scope::tokens_only(&tenant, Shards::ONE, big_limits());
    scope.budget = Budget {
        daily_usd: Some(dec!(0.01)),
        ..Budget::NONE
    };
    let scope = Arc::new(scope);
    let now = Utc::now().timestamp();
    let demand = Demand {
        tokens: 10,
        cost: dec!(0.001),
    };
    let reserve = |limiter: Arc<Limiter>, scope: Arc<Scope>| async move {
        let snapshot = limiter.snapshot(&scope, &[ROUTE], now).await.unwrap();
        limiter
            .reserve(&scope, &snapshot, demand, ROUTE)
            .await
            .unwrap()
            .is_ok()
    };
    // $0.009 of $0.01 spent one call at a time: past the 80 % threshold, no event yet (the
    // snapshots that admitted them were all below it until the ninth).
    for _ in 0..9 {
        assert!(reserve(limiter.clone(), scope.clone()).await);
    }
    // Then sixty at once: one fits, fifty-nine are refused by the cap.
    let calls: Vec<_> = (0..60)
        .map(|_| tokio::spawn(reserve(limiter.clone(), scope.clone())))
        .collect();
    let mut admitted = 0;
    for call in calls {
        admitted += usize::from(call.await.unwrap());
    }
    assert_eq!(admitted, 1);

    let day = DateTime::from_timestamp(Period::Day.starts_at(now), 0).unwrap();
    let recorded = store.budget_events(Period::Day, day).await.unwrap();
    let kinds: Vec<BudgetEventKind> = recorded.iter().map(|s| s.event.kind).collect();
    assert_eq!(
        kinds,
        [BudgetEventKind::Exhausted, BudgetEventKind::Threshold],
        "one record per kind, in id order"
    );

    // The stream delivers the two new items; the function publishes each once.
    let bus = Bus::create(&endpoint, "burst").await;
    let state = state(&store, &endpoint, &bus, SWEEP_AFTER);
    let (batch, records) = stream_batch(&endpoint, &store).await;
    assert_eq!(
        records, 2,
        "the template's stream filter selects both items: {batch}"
    );
    let summary = invoke(&state, &batch).await;
    assert_eq!(
        (summary["sent"].as_u64(), summary["skipped"].as_u64()),
        (Some(2), Some(0))
    );

    let paged = bus.sqs.drain(&bus.alarm).await;
    assert_eq!(
        paged.len(),
        1,
        "the alarm topic gets the hard cap only: {paged:?}"
    );
    let exhausted = &paged[0];
    let label = Period::Day.label(now);
    assert_eq!(exhausted["source"], "tollgate.budget");
    assert_eq!(exhausted["detail-type"], "Tollgate budget exhausted");
    let detail = &exhausted["detail"];
    assert_eq!(detail["id"], format!("acme/day/{label}/exhausted"));
    assert_eq!(detail["tenant_id"], "acme");
    assert_eq!(detail["user"], Value::Null);
    assert_eq!(detail["period"], "day");
    assert_eq!(detail["period_label"], label.as_str());
    assert_eq!(detail["budget_usd"], "0.01");
    let spend: Decimal = detail["spend_usd"].as_str().unwrap().parse().unwrap();
    assert!(spend >= dec!(0.009) && spend <= dec!(0.01), "{spend}");
    let all = bus.sqs.drain(&bus.all).await;
    let mut types: Vec<&str> = all
        .iter()
        .map(|e| e["detail-type"].as_str().unwrap())
        .collect();
    types.sort_unstable();
    assert_eq!(
        types,
        [
            "Tollgate budget exhausted",
            "Tollgate budget threshold crossed"
        ]
    );

    // A replayed batch (Lambda retries it whole) and the hourly sweep send nothing again.
    let again = invoke(&state, &batch).await;
    assert_eq!(
        (again["sent"].as_u64(), again["skipped"].as_u64()),
        (Some(0), Some(2))
    );
    invoke(&state, &scheduled(Utc::now())).await;
    assert!(bus.sqs.drain(&bus.alarm).await.is_empty());
    assert!(bus.sqs.drain(&bus.all).await.is_empty());
    assert!(
        store
            .budget_events(Period::Day, day)
            .await
            .unwrap()
            .iter()
            .all(|s| s.published)
    );
}

#[tokio::test]
async fn the_hourly_run_publishes_one_reset_per_subject_with_the_periods_final_spend() {
    let Some(endpoint) = moto::endpoint(SUITE) else {
        return;
    };
    let store = Arc::new(moto::fresh_store(SUITE, "br").await.unwrap());
    let now = Utc::now();
    let yesterday = Period::Day.starts_at(now.timestamp()) - 86_400;
    let event = |tenant: &str, user: Option<&str>, kind| BudgetEvent {
        tenant_id: TenantId::parse(tenant).unwrap(),
        user: user.map(|u| UserId::parse(u).unwrap()),
        period: Period::Day,
        period_start: DateTime::from_timestamp(yesterday, 0).unwrap(),
        kind,
        spend_usd: dec!(0.008),
        budget_usd: dec!(0.01),
        alert_at_percent: 80,
        occurred_at: DateTime::from_timestamp(yesterday + 3_600, 0).unwrap(),
    };
    // Yesterday: acme crossed its threshold and was exhausted; alice of acme and alice of
    // globex (two users) crossed theirs.
    for e in [
        event("acme", None, BudgetEventKind::Threshold),
        event("acme", None, BudgetEventKind::Exhausted),
        event("acme", Some("alice"), BudgetEventKind::Threshold),
        event("globex", Some("alice"), BudgetEventKind::Threshold),
    ] {
        store.record_budget_event(&e).await.unwrap();
    }
    let acme = TenantId::parse("acme").unwrap();
    let final_nanos = 9_990_000; // $0.00999
    store
        .add_counters(&[CounterAdd {
            key: spend_counter(&acme, None, Period::Day, yesterday),
            tokens: final_nanos,
            requests: 0,
            max_tokens: None,
            max_requests: None,
            expires_at: Period::Day.expires_at(yesterday),
        }])
        .await
        .unwrap();

    let bus = Bus::create(&endpoint, "reset").await;
    // No stream here: the run itself sends what it recorded.
    let state = state(&store, &endpoint, &bus, Duration::ZERO);
    let scheduled = scheduled(now);
    invoke(&state, &scheduled).await;
    let all = bus.sqs.drain(&bus.all).await;
    let mut resets: Vec<(String, String)> = all
        .iter()
        .filter(|e| e["detail-type"] == "Tollgate budget reset")
        .map(|e| {
            (
                e["detail"]["id"].as_str().unwrap().to_owned(),
                e["detail"]["spend_usd"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    resets.sort();
    let label = Period::Day.label(yesterday);
    assert_eq!(
        resets,
        [
            (format!("acme/day/{label}/reset"), "0.00999".to_owned()),
            (format!("acme/u/alice/day/{label}/reset"), "0".to_owned()),
            (format!("globex/u/alice/day/{label}/reset"), "0".to_owned()),
        ]
    );
    // The four events recorded yesterday were unpublished: the sweep sent them too.
    assert_eq!(all.len(), 7, "{all:?}");
    assert!(bus.sqs.drain(&bus.alarm).await.len() == 1);

    // The next hour's run records and sends nothing more.
    invoke(&state, &scheduled).await;
    assert!(bus.sqs.drain(&bus.all).await.is_empty());
}

/// The stream fixture `cargo lambda invoke` sends (functions/anomaly-scheduler/events) is a
/// stream batch, and its item's `event` is a budget event as the adapter stores it.
#[test]
fn the_stream_fixture_is_one_recorded_budget_event() {
    let raw = include_str!("../../../functions/anomaly-scheduler/events/budget-stream.json");
    let SchedulerEvent::Stream(batch) = serde_json::from_str(raw).unwrap() else {
        panic!("the stream fixture parsed as a scheduled event");
    };
    let events = batch.budget_events().unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].id(), "fixture-tenant/day/2026-12-06/exhausted");
    assert_eq!(events[0].spend_usd, dec!(0.00995));
    let scheduled = include_str!("../../../functions/anomaly-scheduler/events/scheduled.json");
    assert!(matches!(
        serde_json::from_str(scheduled).unwrap(),
        SchedulerEvent::Scheduled(_)
    ));
}
