//! `tollgate serve`: the API routes of every function in one local process.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::body::Body as AxumBody;
use axum::extract::{Request, State};
use axum::response::Response;
use axum::serve::ListenerExt;
use bytes::Bytes;
use tollgate::GatewayError;
use tollgate::adapters::aws::AwsConfigSource;
use tollgate::adapters::emf::EmfSink;
use tollgate::bootstrap::{Stores, vector_index};
use tollgate::config::{ProviderMode, Settings, StoreKind};
use tollgate::domain::ids::RequestId;
use tollgate::lambda::PlatformPrincipal;
use tollgate::ports::MetricsSink;
use tollgate::routes::Mounted;

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum MetricsOut {
    /// EMF lines on stdout, as in Lambda.
    Stdout,
    /// EMF lines on stderr (keeps stdout for the banner).
    Stderr,
    /// No metrics output.
    Off,
}

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Port to listen on.
    #[arg(long, default_value_t = 9000)]
    port: u16,
    /// Address to bind; loopback by default.
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// Where the per-request EMF metric lines go.
    #[arg(long, value_enum, default_value = "stdout")]
    metrics: MetricsOut,
    /// Where state lives: `memory` (the embedded default, demo tenants seeded) or `dynamodb`
    /// (tables `<prefix>-*` at the endpoint the standard AWS variables select, e.g.
    /// `AWS_ENDPOINT_URL=http://127.0.0.1:5000` for moto; create them with `tollgate init`).
    #[arg(long, default_value = "memory")]
    store: StoreKind,
    /// DynamoDB table prefix (with `--store dynamodb`).
    #[arg(long, default_value = "tollgate", env = "TOLLGATE_TABLE_PREFIX")]
    table_prefix: String,
    /// Seed the two demo tenants and print their new keys (always on with `--store memory`).
    #[arg(long)]
    seed_demo: bool,
    /// Give the demo tenants limits no local load test reaches (for `infra/bench.sh`): the
    /// limiter still runs on every request, it just never refuses.
    #[arg(long)]
    demo_unlimited: bool,
    /// Give demo tenant `acme` this daily dollar budget (e.g. 0.002), to watch one refuse.
    #[arg(long, value_name = "USD", value_parser = tollgate::domain::budget::BudgetCap::parse)]
    demo_budget_usd: Option<tollgate::domain::budget::BudgetCap>,
    /// Give every end user of demo tenant `acme` this daily dollar budget (e.g. 0.001).
    #[arg(long, value_name = "USD", value_parser = tollgate::domain::budget::BudgetCap::parse)]
    demo_user_budget_usd: Option<tollgate::domain::budget::BudgetCap>,
    /// Also serve the admin API (`/admin/v1`). There is no IAM authorizer here: every admin
    /// request acts as the local operator (`TOLLGATE_ACTOR`, else `local:$USER`, as the CLI
    /// does), so the server refuses to start with it unless bound to a loopback address.
    #[arg(long)]
    admin: bool,
}

/// `--demo-budget-usd`, `--demo-user-budget-usd`: acme's daily budget and its end users'.
async fn demo_budgets(
    store: &dyn tollgate::bootstrap::Backend,
    args: &ServeArgs,
) -> anyhow::Result<()> {
    let acme = tollgate::domain::ids::TenantId::parse("acme")?;
    let mut config = (*store
        .tenant_config(&acme)
        .await?
        .context("demo tenant acme missing")?)
    .clone();
    if let Some(cap) = args.demo_budget_usd {
        config.limits.budget_daily_usd = Some(cap);
    }
    if let Some(cap) = args.demo_user_budget_usd {
        config.end_users.defaults.usd_per_day = Some(cap);
    }
    store.put_tenant_config(config).await?;
    Ok(())
}

#[derive(Clone)]
struct AppState {
    invoke: invoke::InvokeState,
    ingest: ingest::IngestState,
    usage: usage_report::UsageReportState,
    /// `--admin`: the admin function's state, and who its requests act as.
    admin: Option<(::admin::AdminState, PlatformPrincipal)>,
}

#[allow(clippy::print_stdout)] // The banner is this command's output.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    tollgate::telemetry::init_text_logs();
    if args.admin && !args.host.is_loopback() {
        anyhow::bail!(
            "--admin serves the admin API without IAM (every request acts as the local \
             operator): bind it to loopback (--host 127.0.0.1 or ::1), not {}",
            args.host
        );
    }
    let settings = Settings::from_env(ProviderMode::Auto, AwsConfigSource::DEFAULT_CHAIN)
        .context("invalid configuration")?;
    let metrics: Arc<dyn MetricsSink> = match args.metrics {
        MetricsOut::Stdout => Arc::new(EmfSink::stdout()),
        MetricsOut::Stderr => Arc::new(EmfSink::new(Box::new(std::io::stderr()))),
        MetricsOut::Off => Arc::new(MetricsOff),
    };
    let limits = args.demo_unlimited.then_some(tollgate::demo::UNLIMITED);
    let stores = Stores::open(
        args.store,
        settings.aws,
        &args.table_prefix,
        settings.store.directory_cache_ttl,
    )
    .await;
    let store_line = match stores.kind() {
        StoreKind::Memory => "embedded store, in memory".to_owned(),
        StoreKind::Dynamodb => format!("DynamoDB, tables {}-*", args.table_prefix),
    };
    let demo = if stores.kind() == StoreKind::Memory || args.seed_demo {
        tollgate::demo::seed_with_limits(stores.backend().as_ref(), chrono::Utc::now(), limits)
            .await?
    } else {
        Vec::new()
    };
    if !demo.is_empty() && (args.demo_budget_usd.is_some() || args.demo_user_budget_usd.is_some()) {
        demo_budgets(stores.backend().as_ref(), &args).await?;
    }
    let index = vector_index(&settings)?;
    let (invoke, providers) =
        invoke::InvokeState::build(&settings, &stores, metrics.clone(), Some(index.clone()))?;
    if stores.kind() == StoreKind::Dynamodb {
        // A Lambda reads the catalog on its first request; a local server checks the tables
        // up front, so a missing `tollgate init` is reported at start.
        invoke
            .chat
            .catalog
            .get()
            .await
            .context("cannot start on DynamoDB (did you run `tollgate init`?)")?;
    }
    let state = AppState {
        invoke,
        ingest: ingest::IngestState::build(&settings, &stores, metrics, index)?,
        usage: usage_report::UsageReportState::build(&stores),
        admin: args.admin.then(|| {
            let actor = PlatformPrincipal(crate::admin::actor());
            (::admin::AdminState::build(&stores), actor)
        }),
    };
    tokio::spawn(publish_budget_events(stores.scheduler()));
    // Load the tokenizer now rather than on the first request.
    let _ = tollgate::tokenizer::count_tokens("warm up");

    let state_admin_actor = state.admin.clone();
    let app = Router::new().fallback(dispatch).with_state(state);
    let addr = SocketAddr::new(args.host, args.port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let local = listener.local_addr()?;

    println!("tollgate serve: listening on http://{local} ({store_line})");
    for line in &providers {
        println!("provider {line}");
    }
    for (tenant, key) in &demo {
        println!("demo tenant {tenant} key {}", key.expose());
    }
    if let Some((_, PlatformPrincipal(actor))) = &state_admin_actor {
        println!("admin API: http://{local}/admin/v1 (no IAM: every request acts as {actor})");
    }
    if let Some((_, key)) = demo.first() {
        println!(
            "try: curl -s http://{local}/v1/chat/completions -H 'Authorization: Bearer {}' -H 'Content-Type: application/json' -d '{{\"model\":\"gpt-4o-mini\",\"messages\":[{{\"role\":\"user\",\"content\":\"Hello\"}}]}}'",
            key.expose()
        );
    }

    // Stream chunks are small writes; without TCP_NODELAY the last one waits ~40 ms for the
    // client's delayed ACK (Nagle), which capped streamed throughput at ~700 req/s.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}

/// How often the local server publishes budget events (a deployment's stream does it within
/// seconds; there is no stream here).
const BUDGET_EVENT_POLL: std::time::Duration = std::time::Duration::from_secs(5);

/// Publishes budget events as JSON lines on stdout (`{"budget_event": {...}}`, EventBridge's
/// envelope) and records resets, as the anomaly-scheduler does in a deployment.
async fn publish_budget_events(store: Arc<dyn tollgate::bootstrap::SchedulerStore>) {
    let bus = tollgate::adapters::alerts::LineBudgetBus::stdout();
    let mut tick = tokio::time::interval(BUDGET_EVENT_POLL);
    loop {
        tick.tick().await;
        let publisher = tollgate::service::budget_events::BudgetEventPublisher {
            outbox: store.as_ref(),
            counters: store.as_ref(),
            bus: &bus,
        };
        if let Err(err) = publisher
            .hourly_sweeping_after(chrono::Utc::now(), std::time::Duration::ZERO)
            .await
        {
            tracing::warn!(error = %err, "budget events not published; retrying");
        }
    }
}

/// Metrics switched off: request metrics are dropped, metering failures are still logged.
struct MetricsOff;

impl MetricsSink for MetricsOff {
    fn request(&self, _: &tollgate::ports::metrics::RequestMetrics) {}
    fn metering_failure(&self, event: &tollgate::domain::usage::UsageEvent, error: &str) {
        let event = serde_json::to_string(event).unwrap_or_default();
        tracing::error!(error, %event, "metering failure: usage event not stored");
    }
    fn isolation_violation(&self, function: &'static str, tenant: &str) {
        tracing::error!(function, tenant, "isolation violation refused");
    }
}

/// Hands every request to the function whose route table has its path, as API Gateway would.
async fn dispatch(State(state): State<AppState>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let limit = state.invoke.max_body_bytes;
    let bytes: Bytes = match axum::body::to_bytes(body, limit).await {
        Ok(bytes) => bytes,
        Err(_) => {
            let response = tollgate::http::error(
                &GatewayError::PayloadTooLarge { limit },
                &RequestId::generate(),
            );
            return response.map(AxumBody::new);
        }
    };
    let mut req = http::Request::from_parts(parts, bytes);
    if let Some((admin, actor)) = &state.admin
        && admin.owns(req.uri().path())
    {
        // What API Gateway's AWS_IAM authorizer would put in the event, here the local
        // operator (`--admin` binds loopback only).
        req.extensions_mut().insert(actor.clone());
        return admin.serve(req).await.map(AxumBody::new);
    }
    let functions: [&dyn Mounted; 3] = [&state.ingest, &state.usage, &state.invoke];
    tollgate::routes::dispatch(&functions, req)
        .await
        .map(AxumBody::new)
}
