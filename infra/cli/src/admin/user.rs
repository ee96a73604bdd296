//! `tollgate user limits set|show|clear TENANT USER`: a tenant's limits on its own end users
//! (the `user` of its requests). `USER` is one end user's id, or `*` for the defaults that
//! apply to every user, including one never seen before; a user's own limits replace single
//! default fields. They live in the tenant's configuration (one write; gateways pick it up
//! within their directory cache TTL), at most `MAX_USER_OVERRIDES` per tenant.

use tollgate::domain::audit::AuditAction;
use tollgate::domain::budget::{BudgetCap, MAX_USER_OVERRIDES, UserLimits};
use tollgate::domain::ids::TenantId;
use tollgate::domain::limits::MAX_LIMIT;
use tollgate::domain::profile::UserId;
use tollgate::ports::store::{Expect, TenantAdmin, TenantConfigSource};
use tollgate::service::audit::Auditor;
use tollgate::service::tenant_admin::{self, Edit, TenantAdminError};

use super::parse;
use super::tenant::load;
use super::{Output, StoreArgs, UsageError, table};

#[derive(clap::Args, Debug)]
pub struct UserArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(subcommand)]
    pub command: UserCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum UserCommand {
    /// Limits on a tenant's end users.
    #[command(subcommand)]
    Limits(LimitsCommand),
}

/// Which users a command is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Who {
    /// `*`: the defaults, for every user.
    Everyone,
    /// One end user.
    One(UserId),
}

fn who(raw: &str) -> Result<Who, String> {
    if raw == "*" {
        return Ok(Who::Everyone);
    }
    UserId::parse(raw).map(Who::One).map_err(|e| e.to_string())
}

impl std::fmt::Display for Who {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Who::Everyone => f.write_str("every end user (defaults)"),
            Who::One(user) => write!(f, "end user `{user}`"),
        }
    }
}

#[derive(clap::Subcommand, Debug)]
pub enum LimitsCommand {
    /// Set limits (only the fields given change). Enforced atomically with the tenant's own
    /// limits; a refusal names the end user.
    #[command(after_help = "Examples:\n  \
        tollgate user limits set acme '*' --tpm 20000 --daily-usd 2\n  \
        tollgate user limits set acme user-42 --daily-usd unlimited")]
    Set {
        /// The tenant.
        #[arg(value_parser = parse::tenant_id)]
        tenant: TenantId,
        /// The end user's id, or `*` for the defaults every user gets.
        #[arg(value_parser = who)]
        user: Who,
        /// Tokens per sliding minute.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=MAX_LIMIT))]
        tpm: Option<u64>,
        /// Tokens per UTC day.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=MAX_LIMIT))]
        daily_tokens: Option<u64>,
        /// USD per UTC day (e.g. 0.50), or `unlimited` (lifts a default for this user).
        #[arg(long, value_name = "USD", value_parser = BudgetCap::parse)]
        daily_usd: Option<BudgetCap>,
    },
    /// Show the limits in force for a user (their own over the defaults), or the defaults.
    Show {
        #[arg(value_parser = parse::tenant_id)]
        tenant: TenantId,
        #[arg(value_parser = who)]
        user: Who,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Remove a user's own limits (the defaults apply again), or the defaults (`*`).
    Clear {
        #[arg(value_parser = parse::tenant_id)]
        tenant: TenantId,
        #[arg(value_parser = who)]
        user: Who,
    },
}

pub async fn execute<S>(
    store: &S,
    audit: &Auditor<'_>,
    command: UserCommand,
) -> anyhow::Result<Output>
where
    S: TenantAdmin + TenantConfigSource + ?Sized,
{
    let UserCommand::Limits(command) = command;
    match command {
        LimitsCommand::Set {
            tenant,
            user,
            tpm,
            daily_tokens,
            daily_usd,
        } => {
            let change = UserLimits {
                tokens_per_minute: tpm,
                tokens_per_day: daily_tokens,
                usd_per_day: daily_usd,
            };
            if change.is_empty() {
                return Err(UsageError::new(
                    "nothing to set: give --tpm, --daily-tokens or --daily-usd",
                )
                .into());
            }
            edit(store, audit, &tenant, &user, |limits| {
                Some(limits.unwrap_or_default().overridden_by(&change))
            })
            .await
        }
        LimitsCommand::Clear { tenant, user } => edit(store, audit, &tenant, &user, |_| None).await,
        LimitsCommand::Show { tenant, user, json } => {
            let config = load(store, &tenant).await?;
            let policy = &config.end_users;
            let (limits, own) = match &user {
                Who::Everyone => (policy.defaults, None),
                Who::One(id) => (policy.limits_for(id), policy.overrides.get(id).copied()),
            };
            if json {
                let value = serde_json::json!({
                    "tenant": tenant,
                    "user": match &user { Who::Everyone => "*".to_owned(), Who::One(id) => id.to_string() },
                    "limits": limits,
                    "own": own,
                });
                return Ok(Output::stdout(format!("{value}\n")));
            }
            let show = |v: Option<String>| v.unwrap_or_else(|| "-".to_owned());
            let source = |set: bool| if set { "own" } else { "default" };
            let own = own.unwrap_or_default();
            let rows = vec![
                vec![
                    "tokens per minute".to_owned(),
                    show(limits.tokens_per_minute.map(|n| n.to_string())),
                    source(own.tokens_per_minute.is_some()).to_owned(),
                ],
                vec![
                    "tokens per UTC day".to_owned(),
                    show(limits.tokens_per_day.map(|n| n.to_string())),
                    source(own.tokens_per_day.is_some()).to_owned(),
                ],
                vec![
                    "USD per UTC day".to_owned(),
                    show(limits.usd_per_day.map(|c| c.to_string())),
                    source(own.usd_per_day.is_some()).to_owned(),
                ],
            ];
            Ok(Output::stdout(table(&["LIMIT", "VALUE", "FROM"], &rows))
                .note(format!("{user} of tenant `{tenant}`; `-`: not limited")))
        }
    }
}

/// Applies `change` to the limits of `who` (`None` in: none set; `None` out: remove them) and
/// stores the configuration when it changed: a conditional tenant write (`tenant_admin`),
/// recorded in the audit log as a `tenant.update`.
async fn edit<S>(
    store: &S,
    audit: &Auditor<'_>,
    tenant: &TenantId,
    who: &Who,
    change: impl FnOnce(Option<UserLimits>) -> Option<UserLimits>,
) -> anyhow::Result<Output>
where
    S: TenantAdmin + TenantConfigSource + ?Sized,
{
    let current = load(store, tenant).await?;
    let edit = Edit {
        id: tenant,
        expect: Expect::Version(current.version),
        action: AuditAction::TenantUpdate,
    };
    let saved = tenant_admin::update(store, audit, edit, chrono::Utc::now(), |config| {
        let policy = &mut config.end_users;
        match who {
            Who::Everyone => {
                let before = (!policy.defaults.is_empty()).then_some(policy.defaults);
                policy.defaults = change(before).unwrap_or_default();
            }
            Who::One(id) => match change(policy.overrides.get(id).copied()) {
                Some(limits) => {
                    policy.overrides.insert(id.clone(), limits);
                }
                None => {
                    policy.overrides.remove(id);
                }
            },
        }
        if policy.overrides.len() > MAX_USER_OVERRIDES {
            return Err(TenantAdminError::Invalid(format!(
                "tenant `{tenant}` already has {MAX_USER_OVERRIDES} end users with their own \
                 limits; raise the defaults (`*`) or clear some"
            )));
        }
        tenant_admin::check(config)
    })
    .await
    .map_err(|err| match err {
        TenantAdminError::Invalid(message) => UsageError::new(message).into(),
        other => super::tenant::refused(tenant, other),
    })?;
    if !saved.changed {
        return Ok(Output::stdout(format!(
            "{who} of tenant `{tenant}`: unchanged (version {})\n",
            current.version
        )));
    }
    Ok(Output::stdout(format!(
        "{who} of tenant `{tenant}`: limits updated (version {} -> {})\n",
        current.version, saved.config.version
    ))
    .note("running gateways apply it within their directory cache TTL (TOLLGATE_DIRECTORY_CACHE_SECS, 30 s by default)"))
}
