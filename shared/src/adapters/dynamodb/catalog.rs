//! Catalog items on the tenants table: `PRICE#{provider}` / `{model}` (`price`, JSON with
//! Decimal strings) and `QUOTA#{provider}` / `{model}` (`tokens_per_minute`), or for one key's
//! quota `QUOTA#{provider}` / `{model} key{k}` (with `model` and `key` attributes; a model id
//! has no whitespace, so no model's sort key is another's key quota). Listing is one
//! Query per provider, so results come back ordered by provider, then model, as the embedded
//! store orders them. The price entries carry one version (`PRICE#_version` / `VERSION`), moved
//! in the same transaction as every price write, so concurrent sets cannot both land on what
//! each checked.

use async_trait::async_trait;

use aws_sdk_dynamodb::types::{Put, TransactWriteItem, Update};

use super::DynamoStore;
use super::codec::{Expr, Item, PK, SK, get_json, get_s, get_u64, json, key_pk_sk, n, s};
use super::error;
use crate::domain::limits::UpstreamQuota;
use crate::domain::pricing::PriceEntry;
use crate::domain::tenant::ProviderKind;
use crate::ports::store::{Catalog, PriceLayer, StoreError};

/// The price entries' version: its own item, in a partition no provider's listing reads.
const PRICE_VERSION_PK: &str = "PRICE#_version";
const PRICE_VERSION_SK: &str = "VERSION";

impl DynamoStore {
    /// Every item under `{kind}#{provider}` for each provider, provider by provider.
    async fn catalog_items(&self, kind: &str) -> Result<Vec<(ProviderKind, Item)>, StoreError> {
        let mut all = Vec::new();
        let mut providers = ProviderKind::ALL;
        providers.sort();
        for provider in providers {
            let query = self
                .client
                .query()
                .table_name(&self.names.tenants)
                .key_condition_expression("#pk = :pk")
                .expression_attribute_names("#pk", PK)
                .expression_attribute_values(":pk", s(format!("{kind}#{provider}")))
                .consistent_read(true);
            all.extend(
                self.query_all(query)
                    .await?
                    .into_iter()
                    .map(|i| (provider, i)),
            );
        }
        Ok(all)
    }
}

#[async_trait]
impl Catalog for DynamoStore {
    async fn prices(&self) -> Result<Vec<PriceEntry>, StoreError> {
        self.catalog_items("PRICE")
            .await?
            .iter()
            .map(|(_, item)| get_json(item, "price"))
            .collect()
    }

    /// The version first, then the entries: an entry written in between moves the version past
    /// the one returned, so a write based on this read is refused rather than lost.
    async fn price_layer(&self) -> Result<PriceLayer, StoreError> {
        let version = match self
            .get_tenants_item(PRICE_VERSION_PK.to_owned(), PRICE_VERSION_SK)
            .await?
        {
            Some(item) => get_u64(&item, "version")?,
            None => 0,
        };
        Ok(PriceLayer {
            entries: self.prices().await?,
            version,
        })
    }

    /// One TransactWriteItems: the version item moved from `version` (conditionally) and the
    /// entry put.
    async fn put_price_if(&self, entry: &PriceEntry, version: u64) -> Result<(), StoreError> {
        let mut expr = Expr::default();
        expr.set("version", n(version + 1));
        let condition = if version == 0 {
            format!("attribute_not_exists({})", expr.name(PK))
        } else {
            format!("{} = {}", expr.name("version"), expr.value(n(version)))
        };
        let bump = Update::builder()
            .table_name(&self.names.tenants)
            .set_key(Some(key_pk_sk(
                PRICE_VERSION_PK.to_owned(),
                PRICE_VERSION_SK,
            )))
            .update_expression(expr.update_expression())
            .condition_expression(condition)
            .set_expression_attribute_names(expr.names_map())
            .set_expression_attribute_values(expr.values_map())
            .build()
            .map_err(error::build)?;
        let mut item = key_pk_sk(format!("PRICE#{}", entry.provider), &entry.model);
        item.insert("price".into(), json(entry)?);
        let put = Put::builder()
            .table_name(&self.names.tenants)
            .set_item(Some(item))
            .build()
            .map_err(error::build)?;
        let items = vec![
            TransactWriteItem::builder().update(bump).build(),
            TransactWriteItem::builder().put(put).build(),
        ];
        match self.transact(items, true).await? {
            None => Ok(()),
            Some(_) => Err(StoreError::Conflict { current: None }),
        }
    }

    async fn upstream_quotas(&self) -> Result<Vec<UpstreamQuota>, StoreError> {
        self.catalog_items("QUOTA")
            .await?
            .iter()
            .map(|(provider, item)| {
                let key = match item.get("key") {
                    Some(_) => Some(u16::try_from(get_u64(item, "key")?).map_err(|_| {
                        StoreError::Corrupt("upstream quota key position above 65535".into())
                    })?),
                    None => None,
                };
                let model = match key {
                    Some(_) => get_s(item, "model")?,
                    None => get_s(item, SK)?,
                };
                Ok(UpstreamQuota {
                    provider: *provider,
                    model: model.to_owned(),
                    key,
                    tokens_per_minute: get_u64(item, "tokens_per_minute")?,
                })
            })
            .collect()
    }

    async fn put_upstream_quota(&self, quota: &UpstreamQuota) -> Result<(), StoreError> {
        let sort_key = match quota.key {
            None => quota.model.clone(),
            Some(key) => format!("{} key{key}", quota.model),
        };
        let mut item = key_pk_sk(format!("QUOTA#{}", quota.provider), &sort_key);
        if let Some(key) = quota.key {
            item.insert("model".into(), s(quota.model.clone()));
            item.insert("key".into(), n(u64::from(key)));
        }
        item.insert("tokens_per_minute".into(), n(quota.tokens_per_minute));
        self.put_tenants_item(item).await
    }
}
