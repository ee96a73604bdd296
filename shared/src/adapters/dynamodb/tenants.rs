//! Tenants table: configs, API keys, the fine-tuned model registry.
//!
//! - `TENANT#{id}` / `CONFIG`: `config` (JSON), `version` (Number, the authoritative version),
//!   and `gsi1pk = TENANTS`, `gsi1sk = {id}`, so every config sits in one `by_tenant` partition
//!   sorted by id (listing is one Query; the write stays a single UpdateItem, so the version
//!   bump and the listing entry cannot disagree).
//! - `KEY#{prefix}` / `KEY`: the key's fields, `gsi1pk = TENANT#{id}`,
//!   `gsi1sk = KEY#{created_at}#{prefix}` (a tenant's keys, oldest first).
//! - `FT#{provider}#{model}` / `OWNER`: `owner`.

use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::ReturnValue;
use chrono::{DateTime, Utc};

use super::DynamoStore;
use super::codec::{
    self, GSI1PK, GSI1SK, Item, PK, get_json, get_s, get_time, get_u64, json, key_pk_sk, opt_s, s,
    time_key,
};
use super::error::{self, corrupt};
use super::tables::TENANTS_BY_TENANT;
use crate::domain::ids::TenantId;
use crate::domain::keys::{KeyHash, KeyPrefix, StoredKey};
use crate::domain::tenant::{ProviderKind, TenantConfig};
use crate::ports::store::{
    ApiKeyLookup, Expect, StoreError, TenantAdmin, TenantConfigSource, TenantPage,
};

const CONFIG_SK: &str = "CONFIG";
const KEY_SK: &str = "KEY";
const OWNER_SK: &str = "OWNER";
/// The `by_tenant` partition holding every tenant config.
const TENANTS_PARTITION: &str = "TENANTS";

fn tenant_pk(tenant: &TenantId) -> String {
    format!("TENANT#{tenant}")
}

fn key_pk(prefix: &KeyPrefix) -> String {
    format!("KEY#{prefix}")
}

fn fine_tuned_pk(provider: ProviderKind, model: &str) -> String {
    format!("FT#{provider}#{model}")
}

fn tenant_id(raw: &str) -> Result<TenantId, StoreError> {
    TenantId::parse(raw).map_err(corrupt)
}

fn decode_config(item: &Item) -> Result<Arc<TenantConfig>, StoreError> {
    let mut config: TenantConfig = get_json(item, "config")?;
    config.version = get_u64(item, "version")?;
    Ok(Arc::new(config))
}

fn encode_key(key: &StoredKey) -> Result<Item, StoreError> {
    let mut item = key_pk_sk(key_pk(&key.prefix), KEY_SK);
    item.insert("prefix".into(), s(key.prefix.as_str()));
    item.insert("hash".into(), s(key.hash.to_hex()));
    item.insert("tenant_id".into(), s(key.tenant_id.as_str()));
    item.insert("created_at".into(), s(time_key(key.created_at)));
    if let Some(revoked) = key.revoked_at {
        item.insert("revoked_at".into(), s(time_key(revoked)));
    }
    if let Some(name) = &key.name {
        item.insert("name".into(), s(name.as_str()));
    }
    if let Some(at) = key.expires_at {
        item.insert("expires_at".into(), s(time_key(at)));
    }
    if let Some(scopes) = &key.scopes {
        item.insert("scopes".into(), json(scopes)?);
    }
    item.insert(GSI1PK.into(), s(tenant_pk(&key.tenant_id)));
    item.insert(
        GSI1SK.into(),
        s(format!("KEY#{}#{}", time_key(key.created_at), key.prefix)),
    );
    Ok(item)
}

fn decode_key(item: &Item) -> Result<StoredKey, StoreError> {
    // `KeyPrefix` can only be made by parsing a presented key or by deserializing one.
    let prefix: KeyPrefix =
        serde_json::from_value(serde_json::Value::String(get_s(item, "prefix")?.to_owned()))
            .map_err(corrupt)?;
    let hash = KeyHash::from_hex(get_s(item, "hash")?)
        .ok_or_else(|| corrupt(format!("key {prefix}: hash is not 32 hex bytes")))?;
    let time = |name: &str| {
        opt_s(item, name)?
            .map(|raw| codec::parse_time(name, raw))
            .transpose()
    };
    Ok(StoredKey {
        prefix,
        hash,
        tenant_id: tenant_id(get_s(item, "tenant_id")?)?,
        created_at: get_time(item, "created_at")?,
        revoked_at: time("revoked_at")?,
        name: opt_s(item, "name")?.map(str::to_owned),
        expires_at: time("expires_at")?,
        scopes: match item.get("scopes") {
            Some(_) => Some(get_json(item, "scopes")?),
            None => None,
        },
    })
}

impl DynamoStore {
    /// One strongly consistent GetItem on the tenants table.
    pub(super) async fn get_tenants_item(
        &self,
        pk: String,
        sk: &str,
    ) -> Result<Option<Item>, StoreError> {
        self.trip();
        let out = self
            .client
            .get_item()
            .table_name(&self.names.tenants)
            .set_key(Some(key_pk_sk(pk, sk)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| error::sdk("GetItem", e))?;
        Ok(out.item)
    }

    /// Every item of one `by_tenant` partition (paginated), in sort-key order.
    async fn query_by_tenant(
        &self,
        partition: String,
        sk_prefix: Option<&str>,
    ) -> Result<Vec<Item>, StoreError> {
        let sort = sk_prefix.map(|p| ("begins_with(#sk, :sk)", p.to_owned()));
        self.query_all(self.by_tenant(partition, sort)).await
    }

    /// A Query on the `by_tenant` index for `partition`, and when `sort` is given, its key
    /// condition on the sort key (`#sk`, compared with `:sk`).
    fn by_tenant(
        &self,
        partition: String,
        sort: Option<(&str, String)>,
    ) -> aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder {
        let mut condition = String::from("#pk = :pk");
        let mut query = self
            .client
            .query()
            .table_name(&self.names.tenants)
            .index_name(TENANTS_BY_TENANT)
            .expression_attribute_names("#pk", GSI1PK)
            .expression_attribute_values(":pk", s(partition));
        if let Some((op, value)) = sort {
            condition.push_str(" AND ");
            condition.push_str(op);
            query = query
                .expression_attribute_names("#sk", GSI1SK)
                .expression_attribute_values(":sk", s(value));
        }
        query.key_condition_expression(condition)
    }
}

#[async_trait]
impl ApiKeyLookup for DynamoStore {
    async fn find_key(&self, prefix: &KeyPrefix) -> Result<Option<StoredKey>, StoreError> {
        self.get_tenants_item(key_pk(prefix), KEY_SK)
            .await?
            .map(|item| decode_key(&item))
            .transpose()
    }
}

#[async_trait]
impl TenantConfigSource for DynamoStore {
    async fn tenant_config(
        &self,
        tenant: &TenantId,
    ) -> Result<Option<Arc<TenantConfig>>, StoreError> {
        self.get_tenants_item(tenant_pk(tenant), CONFIG_SK)
            .await?
            .map(|item| decode_config(&item))
            .transpose()
    }

    async fn fine_tuned_owner(
        &self,
        provider: ProviderKind,
        model: &str,
    ) -> Result<Option<TenantId>, StoreError> {
        self.get_tenants_item(fine_tuned_pk(provider, model), OWNER_SK)
            .await?
            .map(|item| tenant_id(get_s(&item, "owner")?))
            .transpose()
    }
}

#[async_trait]
impl TenantAdmin for DynamoStore {
    async fn put_tenant_config_if(
        &self,
        config: TenantConfig,
        expect: Expect,
    ) -> Result<u64, StoreError> {
        let mut expr = codec::Expr::default();
        let condition = match expect {
            Expect::Anything => None,
            Expect::Absent => Some(format!("attribute_not_exists({})", expr.name(PK))),
            Expect::Version(v) => {
                let version = expr.name("version");
                let expected = expr.value(codec::n(v));
                Some(format!("{version} = {expected}"))
            }
        };
        let zero = expr.value(codec::n(0));
        let one = expr.value(codec::n(1));
        let version = expr.name("version");
        // One UpdateItem: the version bump is atomic however many operators write at once,
        // and the new version comes back in the same round trip.
        expr.set_raw(
            "version",
            format!("if_not_exists({version}, {zero}) + {one}"),
        )
        .set("config", codec::json(&config)?)
        .set("tenant_id", s(config.tenant_id.as_str()))
        .set(GSI1PK, s(TENANTS_PARTITION))
        .set(GSI1SK, s(config.tenant_id.as_str()));
        self.trip();
        let out = self
            .client
            .update_item()
            .table_name(&self.names.tenants)
            .set_key(Some(key_pk_sk(tenant_pk(&config.tenant_id), CONFIG_SK)))
            .update_expression(expr.update_expression())
            .set_condition_expression(condition)
            .set_expression_attribute_names(expr.names_map())
            .set_expression_attribute_values(expr.values_map())
            .return_values(ReturnValue::UpdatedNew)
            .send()
            .await;
        let out = match out {
            Ok(out) => out,
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                // The version it holds now, for the caller's message (read after the refusal:
                // it may have moved again, which changes nothing about the refusal).
                let current = self
                    .tenant_config(&config.tenant_id)
                    .await?
                    .map(|c| c.version);
                return Err(StoreError::Conflict { current });
            }
            Err(err) => return Err(error::sdk("UpdateItem", err)),
        };
        let attributes = out
            .attributes
            .ok_or_else(|| corrupt("UpdateItem returned no attributes"))?;
        get_u64(&attributes, "version")
    }

    async fn tenant_configs(&self) -> Result<Vec<Arc<TenantConfig>>, StoreError> {
        self.query_by_tenant(TENANTS_PARTITION.to_owned(), None)
            .await?
            .iter()
            .map(decode_config)
            .collect()
    }

    /// One Query on `by_tenant` (more only when DynamoDB's 1 MB page holds fewer than
    /// `limit` configurations), from the item after `after`.
    async fn tenant_config_page(
        &self,
        after: Option<&TenantId>,
        limit: usize,
    ) -> Result<TenantPage, StoreError> {
        let sort = after.map(|a| ("#sk > :sk", a.to_string()));
        let query = self.by_tenant(TENANTS_PARTITION.to_owned(), sort);
        let mut configs = Vec::new();
        let mut start = None;
        loop {
            let want = i32::try_from(limit.saturating_sub(configs.len())).unwrap_or(i32::MAX);
            self.trip();
            let out = query
                .clone()
                .limit(want.max(1))
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| error::sdk("Query", e))?;
            let page = out.items.unwrap_or_default();
            self.count_read(&page, false);
            for item in &page {
                configs.push(decode_config(item)?);
            }
            match out.last_evaluated_key {
                Some(key) if !key.is_empty() && configs.len() < limit => start = Some(key),
                Some(key) if !key.is_empty() => {
                    let next = configs
                        .last()
                        .map(|c: &Arc<TenantConfig>| c.tenant_id.clone());
                    return Ok(TenantPage { configs, next });
                }
                _ => {
                    return Ok(TenantPage {
                        configs,
                        next: None,
                    });
                }
            }
        }
    }

    async fn put_key(&self, key: StoredKey) -> Result<(), StoreError> {
        self.trip();
        self.client
            .put_item()
            .table_name(&self.names.tenants)
            .set_item(Some(encode_key(&key)?))
            .send()
            .await
            .map_err(|e| error::sdk("PutItem", e))?;
        Ok(())
    }

    async fn keys_for(&self, tenant: &TenantId) -> Result<Vec<StoredKey>, StoreError> {
        self.query_by_tenant(tenant_pk(tenant), Some("KEY#"))
            .await?
            .iter()
            .map(decode_key)
            .collect()
    }

    async fn revoke_key(&self, prefix: &KeyPrefix) -> Result<(), StoreError> {
        let mut expr = codec::Expr::default();
        let revoked = expr.name("revoked_at");
        let now = expr.value(s(time_key(Utc::now())));
        // Revoking twice keeps the first revocation time.
        expr.set_raw("revoked_at", format!("if_not_exists({revoked}, {now})"));
        let pk = expr.name(PK);
        self.trip();
        let result = self
            .client
            .update_item()
            .table_name(&self.names.tenants)
            .set_key(Some(key_pk_sk(key_pk(prefix), KEY_SK)))
            .update_expression(expr.update_expression())
            .condition_expression(format!("attribute_exists({pk})"))
            .set_expression_attribute_names(expr.names_map())
            .set_expression_attribute_values(expr.values_map())
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Err(StoreError::NotFound(format!("key {prefix}")))
            }
            Err(err) => Err(error::sdk("UpdateItem", err)),
        }
    }

    async fn expire_key(&self, prefix: &KeyPrefix, at: DateTime<Utc>) -> Result<(), StoreError> {
        let mut expr = codec::Expr::default();
        let expires = expr.name("expires_at");
        let at_value = expr.value(s(time_key(at)));
        expr.set_raw("expires_at", at_value.clone());
        let pk = expr.name(PK);
        // An earlier expiry stays (the timestamps sort as text: fixed-width RFC 3339, UTC).
        let condition = format!(
            "attribute_exists({pk}) AND (attribute_not_exists({expires}) OR {expires} > {at_value})"
        );
        self.trip();
        let result = self
            .client
            .update_item()
            .table_name(&self.names.tenants)
            .set_key(Some(key_pk_sk(key_pk(prefix), KEY_SK)))
            .update_expression(expr.update_expression())
            .condition_expression(condition)
            .set_expression_attribute_names(expr.names_map())
            .set_expression_attribute_values(expr.values_map())
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                // Either no such key, or it already expires first.
                match self.find_key(prefix).await? {
                    Some(_) => Ok(()),
                    None => Err(StoreError::NotFound(format!("key {prefix}"))),
                }
            }
            Err(err) => Err(error::sdk("UpdateItem", err)),
        }
    }

    async fn register_fine_tuned(
        &self,
        provider: ProviderKind,
        model: &str,
        owner: &TenantId,
    ) -> Result<(), StoreError> {
        let mut item = key_pk_sk(fine_tuned_pk(provider, model), OWNER_SK);
        item.insert("owner".into(), s(owner.as_str()));
        item.insert("provider".into(), s(provider.as_str()));
        item.insert("model".into(), s(model));
        self.put_tenants_item(item).await
    }
}
