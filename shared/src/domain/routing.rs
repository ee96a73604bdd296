//! Model routing: a logical model name → the tenant's route, with the fine-tuned ownership check.

use super::ids::TenantId;
use super::tenant::{Route, RouteKind, TenantConfig};

/// Why a requested model cannot be served to this tenant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// Not one of the tenant's routes.
    #[error("the model `{model}` is not one of this tenant's routes")]
    UnknownModel {
        /// The model name the client asked for.
        model: String,
    },
    /// The route serves another API (an embeddings model asked to chat, or the reverse).
    #[error("the model `{model}` is served by {}, not this endpoint", kind.endpoint())]
    WrongKind {
        /// The model name the client asked for.
        model: String,
        /// What the route serves.
        kind: RouteKind,
    },
    /// The route points at a fine-tuned model another tenant owns (or no one is known to).
    #[error("the model `{model}` is a fine-tuned model this tenant does not own")]
    ForeignFineTuned {
        /// The model name the client asked for.
        model: String,
    },
}

/// Finds the route for `requested` on an endpoint serving `kind`. Unknown names are refused,
/// never a fallback to a default; a route of another kind is refused by name.
pub fn resolve<'a>(
    config: &'a TenantConfig,
    requested: &str,
    kind: RouteKind,
) -> Result<&'a Route, RouteError> {
    let route = config
        .routes
        .get(requested)
        .ok_or_else(|| RouteError::UnknownModel {
            model: requested.to_owned(),
        })?;
    if route.kind != kind {
        return Err(RouteError::WrongKind {
            model: requested.to_owned(),
            kind: route.kind,
        });
    }
    Ok(route)
}

/// A fine-tuned route may only be served to the tenant that owns the fine-tuned model.
/// `owner` is what the fine-tuned model registry says; an unregistered fine-tuned model is
/// refused too (fail closed), because its owner cannot be proven.
pub fn check_fine_tuned_owner(
    tenant: &TenantId,
    requested: &str,
    route: &Route,
    owner: Option<&TenantId>,
) -> Result<(), RouteError> {
    if !route.is_fine_tuned() {
        return Ok(());
    }
    match owner {
        Some(owner) if owner == tenant => Ok(()),
        _ => Err(RouteError::ForeignFineTuned {
            model: requested.to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::domain::prompt::PromptTemplate;
    use crate::domain::tenant::{ProviderKind, ResponseCachePolicy, RouteKind, Tier};

    fn tenant(id: &str) -> TenantId {
        TenantId::parse(id).unwrap()
    }

    fn config() -> TenantConfig {
        TenantConfig {
            tenant_id: tenant("acme"),
            display_name: "Acme".into(),
            tier: Tier::Pro,
            version: 1,
            system_prompt: PromptTemplate::parse("hi").unwrap(),
            prompt_variables: BTreeMap::new(),
            routes: BTreeMap::from([
                (
                    "fast".to_owned(),
                    Route {
                        fallbacks: Vec::new(),
                        provider: ProviderKind::Openai,
                        model: "gpt-4o-mini".into(),
                        fine_tuned: false,
                        kind: RouteKind::Chat,
                    },
                ),
                (
                    "acme-support".to_owned(),
                    Route {
                        fallbacks: Vec::new(),
                        provider: ProviderKind::Openai,
                        model: "ft:gpt-4o-mini-2024-07-18:acme::a1".into(),
                        fine_tuned: true,
                        kind: RouteKind::Chat,
                    },
                ),
            ]),
            response_cache: ResponseCachePolicy::default(),
            price_overrides: BTreeMap::new(),
            limits: Default::default(),
            degradation: None,
            disabled: false,
            retrieval: Default::default(),
            conversations: Default::default(),
            structured_output: Default::default(),
            end_users: Default::default(),
            bedrock_profiles: Default::default(),
        }
    }

    #[test]
    fn a_logical_model_resolves_to_its_route() {
        let cfg = config();
        assert_eq!(
            resolve(&cfg, "fast", RouteKind::Chat).unwrap().model,
            "gpt-4o-mini"
        );
    }

    #[test]
    fn a_route_serves_only_its_own_kind_of_endpoint() {
        let mut cfg = config();
        cfg.routes.get_mut("fast").unwrap().kind = RouteKind::Embeddings;
        assert_eq!(
            resolve(&cfg, "fast", RouteKind::Chat).unwrap_err(),
            RouteError::WrongKind {
                model: "fast".into(),
                kind: RouteKind::Embeddings
            }
        );
        assert!(resolve(&cfg, "fast", RouteKind::Embeddings).is_ok());
        assert!(matches!(
            resolve(&cfg, "acme-support", RouteKind::Embeddings),
            Err(RouteError::WrongKind {
                kind: RouteKind::Chat,
                ..
            })
        ));
    }

    #[test]
    fn an_unknown_model_is_not_found_rather_than_defaulted() {
        let cfg = config();
        let err = resolve(&cfg, "gpt-4o", RouteKind::Chat).unwrap_err();
        assert_eq!(
            err,
            RouteError::UnknownModel {
                model: "gpt-4o".into()
            }
        );
    }

    #[test]
    fn a_fine_tuned_route_is_served_to_its_owner() {
        let cfg = config();
        let route = resolve(&cfg, "acme-support", RouteKind::Chat).unwrap();
        assert!(
            check_fine_tuned_owner(
                &tenant("acme"),
                "acme-support",
                route,
                Some(&tenant("acme"))
            )
            .is_ok()
        );
    }

    #[test]
    fn a_route_to_another_tenants_fine_tuned_model_is_refused() {
        let cfg = config();
        let route = resolve(&cfg, "acme-support", RouteKind::Chat).unwrap();
        let err = check_fine_tuned_owner(
            &tenant("acme"),
            "acme-support",
            route,
            Some(&tenant("globex")),
        )
        .unwrap_err();
        assert_eq!(
            err,
            RouteError::ForeignFineTuned {
                model: "acme-support".into()
            }
        );
    }

    #[test]
    fn an_unregistered_fine_tuned_model_is_refused() {
        let route = Route {
            fallbacks: Vec::new(),
            provider: ProviderKind::Openai,
            model: "ft:gpt-4o:someone::zzz".into(),
            fine_tuned: false,
            kind: RouteKind::Chat,
        };
        assert!(check_fine_tuned_owner(&tenant("acme"), "x", &route, None).is_err());
    }

    #[test]
    fn base_model_routes_need_no_owner() {
        let cfg = config();
        let route = resolve(&cfg, "fast", RouteKind::Chat).unwrap();
        assert!(check_fine_tuned_owner(&tenant("acme"), "fast", route, None).is_ok());
    }
}
