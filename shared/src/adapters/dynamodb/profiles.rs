//! End-user profiles on the tenants table: `PROFILE#{tenant}#{user}` / `PROFILE`, holding the
//! record (tenant, user, profile, time) as JSON. Put: one PutItem; read: one strongly
//! consistent GetItem (a PUT is seen by the next chat request); delete: one DeleteItem.
//!
//! The partition key starts with `PROFILE#` rather than sharing the tenant's `TENANT#{id}`
//! partition: every user is its own partition (a tenant with many active users does not
//! concentrate its reads on one), and IAM can scope the invoke function's writes to these
//! items alone (`dynamodb:LeadingKeys` like `PROFILE#*`). Tenant ids cannot contain `#` and user
//! ids cannot either, so no two `(tenant, user)` pairs share a key. Nothing lists a tenant's
//! profiles, so no index is needed.

use async_trait::async_trait;
use aws_sdk_dynamodb::types::ReturnValue;

use super::DynamoStore;
use super::codec::{Item, get_json, json, key_pk_sk};
use super::error::{self, corrupt};
use crate::domain::ids::TenantId;
use crate::domain::profile::{ProfileRecord, UserId};
use crate::ports::store::{ProfileStore, StoreError};

const PROFILE_SK: &str = "PROFILE";

fn profile_pk(tenant: &TenantId, user: &UserId) -> String {
    format!("PROFILE#{tenant}#{user}")
}

#[async_trait]
impl ProfileStore for DynamoStore {
    async fn put_profile(&self, record: &ProfileRecord) -> Result<(), StoreError> {
        let mut item: Item = key_pk_sk(profile_pk(&record.tenant_id, &record.user_id), PROFILE_SK);
        item.insert("record".into(), json(record)?);
        self.put_tenants_item(item).await
    }

    async fn profile(
        &self,
        tenant: &TenantId,
        user: &UserId,
    ) -> Result<Option<ProfileRecord>, StoreError> {
        let Some(item) = self
            .get_tenants_item(profile_pk(tenant, user), PROFILE_SK)
            .await?
        else {
            return Ok(None);
        };
        let record: ProfileRecord = get_json(&item, "record")?;
        // The key already names the tenant and user; a record that names others is corrupt,
        // and is never served.
        if &record.tenant_id != tenant || &record.user_id != user {
            return Err(corrupt("profile record does not match its key"));
        }
        Ok(Some(record))
    }

    async fn delete_profile(&self, tenant: &TenantId, user: &UserId) -> Result<bool, StoreError> {
        self.trip();
        let out = self
            .client
            .delete_item()
            .table_name(&self.names.tenants)
            .set_key(Some(key_pk_sk(profile_pk(tenant, user), PROFILE_SK)))
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .map_err(|e| error::sdk("DeleteItem", e))?;
        Ok(out.attributes.is_some_and(|a| !a.is_empty()))
    }
}
