//! The operator catalog: model prices (the bundled table with the operator's entries on top)
//! and upstream quotas (tokens per minute per provider model).
//!
//! On DynamoDB the operator's part is one Query, made by the first request that needs it rather
//! than during Lambda init: a cold start makes no network call, and a store that is briefly
//! unreachable fails that request with a 503 instead of failing the container's init. The
//! loaded catalog is kept for the container's life (as before, `tollgate price set` reaches new
//! containers); a failed read is not kept, so the next request tries again.

use std::sync::Arc;

use tokio::sync::OnceCell;

use crate::domain::limits::MAX_LIMIT;
use crate::domain::limits::UpstreamQuotas;
use crate::domain::pricing::PriceTable;
use crate::ports::Catalog;
use crate::ports::store::StoreError;

/// Prices and quotas as one consistent snapshot.
#[derive(Debug, Default)]
pub struct CatalogSnapshot {
    /// Model prices: the bundled and configured table, the operator's entries on top.
    pub prices: PriceTable,
    /// Tokens per minute per provider model and per key of a provider's pool, shared by every
    /// tenant; a model without an entry has no upstream limit.
    pub quotas: UpstreamQuotas,
}

/// Prices and upstream quotas, read from the store once per container (see the module docs).
pub struct OperatorCatalog {
    base: PriceTable,
    source: Option<Arc<dyn Catalog>>,
    loaded: OnceCell<Arc<CatalogSnapshot>>,
}

impl OperatorCatalog {
    /// A catalog known up front (the embedded store, tests, benches): never reads anything.
    pub fn fixed(prices: PriceTable, quotas: UpstreamQuotas) -> Self {
        Self {
            base: PriceTable::default(),
            source: None,
            loaded: OnceCell::new_with(Some(Arc::new(CatalogSnapshot { prices, quotas }))),
        }
    }

    /// `base` (the bundled and configured prices) with `source`'s operator entries on top, read
    /// on first use.
    pub fn from_store(base: PriceTable, source: Arc<dyn Catalog>) -> Self {
        Self {
            base,
            source: Some(source),
            loaded: OnceCell::new(),
        }
    }

    /// The snapshot, read from the store on the first call. Concurrent first callers share
    /// one read. An operator price entry that fails validation is reported as corrupt data:
    /// billing with a wrong price is worse than refusing the request.
    pub async fn get(&self) -> Result<Arc<CatalogSnapshot>, StoreError> {
        self.loaded
            .get_or_try_init(|| async {
                let Some(source) = &self.source else {
                    return Ok(Arc::new(CatalogSnapshot {
                        prices: self.base.clone(),
                        quotas: UpstreamQuotas::new(),
                    }));
                };
                let mut prices = self.base.clone();
                prices
                    .extend(source.prices().await?)
                    .map_err(|e| StoreError::Corrupt(format!("operator price entry: {e}")))?;
                let quotas = source
                    .upstream_quotas()
                    .await?
                    .into_iter()
                    .map(|q| {
                        // The limiter compares signed counters: a larger quota would wrap.
                        if q.tokens_per_minute > MAX_LIMIT {
                            return Err(StoreError::Corrupt(format!(
                                "upstream quota for {}/{}: tokens_per_minute {} is above the \
                                 maximum of {MAX_LIMIT}",
                                q.provider, q.model, q.tokens_per_minute
                            )));
                        }
                        Ok(q)
                    })
                    .collect::<Result<_, _>>()?;
                Ok(Arc::new(CatalogSnapshot { prices, quotas }))
            })
            .await
            .cloned()
    }

    /// Whether the store has been read (or nothing needs reading).
    pub fn is_loaded(&self) -> bool {
        self.loaded.initialized()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::sync::atomic::{AtomicUsize, Ordering};

    use async_trait::async_trait;
    use rust_decimal_macros::dec;

    use super::*;
    use crate::domain::limits::UpstreamQuota;
    use crate::domain::pricing::{ModelPrice, PriceEntry};
    use crate::domain::tenant::ProviderKind;

    /// Counts reads; fails the first `failures` of them.
    struct Counting {
        reads: AtomicUsize,
        failures: usize,
        price: ModelPrice,
        quota: u64,
    }

    #[async_trait]
    impl Catalog for Counting {
        async fn prices(&self) -> Result<Vec<PriceEntry>, StoreError> {
            let n = self.reads.fetch_add(1, Ordering::SeqCst);
            if n < self.failures {
                return Err(StoreError::Unavailable("down".into()));
            }
            tokio::task::yield_now().await;
            Ok(vec![PriceEntry {
                provider: ProviderKind::Openai,
                model: "operator-model".into(),
                aliases: vec![],
                price: self.price.clone(),
            }])
        }
        async fn price_layer(&self) -> Result<crate::ports::store::PriceLayer, StoreError> {
            unreachable!("the catalog reads prices(), not the versioned layer")
        }
        async fn put_price_if(&self, _: &PriceEntry, _: u64) -> Result<(), StoreError> {
            unreachable!("the catalog only reads")
        }
        async fn upstream_quotas(&self) -> Result<Vec<UpstreamQuota>, StoreError> {
            Ok(vec![UpstreamQuota {
                provider: ProviderKind::Openai,
                model: "operator-model".into(),
                key: None,
                tokens_per_minute: self.quota,
            }])
        }
        async fn put_upstream_quota(&self, _: &UpstreamQuota) -> Result<(), StoreError> {
            unreachable!("the catalog only reads")
        }
    }

    fn price(input: rust_decimal::Decimal) -> ModelPrice {
        ModelPrice {
            input,
            output: dec!(2),
            cached_input: None,
            cache_write: None,
        }
    }

    fn source(failures: usize, price: ModelPrice) -> Arc<Counting> {
        Arc::new(Counting {
            reads: AtomicUsize::new(0),
            failures,
            price,
            quota: 90_000,
        })
    }

    #[tokio::test]
    async fn nothing_is_read_until_first_use_then_once_for_all_callers() {
        let store = source(0, price(dec!(1)));
        let catalog = Arc::new(OperatorCatalog::from_store(
            PriceTable::default(),
            store.clone(),
        ));
        assert!(!catalog.is_loaded());
        assert_eq!(store.reads.load(Ordering::SeqCst), 0);

        let callers: Vec<_> = (0..8)
            .map(|_| {
                let catalog = catalog.clone();
                tokio::spawn(async move { catalog.get().await })
            })
            .collect();
        for caller in callers {
            let snapshot = caller.await.unwrap().unwrap();
            assert!(
                snapshot
                    .prices
                    .lookup(ProviderKind::Openai, "operator-model")
                    .is_some()
            );
            assert_eq!(
                snapshot
                    .quotas
                    .model(&(ProviderKind::Openai, "operator-model".into())),
                Some(90_000)
            );
        }
        catalog.get().await.unwrap();
        assert_eq!(store.reads.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_failed_read_is_not_kept_and_the_next_call_reads_again() {
        let store = source(1, price(dec!(1)));
        let catalog = OperatorCatalog::from_store(PriceTable::default(), store.clone());
        assert!(matches!(
            catalog.get().await,
            Err(StoreError::Unavailable(_))
        ));
        assert!(!catalog.is_loaded());
        assert!(catalog.get().await.is_ok());
        assert_eq!(store.reads.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn an_invalid_operator_price_is_corrupt_data_not_a_price() {
        let catalog =
            OperatorCatalog::from_store(PriceTable::default(), source(0, price(dec!(-1))));
        let err = catalog.get().await.unwrap_err();
        assert!(
            matches!(err, StoreError::Corrupt(ref m) if m.contains("operator-model")),
            "{err}"
        );
    }

    #[tokio::test]
    async fn an_upstream_quota_above_the_maximum_is_corrupt_data_not_a_quota() {
        let store = Arc::new(Counting {
            quota: u64::MAX,
            ..Arc::into_inner(source(0, price(dec!(1)))).unwrap()
        });
        let err = OperatorCatalog::from_store(PriceTable::default(), store)
            .get()
            .await
            .unwrap_err();
        assert!(
            matches!(err, StoreError::Corrupt(ref m) if m.contains("tokens_per_minute")),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_fixed_catalog_is_loaded_from_the_start() {
        let mut prices = PriceTable::default();
        prices.insert(ProviderKind::Anthropic, "m", price(dec!(3)));
        let catalog = OperatorCatalog::fixed(prices, UpstreamQuotas::new());
        assert!(catalog.is_loaded());
        let snapshot = catalog.get().await.unwrap();
        assert!(
            snapshot
                .prices
                .lookup(ProviderKind::Anthropic, "m")
                .is_some()
        );
    }
}
