//! End-user profiles: the `/v1/users/{user_id}/profile` routes, and the profile a chat
//! request's system prompt is rendered with.
//!
//! The tenant is the caller's (its bearer key's), and every store call names it, so a tenant reads
//! and writes its own users' profiles and no path or body can name another tenant's. Profiles
//! are not cached: a profile changes whenever the tenant's app says so, and the next chat request
//! must see it. The read costs one GetItem, and only for requests that name a `user` under a
//! template that uses profile variables. A failed read renders the prompt without the profile
//! (logged, never an error): the profile personalizes an answer, it does not gate it. Profile
//! contents are never logged.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::domain::ids::{RequestId, TenantId};
use crate::domain::profile::{ProfileRecord, UserId, UserProfile};
use crate::domain::tenant::TenantConfig;
use crate::error::GatewayError;
use crate::ports::Clock;
use crate::ports::store::ProfileStore;

use super::caller::Caller;

/// The profile a request's prompt renders with, when it is already known.
#[derive(Debug, Clone, Default)]
pub(crate) enum PromptProfile {
    /// Not read yet: read it if the template and the request need it.
    #[default]
    Unread,
    /// Already decided for this request (a degraded request re-prepared): `None` is no profile.
    Read(Option<Arc<UserProfile>>),
}

/// `GET`/`PUT` response: the stored profile.
#[derive(Debug, Clone, Serialize)]
pub struct ProfileView {
    /// Always `user.profile`.
    pub object: &'static str,
    /// The end user, as the tenant names them.
    pub user_id: UserId,
    /// The profile as stored (validated).
    pub profile: UserProfile,
    /// When the profile was last written.
    pub updated_at: DateTime<Utc>,
}

impl From<ProfileRecord> for ProfileView {
    fn from(record: ProfileRecord) -> Self {
        Self {
            object: "user.profile",
            user_id: record.user_id,
            profile: record.profile,
            updated_at: record.updated_at,
        }
    }
}

/// `DELETE` response, in OpenAI's deleted-object shape.
#[derive(Debug, Clone, Serialize)]
pub struct ProfileDeleted {
    /// Always `user.profile`.
    pub object: &'static str,
    /// The end user whose profile was deleted.
    pub user_id: UserId,
    /// Always `true`: deleting a profile that does not exist is a 404 instead.
    pub deleted: bool,
}

/// The `/v1/users/{user_id}/profile` routes. Built from the chat service's ports
/// (`ChatService::profile_service`): the same profile store and clock.
pub struct ProfileService {
    /// `None` where the deployment has no profile store.
    pub profiles: Option<Arc<dyn ProfileStore>>,
    /// Stamps a stored profile's `updated_at`.
    pub clock: Arc<dyn Clock>,
}

impl ProfileService {
    /// `PUT /v1/users/{user_id}/profile`: stores `body` (a JSON object) as the user's profile,
    /// replacing any previous one.
    pub async fn put_profile(
        &self,
        caller: &Caller,
        user_segment: &str,
        body: &[u8],
    ) -> Result<ProfileView, GatewayError> {
        let (tenant, store) = self.profile_access(caller)?;
        let user_id = UserId::from_path_segment(user_segment)?;
        let record = ProfileRecord {
            tenant_id: tenant,
            user_id,
            profile: UserProfile::from_json(body)?,
            updated_at: self.clock.now(),
        };
        store.put_profile(&record).await?;
        Ok(record.into())
    }

    /// `GET /v1/users/{user_id}/profile`.
    pub async fn get_profile(
        &self,
        caller: &Caller,
        user_segment: &str,
    ) -> Result<ProfileView, GatewayError> {
        let (tenant, store) = self.profile_access(caller)?;
        let user_id = UserId::from_path_segment(user_segment)?;
        store
            .profile(&tenant, &user_id)
            .await?
            .map(ProfileView::from)
            .ok_or_else(|| GatewayError::ProfileNotFound {
                user_id: user_id.to_string(),
            })
    }

    /// `DELETE /v1/users/{user_id}/profile`.
    pub async fn delete_profile(
        &self,
        caller: &Caller,
        user_segment: &str,
    ) -> Result<ProfileDeleted, GatewayError> {
        let (tenant, store) = self.profile_access(caller)?;
        let user_id = UserId::from_path_segment(user_segment)?;
        if store.delete_profile(&tenant, &user_id).await? {
            Ok(ProfileDeleted {
                object: "user.profile",
                user_id,
                deleted: true,
            })
        } else {
            Err(GatewayError::ProfileNotFound {
                user_id: user_id.to_string(),
            })
        }
    }

    /// The caller's tenant and the profile store.
    fn profile_access(
        &self,
        caller: &Caller,
    ) -> Result<(TenantId, &Arc<dyn ProfileStore>), GatewayError> {
        let store = self.profiles.as_ref().ok_or_else(|| {
            GatewayError::invalid(
                "end-user profiles are not available in this deployment",
                Some("user_id".to_owned()),
            )
        })?;
        Ok((caller.tenant.clone(), store))
    }
}

/// The profile `config`'s system prompt renders with for a request naming `user`: read from
/// `store` only when the template uses profile variables and `user` is a valid user id; `None`
/// (variables render empty) when there is no such profile or the read fails.
pub(crate) async fn prompt_profile(
    store: Option<&Arc<dyn ProfileStore>>,
    request_id: &RequestId,
    tenant: &TenantId,
    config: &TenantConfig,
    user: Option<&UserId>,
    known: PromptProfile,
) -> Option<Arc<UserProfile>> {
    if let PromptProfile::Read(profile) = known {
        return profile;
    }
    if !config.system_prompt.uses_profile(&config.prompt_variables) {
        return None;
    }
    let store = store?;
    match store.profile(tenant, user?).await {
        Ok(record) => record.map(|r| Arc::new(r.profile)),
        Err(err) => {
            tracing::warn!(
                request_id = %request_id,
                tenant_id = %tenant,
                error = %err,
                "end-user profile read failed; rendering the system prompt without it"
            );
            None
        }
    }
}
