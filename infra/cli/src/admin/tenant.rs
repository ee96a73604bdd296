//! `tollgate tenant create|list|show|update|disable|enable|register-fine-tuned`.
//!
//! Every write goes through `TenantConfig::validate` first, so the store never holds a
//! configuration the gateway would refuse to serve. Updates read, change and write the whole
//! configuration: the last writer wins (the `TenantAdmin` port has no compare-and-set), which
//! is fine for a handful of operators and would need a version condition for automation.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, bail};
use tollgate::domain::audit::AuditAction;
use tollgate::domain::budget::BudgetCap;
use tollgate::domain::ids::TenantId;
use tollgate::domain::limits::{DegradationPolicy, LimitOverrides, MAX_LIMIT};
use tollgate::domain::pricing::ModelPrice;
use tollgate::domain::prompt::PromptTemplate;
use tollgate::domain::tenant::RetrievalPolicy;
use tollgate::domain::tenant::{ResponseCachePolicy, Route, TenantConfig};
use tollgate::ports::store::{Catalog, Expect, TenantAdmin, TenantConfigSource};
use tollgate::service::audit::Auditor;
use tollgate::service::tenant_admin::{self, TenantAdminError};

use super::parse::{self, OnOff, ProviderArg, TierArg};
use super::{Output, StoreArgs, UsageError, table};

const CREATE_EXAMPLE: &str = "\
Example:
  tollgate tenant create acme --name 'Acme Rockets' --tier pro \\
    --system-prompt 'You support {{tenant_name}} customers about {{product}}. Today is {{date}}.' \\
    --var product='reusable rockets' \\
    --route gpt-4o=openai:gpt-4o --route gpt-4o-mini=openai:gpt-4o-mini \\
    --route support=openai:ft:gpt-4o-mini-2024-07-18:acme::sup01:fine-tuned \\
    --price-override ft:gpt-4o-mini-2024-07-18:acme::sup01=0.30,1.20,0.15 \\
    --cache on --cache-ttl 600 --tpm 100000 \\
    --degrade-at 80 --degrade gpt-4o=gpt-4o-mini";

const UPDATE_EXAMPLE: &str = "\
Examples:
  tollgate tenant update acme --tier enterprise --reset-limit tpm
  tollgate tenant update acme --route claude=anthropic:claude-haiku-4-5 --remove-route gpt-4o \\
    --remove-degrade gpt-4o
  tollgate tenant update acme --system-prompt-file prompts/acme.txt --clear-var product";

#[derive(clap::Args, Debug)]
pub struct TenantArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(subcommand)]
    pub command: TenantCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum TenantCommand {
    /// Create a tenant: tier, system prompt, model routes, cache, limits, degradation and
    /// prices. Refuses an id that already exists.
    #[command(after_help = CREATE_EXAMPLE)]
    Create(Box<CreateArgs>),
    /// List every tenant: id, name, tier, number of routes, disabled, configuration version.
    List,
    /// Print one tenant's whole configuration as JSON.
    Show {
        /// The tenant id.
        #[arg(value_parser = parse::tenant_id)]
        id: TenantId,
    },
    /// Change a tenant: only what the flags name changes; the version grows by one (which
    /// also retires the tenant's cached responses).
    #[command(after_help = UPDATE_EXAMPLE)]
    Update(Box<UpdateArgs>),
    /// Disable a tenant: its API keys are refused with 401 (running gateways notice within
    /// their directory cache lifetime, TOLLGATE_DIRECTORY_CACHE_SECS, 30 s by default).
    Disable {
        /// The tenant id.
        #[arg(value_parser = parse::tenant_id)]
        id: TenantId,
    },
    /// Enable a disabled tenant again.
    Enable {
        /// The tenant id.
        #[arg(value_parser = parse::tenant_id)]
        id: TenantId,
    },
    /// Record that a fine-tuned provider model belongs to a tenant. Routes to a fine-tuned
    /// model are served only to its registered owner; every other tenant gets 403.
    RegisterFineTuned(RegisterArgs),
}

/// The system prompt, inline or from a file (not both).
#[derive(clap::Args, Debug, Default)]
#[group(multiple = false)]
pub struct PromptArgs {
    /// System prompt template. `{{name}}` inserts a --var value or a built-in: `tenant_id`,
    /// `tenant_name`, `date` (UTC, YYYY-MM-DD). Empty: no system prompt.
    #[arg(long, value_name = "TEXT")]
    pub system_prompt: Option<String>,
    /// Read the system prompt template from a UTF-8 file.
    #[arg(long, value_name = "PATH")]
    pub system_prompt_file: Option<PathBuf>,
}

impl PromptArgs {
    fn is_empty(&self) -> bool {
        self.system_prompt.is_none() && self.system_prompt_file.is_none()
    }

    /// The parsed template, if one was given.
    fn template(&self) -> anyhow::Result<Option<PromptTemplate>> {
        let source = match (&self.system_prompt, &self.system_prompt_file) {
            (Some(text), _) => text.clone(),
            (None, Some(path)) => std::fs::read_to_string(path)
                .with_context(|| format!("cannot read --system-prompt-file {}", path.display()))?,
            (None, None) => return Ok(None),
        };
        let template = PromptTemplate::parse(source).context("invalid system prompt")?;
        Ok(Some(template))
    }
}

/// Token and request limits; each replaces the tier's value for this tenant. Each is at most
/// 10^15 (`MAX_LIMIT`): the limiter's counters are signed 64-bit numbers.
#[derive(clap::Args, Debug, Default)]
pub struct LimitArgs {
    /// Tokens per minute (prompt + completion, sliding window). Overrides the tier's.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=MAX_LIMIT))]
    pub tpm: Option<u64>,
    /// Requests per minute (sliding window). Overrides the tier's.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=MAX_LIMIT))]
    pub rpm: Option<u64>,
    /// Daily token budget (sliding 24 h). Overrides the tier's.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=MAX_LIMIT))]
    pub daily_tokens: Option<u64>,
    /// Limiter counter shards (1-16) for a tenant above ~500 requests/s: each window bucket
    /// becomes N DynamoDB items sharing the budget, spreading the writes.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(1..=16))]
    pub counter_shards: Option<u8>,
    /// Chunks the tenant may keep in the vector index (overrides the tier's storage quota).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=MAX_LIMIT))]
    pub storage_chunks: Option<u64>,
    /// Dollar budget per UTC day, in USD (e.g. 25 or 0.50), or `unlimited` to lift the
    /// tier's. Reserved before each call at its worst-case cost; a spent budget refuses
    /// with 429 `insufficient_quota` until 00:00 UTC.
    #[arg(long, value_name = "USD", value_parser = BudgetCap::parse)]
    pub budget_daily_usd: Option<BudgetCap>,
    /// Dollar budget per UTC calendar month, in USD, or `unlimited`.
    #[arg(long, value_name = "USD", value_parser = BudgetCap::parse)]
    pub budget_monthly_usd: Option<BudgetCap>,
    /// Soft threshold, 1-100 % of a dollar budget: past it the degradation policy applies
    /// (80 when unset).
    #[arg(long, value_name = "PERCENT", value_parser = clap::value_parser!(u8).range(1..=100))]
    pub budget_alert_at: Option<u8>,
}

impl LimitArgs {
    fn is_empty(&self) -> bool {
        self.budget_daily_usd.is_none()
            && self.budget_monthly_usd.is_none()
            && self.budget_alert_at.is_none()
            && self.tpm.is_none()
            && self.rpm.is_none()
            && self.daily_tokens.is_none()
            && self.counter_shards.is_none()
            && self.storage_chunks.is_none()
    }
}

#[derive(clap::Args, Debug)]
pub struct CreateArgs {
    /// Tenant id: 1-64 characters of a-z, 0-9, '-' and '_', starting with a letter or digit.
    /// It cannot be changed later.
    #[arg(value_parser = parse::tenant_id)]
    pub id: TenantId,
    /// Display name (also the `{{tenant_name}}` prompt variable).
    #[arg(long)]
    pub name: String,
    /// Pricing tier: sets the default limits (see --tpm, --rpm, --daily-tokens to override).
    #[arg(long, value_enum)]
    pub tier: TierArg,
    #[command(flatten)]
    pub prompt: PromptArgs,
    /// A system-prompt variable (repeatable).
    #[arg(long = "var", value_name = "KEY=VALUE", value_parser = parse::var)]
    pub vars: Vec<(String, String)>,
    /// A model the tenant may request (repeatable, at least one): clients send LOGICAL as
    /// `model`, Tollgate calls MODEL at PROVIDER (openai or anthropic). Append `:fine-tuned`
    /// for a fine-tuned model (`ft:` ids are treated as fine-tuned anyway); register it with
    /// `tollgate tenant register-fine-tuned`. Append `:embeddings` for an embeddings model,
    /// served by `POST /v1/embeddings` only.
    #[arg(
        long = "route",
        value_name = "LOGICAL=PROVIDER:MODEL[:fine-tuned|:embeddings]",
        required = true,
        value_parser = parse::route
    )]
    pub routes: Vec<(String, Route)>,
    /// Response cache: identical requests within --cache-ttl are answered from the cache.
    /// Default: off.
    #[arg(long, value_enum, value_name = "on|off")]
    pub cache: Option<OnOff>,
    /// How long a cached response is served, in seconds. Default: 3600.
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u32).range(1..))]
    pub cache_ttl: Option<u32>,
    /// Ground every answer in the tenant's documents by default (requests can still opt in
    /// or out with the `retrieval` extension field). Default: off.
    #[arg(long, value_enum, value_name = "on|off")]
    pub retrieval: Option<OnOff>,
    /// Excerpts retrieved per request. Default: 4.
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(u8).range(1..=20))]
    pub retrieval_top_k: Option<u8>,
    #[command(flatten)]
    pub limits: LimitArgs,
    /// Degrade once the day's usage passes this percentage of the daily budget (1-100).
    /// Needs at least one --degrade.
    #[arg(
        long,
        value_name = "PERCENT",
        value_parser = clap::value_parser!(u8).range(1..=100),
        requires = "degrade"
    )]
    pub degrade_at: Option<u8>,
    /// Past --degrade-at, serve requests for logical model FROM with the cheaper logical model
    /// TO (repeatable). Both must be routes of this tenant.
    #[arg(
        long = "degrade",
        value_name = "FROM=TO",
        value_parser = parse::degrade,
        requires = "degrade_at"
    )]
    pub degrade: Vec<(String, String)>,
    /// This tenant's price for a provider model, in USD per 1M tokens, replacing the price
    /// table (negotiated rates, fine-tuned models). Cached input and cache writes default to
    /// the input price. Repeatable.
    #[arg(
        long = "price-override",
        value_name = "MODEL=INPUT,OUTPUT[,CACHED_INPUT[,CACHE_WRITE]]",
        value_parser = parse::price_override
    )]
    pub price_overrides: Vec<(String, ModelPrice)>,
    /// Create the tenant disabled (its keys are refused until `tollgate tenant enable`).
    #[arg(long)]
    pub disabled: bool,
}

/// Which limit `--reset-limit` returns to the tier's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LimitName {
    Tpm,
    Rpm,
    DailyTokens,
    BudgetDailyUsd,
    BudgetMonthlyUsd,
    BudgetAlertAt,
}

#[derive(clap::Args, Debug)]
pub struct UpdateArgs {
    /// The tenant id.
    #[arg(value_parser = parse::tenant_id)]
    pub id: TenantId,
    /// New display name.
    #[arg(long)]
    pub name: Option<String>,
    /// New pricing tier (limit overrides stay in force; see --reset-limit).
    #[arg(long, value_enum)]
    pub tier: Option<TierArg>,
    #[command(flatten)]
    pub prompt: PromptArgs,
    /// Set or replace a system-prompt variable (repeatable).
    #[arg(long = "var", value_name = "KEY=VALUE", value_parser = parse::var)]
    pub vars: Vec<(String, String)>,
    /// Remove a system-prompt variable (repeatable).
    #[arg(long = "clear-var", value_name = "KEY", value_parser = parse::variable_name)]
    pub clear_vars: Vec<String>,
    /// Add or replace a route (repeatable); same format as in `tenant create`.
    #[arg(
        long = "route",
        value_name = "LOGICAL=PROVIDER:MODEL[:fine-tuned|:embeddings]",
        value_parser = parse::route
    )]
    pub routes: Vec<(String, Route)>,
    /// Remove a route by its logical model name (repeatable).
    #[arg(long = "remove-route", value_name = "LOGICAL", value_parser = parse::model_name)]
    pub remove_routes: Vec<String>,
    /// Append a fallback to a chat route's failover chain (repeatable, in order), e.g.
    /// `gpt-4o-mini=anthropic:claude-haiku-4-5`.
    #[arg(
        long = "fallback",
        value_name = "LOGICAL=PROVIDER:MODEL",
        value_parser = parse::fallback
    )]
    pub fallbacks: Vec<(String, tollgate::domain::tenant::Target)>,
    /// Empty a route's failover chain (repeatable; applied before `--fallback`).
    #[arg(long = "clear-fallbacks", value_name = "LOGICAL", value_parser = parse::model_name)]
    pub clear_fallbacks: Vec<String>,
    /// Call a Bedrock model through the tenant's application inference profile (repeatable),
    /// e.g. `us.anthropic.claude-sonnet-4-5-20250929-v1:0=arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/abc123`.
    #[arg(
        long = "bedrock-profile",
        value_name = "BEDROCK_MODEL=PROFILE_ARN",
        value_parser = parse::bedrock_profile
    )]
    pub bedrock_profiles: Vec<(String, String)>,
    /// Stop using the tenant's inference profile for a Bedrock model (repeatable).
    #[arg(long = "remove-bedrock-profile", value_name = "BEDROCK_MODEL")]
    pub remove_bedrock_profiles: Vec<String>,
    /// Turn the response cache on or off.
    #[arg(long, value_enum, value_name = "on|off")]
    pub cache: Option<OnOff>,
    /// How long a cached response is served, in seconds.
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u32).range(1..))]
    pub cache_ttl: Option<u32>,
    /// Ground answers in the tenant's documents by default, or not.
    #[arg(long, value_enum, value_name = "on|off")]
    pub retrieval: Option<OnOff>,
    /// Excerpts retrieved per request.
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(u8).range(1..=20))]
    pub retrieval_top_k: Option<u8>,
    /// Ask the provider once more when a structured-output reply fails its schema (buffered
    /// requests; the retry is metered as its own usage event).
    #[arg(long, value_enum, value_name = "on|off")]
    pub retry_invalid_output: Option<OnOff>,
    #[command(flatten)]
    pub limits: LimitArgs,
    /// Drop a limit override so the tier's value applies again (repeatable).
    #[arg(long = "reset-limit", value_enum, value_name = "LIMIT")]
    pub reset_limits: Vec<LimitName>,
    /// Set the degradation threshold, 1-100 % of the daily budget (creates the policy if the
    /// tenant has none; then give --degrade too).
    #[arg(long, value_name = "PERCENT", value_parser = clap::value_parser!(u8).range(1..=100))]
    pub degrade_at: Option<u8>,
    /// Add or replace a degradation FROM=TO (repeatable).
    #[arg(long = "degrade", value_name = "FROM=TO", value_parser = parse::degrade)]
    pub degrade: Vec<(String, String)>,
    /// Remove the degradation of logical model FROM (repeatable). Removing the last one
    /// removes the policy.
    #[arg(long = "remove-degrade", value_name = "FROM", value_parser = parse::model_name)]
    pub remove_degrade: Vec<String>,
    /// Remove the degradation policy altogether.
    #[arg(long, conflicts_with_all = ["degrade_at", "degrade", "remove_degrade"])]
    pub no_degradation: bool,
    /// Add or replace a price override (repeatable); same format as in `tenant create`.
    #[arg(
        long = "price-override",
        value_name = "MODEL=INPUT,OUTPUT[,CACHED_INPUT[,CACHE_WRITE]]",
        value_parser = parse::price_override
    )]
    pub price_overrides: Vec<(String, ModelPrice)>,
    /// Remove a price override by provider model (repeatable).
    #[arg(long = "remove-price-override", value_name = "MODEL")]
    pub remove_price_overrides: Vec<String>,
}

impl UpdateArgs {
    fn is_empty(&self) -> bool {
        self.name.is_none()
            && self.tier.is_none()
            && self.prompt.is_empty()
            && self.vars.is_empty()
            && self.clear_vars.is_empty()
            && self.routes.is_empty()
            && self.remove_routes.is_empty()
            && self.fallbacks.is_empty()
            && self.clear_fallbacks.is_empty()
            && self.bedrock_profiles.is_empty()
            && self.remove_bedrock_profiles.is_empty()
            && self.cache.is_none()
            && self.cache_ttl.is_none()
            && self.retrieval.is_none()
            && self.retrieval_top_k.is_none()
            && self.retry_invalid_output.is_none()
            && self.limits.is_empty()
            && self.reset_limits.is_empty()
            && self.degrade_at.is_none()
            && self.degrade.is_empty()
            && self.remove_degrade.is_empty()
            && !self.no_degradation
            && self.price_overrides.is_empty()
            && self.remove_price_overrides.is_empty()
    }
}

#[derive(clap::Args, Debug)]
pub struct RegisterArgs {
    /// The tenant that owns the model.
    #[arg(value_parser = parse::tenant_id)]
    pub tenant: TenantId,
    /// The provider that hosts the fine-tuned model.
    #[arg(long, value_enum)]
    pub provider: ProviderArg,
    /// The provider's model id, e.g. `ft:gpt-4o-mini-2024-07-18:acme::sup01`.
    #[arg(long)]
    pub model: String,
    /// Move the model from the tenant that owns it now (that tenant's routes to it start
    /// getting 403).
    #[arg(long)]
    pub reassign: bool,
}

pub async fn execute<S>(
    store: &S,
    audit: &Auditor<'_>,
    command: TenantCommand,
) -> anyhow::Result<Output>
where
    S: TenantAdmin + TenantConfigSource + Catalog + ?Sized,
{
    match command {
        TenantCommand::Create(args) => create(store, audit, *args).await,
        TenantCommand::List => list(store).await,
        TenantCommand::Show { id } => show(store, &id).await,
        TenantCommand::Update(args) => update(store, audit, *args).await,
        TenantCommand::Disable { id } => set_disabled(store, audit, &id, true).await,
        TenantCommand::Enable { id } => set_disabled(store, audit, &id, false).await,
        TenantCommand::RegisterFineTuned(args) => register_fine_tuned(store, audit, args).await,
    }
}

pub async fn create<S>(store: &S, audit: &Auditor<'_>, args: CreateArgs) -> anyhow::Result<Output>
where
    S: TenantAdmin + TenantConfigSource + Catalog + ?Sized,
{
    let id = args.id;
    if store.tenant_config(&id).await?.is_some() {
        bail!("tenant `{id}` already exists; change it with `tollgate tenant update {id}`");
    }
    let name = display_name(&args.name)?;
    let cache_defaults = ResponseCachePolicy::default();
    let mut config = TenantConfig {
        tenant_id: id.clone(),
        display_name: name,
        tier: args.tier.into(),
        version: 0,
        system_prompt: match args.prompt.template()? {
            Some(template) => template,
            None => PromptTemplate::parse("").context("empty system prompt")?,
        },
        prompt_variables: unique("--var", args.vars)?,
        routes: unique("--route", args.routes)?,
        response_cache: ResponseCachePolicy {
            enabled: args.cache.is_some_and(OnOff::enabled),
            ttl_seconds: args.cache_ttl.unwrap_or(cache_defaults.ttl_seconds),
        },
        price_overrides: unique("--price-override", args.price_overrides)?,
        limits: LimitOverrides {
            tokens_per_minute: args.limits.tpm,
            requests_per_minute: args.limits.rpm,
            tokens_per_day: args.limits.daily_tokens,
            counter_shards: args.limits.counter_shards,
            storage_chunks: args.limits.storage_chunks,
            budget_daily_usd: args.limits.budget_daily_usd,
            budget_monthly_usd: args.limits.budget_monthly_usd,
            budget_alert_at_percent: args.limits.budget_alert_at,
        },
        degradation: None,
        disabled: args.disabled,
        retrieval: RetrievalPolicy {
            enabled: args.retrieval.is_some_and(OnOff::enabled),
            top_k: args
                .retrieval_top_k
                .unwrap_or(RetrievalPolicy::default().top_k),
            ..RetrievalPolicy::default()
        },
        conversations: Default::default(),
        structured_output: Default::default(),
        end_users: Default::default(),
        bedrock_profiles: Default::default(),
    };
    if let Some(threshold_percent) = args.degrade_at {
        config.degradation = Some(DegradationPolicy {
            threshold_percent,
            routes: unique("--degrade", args.degrade)?,
        });
    }
    let saved = tenant_admin::create(store, audit, config, chrono::Utc::now())
        .await
        .map_err(|e| refused(&id, e))?;
    let mut out = Output::stdout(format!(
        "created tenant `{id}` (version {})\n",
        saved.config.version
    ));
    out.stderr = saved.warnings;
    Ok(out)
}

pub async fn list<S>(store: &S) -> anyhow::Result<Output>
where
    S: TenantAdmin + ?Sized,
{
    let configs = store.tenant_configs().await?;
    if configs.is_empty() {
        return Ok(
            Output::stdout("").note("no tenants yet: create one with `tollgate tenant create`")
        );
    }
    let rows: Vec<Vec<String>> = configs
        .iter()
        .map(|c| {
            vec![
                c.tenant_id.to_string(),
                c.display_name.clone(),
                c.tier.as_str().to_owned(),
                c.routes.len().to_string(),
                if c.disabled { "yes" } else { "no" }.to_owned(),
                c.version.to_string(),
            ]
        })
        .collect();
    Ok(Output::stdout(table(
        &["ID", "NAME", "TIER", "ROUTES", "DISABLED", "VERSION"],
        &rows,
    )))
}

pub async fn show<S>(store: &S, id: &TenantId) -> anyhow::Result<Output>
where
    S: TenantConfigSource + ?Sized,
{
    let config = load(store, id).await?;
    let mut json = serde_json::to_string_pretty(&*config).context("rendering the configuration")?;
    json.push('\n');
    Ok(Output::stdout(json))
}

pub async fn update<S>(store: &S, audit: &Auditor<'_>, args: UpdateArgs) -> anyhow::Result<Output>
where
    S: TenantAdmin + TenantConfigSource + Catalog + ?Sized,
{
    if args.is_empty() {
        return Err(UsageError::new(
            "nothing to change: give at least one flag (see `tollgate tenant update --help`)",
        )
        .into());
    }
    let current = load(store, &args.id).await?;
    let mut config = (*current).clone();
    apply(&mut config, args)?;
    let id = config.tenant_id.clone();
    let saved = tenant_admin::replace(
        store,
        audit,
        &id,
        Expect::Version(current.version),
        config,
        chrono::Utc::now(),
    )
    .await
    .map_err(|e| refused(&id, e))?;
    if !saved.changed {
        return Ok(Output::stdout(format!(
            "tenant `{id}` unchanged (version {})\n",
            current.version
        )));
    }
    let mut out = Output::stdout(format!(
        "updated tenant `{id}` (version {} -> {})\n",
        current.version, saved.config.version
    ));
    out.stderr = saved.warnings;
    Ok(out)
}

pub async fn set_disabled<S>(
    store: &S,
    audit: &Auditor<'_>,
    id: &TenantId,
    disabled: bool,
) -> anyhow::Result<Output>
where
    S: TenantAdmin + TenantConfigSource + ?Sized,
{
    let current = load(store, id).await?;
    let state = if disabled { "disabled" } else { "enabled" };
    if current.disabled == disabled {
        return Ok(Output::stdout(format!(
            "tenant `{id}` is already {state}\n"
        )));
    }
    let saved = tenant_admin::set_disabled(
        store,
        audit,
        id,
        disabled,
        Expect::Version(current.version),
        chrono::Utc::now(),
    )
    .await
    .map_err(|e| refused(id, e))?;
    let version = saved.config.version;
    let mut out = Output::stdout(format!("tenant `{id}` {state} (version {version})\n"));
    if disabled {
        out = out.note(
            "its API keys are refused with 401 once running gateways refresh their directory \
             cache (TOLLGATE_DIRECTORY_CACHE_SECS, 30 s by default)",
        );
    }
    Ok(out)
}

pub async fn register_fine_tuned<S>(
    store: &S,
    audit: &Auditor<'_>,
    args: RegisterArgs,
) -> anyhow::Result<Output>
where
    S: TenantAdmin + TenantConfigSource + ?Sized,
{
    let tenant = args.tenant;
    load(store, &tenant).await?;
    let provider = args.provider.into();
    let model = args.model.trim();
    if model.is_empty() {
        return Err(UsageError::new("--model is empty").into());
    }
    let before = store.fine_tuned_owner(provider, model).await?;
    match &before {
        Some(owner) if *owner == tenant => {
            return Ok(Output::stdout(format!(
                "{provider} model `{model}` is already registered to `{tenant}`\n"
            )));
        }
        Some(owner) if !args.reassign => bail!(
            "{provider} model `{model}` is registered to tenant `{owner}`; pass --reassign to \
             move it to `{tenant}` (then `{owner}`'s routes to it are refused)"
        ),
        _ => {}
    }
    store.register_fine_tuned(provider, model, &tenant).await?;
    // In the new owner's log, and in the previous owner's when the model moves away from it.
    let owner = |t: &TenantId| serde_json::json!({"owner": t});
    let now = chrono::Utc::now();
    for log in std::iter::once(&tenant).chain(before.as_ref()) {
        audit
            .record_values(
                Some(log),
                AuditAction::FineTunedRegister,
                format!("fine_tuned/{provider}/{model}"),
                (before.as_ref().map(owner).as_ref(), &owner(&tenant)),
                now,
            )
            .await?;
    }
    Ok(Output::stdout(format!(
        "registered {provider} model `{model}` to tenant `{tenant}`\n"
    )))
}

/// The configuration of `id`, or a clear error.
/// A refused change in the operator's words (exit 1; nothing was written).
pub(super) fn refused(id: &TenantId, err: TenantAdminError) -> anyhow::Error {
    match err {
        TenantAdminError::Exists(_) => anyhow::anyhow!(
            "tenant `{id}` already exists; change it with `tollgate tenant update {id}`"
        ),
        TenantAdminError::Conflict {
            current: Some(v), ..
        } => anyhow::anyhow!(
            "tenant `{id}` was changed by someone else while this command ran (it is now at \
             version {v}); nothing was written: run the command again"
        ),
        TenantAdminError::Conflict { current: None, .. } => {
            anyhow::anyhow!("tenant `{id}` was deleted while this command ran; nothing was written")
        }
        other => anyhow::anyhow!(other.to_string()),
    }
}

pub(super) async fn load<S>(
    store: &S,
    id: &TenantId,
) -> anyhow::Result<std::sync::Arc<TenantConfig>>
where
    S: TenantConfigSource + ?Sized,
{
    store.tenant_config(id).await?.with_context(|| {
        format!("no tenant `{id}` (see `tollgate tenant list`, or create it with `tollgate tenant create`)")
    })
}

fn display_name(raw: &str) -> anyhow::Result<String> {
    let name = raw.trim();
    if name.is_empty() {
        return Err(UsageError::new("--name is empty").into());
    }
    Ok(name.to_owned())
}

/// Collects repeated `KEY=VALUE`-style flags, refusing a key given twice.
fn unique<V>(flag: &str, pairs: Vec<(String, V)>) -> anyhow::Result<BTreeMap<String, V>> {
    let mut map = BTreeMap::new();
    for (key, value) in pairs {
        if map.insert(key.clone(), value).is_some() {
            return Err(UsageError::new(format!("{flag} `{key}` is given twice")).into());
        }
    }
    Ok(map)
}

/// Refuses a name that one flag sets and another removes.
fn disjoint(
    set_flag: &str,
    set: &[String],
    remove_flag: &str,
    remove: &[String],
) -> anyhow::Result<()> {
    if let Some(key) = set.iter().find(|k| remove.contains(k)) {
        return Err(
            UsageError::new(format!("`{key}` is both in {set_flag} and {remove_flag}")).into(),
        );
    }
    Ok(())
}

fn remove_existing<V>(
    map: &mut BTreeMap<String, V>,
    what: &str,
    keys: &[String],
) -> anyhow::Result<()> {
    for key in keys {
        if map.remove(key).is_none() {
            bail!("the tenant has no {what} `{key}` to remove");
        }
    }
    Ok(())
}

/// Applies an update's flags to `config`.
fn apply(config: &mut TenantConfig, args: UpdateArgs) -> anyhow::Result<()> {
    if let Some(name) = &args.name {
        config.display_name = display_name(name)?;
    }
    if let Some(tier) = args.tier {
        config.tier = tier.into();
    }
    if let Some(template) = args.prompt.template()? {
        config.system_prompt = template;
    }

    disjoint(
        "--var",
        &keys_of(&args.vars),
        "--clear-var",
        &args.clear_vars,
    )?;
    remove_existing(
        &mut config.prompt_variables,
        "prompt variable",
        &args.clear_vars,
    )?;
    config.prompt_variables.extend(unique("--var", args.vars)?);

    disjoint(
        "--route",
        &keys_of(&args.routes),
        "--remove-route",
        &args.remove_routes,
    )?;
    remove_existing(&mut config.routes, "route", &args.remove_routes)?;
    for (name, mut route) in unique("--route", args.routes)? {
        // Re-stating a route's target keeps the failover chain it has (set in the config JSON).
        if let Some(old) = config.routes.get(&name)
            && old.target() == route.target()
            && old.kind == route.kind
        {
            route.fallbacks = old.fallbacks.clone();
        }
        config.routes.insert(name, route);
    }
    let no_route = |name: &str| anyhow::anyhow!("no route `{name}` to change the fallbacks of");
    for name in &args.clear_fallbacks {
        let route = config.routes.get_mut(name).ok_or_else(|| no_route(name))?;
        route.fallbacks.clear();
    }
    for (name, target) in args.fallbacks {
        let route = config
            .routes
            .get_mut(&name)
            .ok_or_else(|| no_route(&name))?;
        route.fallbacks.push(target);
    }
    disjoint(
        "--bedrock-profile",
        &keys_of(&args.bedrock_profiles),
        "--remove-bedrock-profile",
        &args.remove_bedrock_profiles,
    )?;
    remove_existing(
        &mut config.bedrock_profiles,
        "Bedrock profile",
        &args.remove_bedrock_profiles,
    )?;
    for (model, arn) in unique("--bedrock-profile", args.bedrock_profiles)? {
        config.bedrock_profiles.insert(model, arn);
    }

    if let Some(cache) = args.cache {
        config.response_cache.enabled = cache.enabled();
    }
    if let Some(ttl) = args.cache_ttl {
        config.response_cache.ttl_seconds = ttl;
    }
    if let Some(retrieval) = args.retrieval {
        config.retrieval.enabled = retrieval.enabled();
    }
    if let Some(k) = args.retrieval_top_k {
        config.retrieval.top_k = k;
    }
    if let Some(retry) = args.retry_invalid_output {
        config.structured_output.retry_on_invalid = retry.enabled();
    }

    let limits = &mut config.limits;
    if let Some(shards) = args.limits.counter_shards {
        limits.counter_shards = Some(shards);
    }
    if let Some(chunks) = args.limits.storage_chunks {
        limits.storage_chunks = Some(chunks);
    }
    for (name, reset) in [
        (LimitName::Tpm, &mut limits.tokens_per_minute),
        (LimitName::Rpm, &mut limits.requests_per_minute),
        (LimitName::DailyTokens, &mut limits.tokens_per_day),
    ] {
        if args.reset_limits.contains(&name) {
            *reset = None;
        }
    }
    for (flag, name, value, slot) in [
        (
            "--budget-daily-usd",
            LimitName::BudgetDailyUsd,
            args.limits.budget_daily_usd,
            &mut limits.budget_daily_usd,
        ),
        (
            "--budget-monthly-usd",
            LimitName::BudgetMonthlyUsd,
            args.limits.budget_monthly_usd,
            &mut limits.budget_monthly_usd,
        ),
    ] {
        match (value, args.reset_limits.contains(&name)) {
            (Some(_), true) => {
                return Err(UsageError::new(format!("{flag} is both set and reset")).into());
            }
            (Some(cap), false) => *slot = Some(cap),
            (None, true) => *slot = None,
            (None, false) => {}
        }
    }
    match (
        args.limits.budget_alert_at,
        args.reset_limits.contains(&LimitName::BudgetAlertAt),
    ) {
        (Some(_), true) => {
            return Err(UsageError::new("--budget-alert-at is both set and reset").into());
        }
        (Some(percent), false) => limits.budget_alert_at_percent = Some(percent),
        (None, true) => limits.budget_alert_at_percent = None,
        (None, false) => {}
    }
    for (flag, name, value, slot) in [
        (
            "--tpm",
            LimitName::Tpm,
            args.limits.tpm,
            &mut limits.tokens_per_minute,
        ),
        (
            "--rpm",
            LimitName::Rpm,
            args.limits.rpm,
            &mut limits.requests_per_minute,
        ),
        (
            "--daily-tokens",
            LimitName::DailyTokens,
            args.limits.daily_tokens,
            &mut limits.tokens_per_day,
        ),
    ] {
        if let Some(value) = value {
            if args.reset_limits.contains(&name) {
                return Err(UsageError::new(format!("{flag} is both set and reset")).into());
            }
            *slot = Some(value);
        }
    }

    if args.no_degradation {
        config.degradation = None;
    } else if args.degrade_at.is_some()
        || !args.degrade.is_empty()
        || !args.remove_degrade.is_empty()
    {
        disjoint(
            "--degrade",
            &keys_of(&args.degrade),
            "--remove-degrade",
            &args.remove_degrade,
        )?;
        let mut policy = match (config.degradation.take(), args.degrade_at) {
            (Some(policy), _) => policy,
            (None, Some(threshold_percent)) => DegradationPolicy {
                threshold_percent,
                routes: BTreeMap::new(),
            },
            (None, None) => {
                return Err(UsageError::new(
                    "the tenant has no degradation policy yet: give --degrade-at PERCENT too",
                )
                .into());
            }
        };
        if let Some(threshold) = args.degrade_at {
            policy.threshold_percent = threshold;
        }
        remove_existing(&mut policy.routes, "degradation of", &args.remove_degrade)?;
        let only_removing = args.degrade_at.is_none() && args.degrade.is_empty();
        policy.routes.extend(unique("--degrade", args.degrade)?);
        if policy.routes.is_empty() && !only_removing {
            return Err(UsageError::new(
                "a degradation policy needs at least one --degrade FROM=TO",
            )
            .into());
        }
        // Removing the last mapping removes the policy: one that maps nothing does nothing.
        config.degradation = (!policy.routes.is_empty()).then_some(policy);
    }

    disjoint(
        "--price-override",
        &keys_of(&args.price_overrides),
        "--remove-price-override",
        &args.remove_price_overrides,
    )?;
    remove_existing(
        &mut config.price_overrides,
        "price override for",
        &args.remove_price_overrides,
    )?;
    config
        .price_overrides
        .extend(unique("--price-override", args.price_overrides)?);
    Ok(())
}

fn keys_of<V>(pairs: &[(String, V)]) -> Vec<String> {
    pairs.iter().map(|(k, _)| k.clone()).collect()
}
