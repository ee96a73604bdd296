//! The storage quota: how a tenant's documents are charged against its chunk quota.
//!
//! Each tenant has one counter of charged chunks, and each document id in the registry carries
//! its own charge; the counter is the sum of the charges (plus, for a tenant that stored
//! documents before the counter existed, what the index held when the counter was seeded). A
//! document's charge is never below what the vector index can hold for it: while a replacement
//! is in flight the index can hold either version (Qdrant deletes the old points, then upserts
//! the new ones in batches), so the charge is the larger of the two until the new version is
//! committed, and stays so when the index write fails partway.
//!
//! Every move is a conditional write that the store applies together with the counter: a claim
//! only if the entry is still the version that was read and the counter stays within the
//! quota; a commit or a release only by the claim's lease holder; a removal only of the version
//! read. So concurrent ingests can never take a tenant past its quota (the store, not a read
//! before the write, decides), and each version's chunks are credited exactly once. The rules
//! are here; the stores apply what they are given.
//!
//! A claim also leases the document id: while one request stores a document, another ingest or
//! delete of the same id is refused (409 `document_busy`) instead of racing it, because the
//! index cannot order two writers' chunks and the charge must follow the version that landed.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::documents::DocumentRecord;

/// How long a claim holds a document id. Longer than an ingest can run (the ingest function's
/// timeout is 120 s in template.yaml), so a live ingest never loses its lease, and a lease left
/// by a killed process blocks that one id for at most this long.
pub const DOCUMENT_LEASE: Duration = Duration::from_secs(300);

/// One request's hold on a document id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Identifies the holder: a commit or release must present it.
    pub token: String,
    /// When the lease expires.
    pub until: DateTime<Utc>,
}

impl Lease {
    /// A new lease, from `now` for [`DOCUMENT_LEASE`].
    pub fn starting(now: DateTime<Utc>) -> Self {
        let lease = chrono::Duration::from_std(DOCUMENT_LEASE).unwrap_or(chrono::Duration::MAX);
        Self {
            token: uuid::Uuid::new_v4().simple().to_string(),
            until: now.checked_add_signed(lease).unwrap_or(now),
        }
    }

    /// Whether the lease still holds at `now`.
    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        self.until > now
    }
}

/// A document id's registry entry, as the storage rules see it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DocumentEntry {
    /// The committed version; `None` for an id never stored (or whose first ingest has not
    /// committed).
    pub record: Option<DocumentRecord>,
    /// Chunks this id holds in the tenant's counter. An entry written before charges existed
    /// reads as its record's chunks.
    pub charged: u64,
    /// The request storing this id right now, if any (an expired lease is no one's).
    pub lease: Option<Lease>,
    /// Bumped by every write of the entry: a claim or removal applies only to the version it
    /// was planned from. 0: no entry, or one written before versions existed.
    pub version: u64,
}

impl DocumentEntry {
    /// Whether the id has an entry in the registry (a committed record, or a version above 0).
    pub fn exists(&self) -> bool {
        self.version > 0 || self.record.is_some()
    }

    fn busy(&self, now: DateTime<Utc>) -> bool {
        self.lease.as_ref().is_some_and(|l| l.is_live(now))
    }
}

/// A document's entry and its tenant's counter, read together (one round trip, one item each).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StorageSlot {
    /// The document id's entry.
    pub entry: DocumentEntry,
    /// The tenant's charged chunks; `None` until the tenant's first claim creates the counter.
    pub counter: Option<u64>,
}

/// What a claim does to the tenant's counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CounterWrite {
    /// Add `add`, only if the counter is then at most `max`.
    Add {
        /// Chunks to add.
        add: u64,
        /// The most the counter may hold after the add (the quota).
        max: u64,
    },
    /// Create the counter at `value`, only if it still does not exist.
    Create {
        /// The counter's first value.
        value: u64,
    },
}

/// A planned claim: the store applies all of it or none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// Applies only if the entry is still this version.
    pub version: u64,
    /// The entry's charge while the claim holds it: the larger of the stored and the new
    /// version's chunks.
    pub charge: u64,
    /// `None` when the charge does not grow and the counter exists.
    pub counter: Option<CounterWrite>,
    /// The lease the claim takes on the document id.
    pub lease: Lease,
}

/// Why a claim was not planned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimRefused {
    /// Another request holds the id.
    Busy,
    /// Storing the document would take the tenant past its quota.
    QuotaExceeded,
}

/// The end of a claim: the entry's charge becomes `charge`, the counter moves by the difference
/// (never up: a claim already charged the most it can hold), and the lease is let go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settlement {
    /// Applies only while this lease holds the entry.
    pub lease_token: String,
    /// The charge the claim set.
    pub claimed: u64,
    /// The entry's charge from now on.
    pub charge: u64,
    /// The entry goes away (a new id that was never stored and holds nothing).
    pub drop_entry: bool,
}

impl Settlement {
    /// What the tenant's counter moves by (zero or negative).
    pub fn counter_delta(&self) -> i64 {
        i64::try_from(self.charge).unwrap_or(i64::MAX)
            - i64::try_from(self.claimed).unwrap_or(i64::MAX)
    }
}

/// Deleting a document's entry, and its charge from the counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Removal {
    /// Applies only if the entry is still this version.
    pub version: u64,
    /// Credited to the counter, when the counter exists (`credit`); a counter created later is
    /// seeded from the index, which no longer holds these chunks.
    pub charge: u64,
    /// Whether to credit the counter (it exists).
    pub credit: bool,
}

impl StorageSlot {
    /// The claim that stores a version of `chunks` chunks under this id within `quota`.
    /// `seed`: the tenant's stored chunks by the index's count, needed (and used) only while
    /// the counter does not exist.
    ///
    /// A version that does not grow the charge (an edit to the same size or smaller) is always
    /// admitted, even over a lowered quota: it frees storage or keeps it.
    pub fn claim(
        &self,
        chunks: u64,
        quota: u64,
        seed: u64,
        now: DateTime<Utc>,
    ) -> Result<Claim, ClaimRefused> {
        if self.entry.busy(now) {
            return Err(ClaimRefused::Busy);
        }
        let charge = self.entry.charged.max(chunks);
        let add = charge - self.entry.charged;
        let current = self.counter.unwrap_or(seed);
        if add > 0 && current.saturating_add(add) > quota {
            return Err(ClaimRefused::QuotaExceeded);
        }
        let counter = match self.counter {
            None => Some(CounterWrite::Create {
                value: current.saturating_add(add),
            }),
            Some(_) if add > 0 => Some(CounterWrite::Add { add, max: quota }),
            Some(_) => None,
        };
        Ok(Claim {
            version: self.entry.version,
            charge,
            counter,
            lease: Lease::starting(now),
        })
    }

    /// The removal of this id's entry; `None` when there is none.
    pub fn removal(&self, now: DateTime<Utc>) -> Result<Option<Removal>, ClaimRefused> {
        if self.entry.busy(now) {
            return Err(ClaimRefused::Busy);
        }
        Ok(self.entry.exists().then_some(Removal {
            version: self.entry.version,
            charge: self.entry.charged,
            credit: self.counter.is_some(),
        }))
    }
}

impl Claim {
    /// The new version is in the index: the charge becomes its chunks.
    pub fn commit(&self, chunks: u64) -> Settlement {
        Settlement {
            lease_token: self.lease.token.clone(),
            claimed: self.charge,
            charge: chunks,
            drop_entry: false,
        }
    }

    /// Nothing was written to the index: the entry's charge is what it was before the claim.
    pub fn release(&self, before: &DocumentEntry) -> Settlement {
        Settlement {
            lease_token: self.lease.token.clone(),
            claimed: self.charge,
            charge: before.charged,
            drop_entry: !before.exists(),
        }
    }

    /// The index write failed: the index may hold either version (or part of one), so the
    /// charge stays at the larger until the id is stored again or deleted.
    pub fn abandon(&self) -> Settlement {
        Settlement {
            lease_token: self.lease.token.clone(),
            claimed: self.charge,
            charge: self.charge,
            drop_entry: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap_or_default()
    }

    fn slot(charged: u64, counter: Option<u64>) -> StorageSlot {
        StorageSlot {
            entry: DocumentEntry {
                record: None,
                charged,
                lease: None,
                version: u64::from(charged > 0),
            },
            counter,
        }
    }

    #[test]
    fn a_new_document_is_charged_its_chunks_up_to_the_quota_exactly() {
        let fits = slot(0, Some(7)).claim(3, 10, 0, at(0)).unwrap();
        assert_eq!(fits.charge, 3);
        assert_eq!(fits.counter, Some(CounterWrite::Add { add: 3, max: 10 }));
        assert_eq!(
            slot(0, Some(8)).claim(3, 10, 0, at(0)),
            Err(ClaimRefused::QuotaExceeded)
        );
    }

    #[test]
    fn a_replacement_is_charged_only_what_it_grows_and_a_shrink_is_always_admitted() {
        // Full quota: the same size fits, one chunk more does not.
        let same = slot(4, Some(10)).claim(4, 10, 0, at(0)).unwrap();
        assert_eq!((same.charge, same.counter), (4, None));
        assert_eq!(
            slot(4, Some(10)).claim(5, 10, 0, at(0)),
            Err(ClaimRefused::QuotaExceeded)
        );
        // Over a lowered quota, a smaller version still goes in; it keeps the larger charge
        // until it is committed.
        let smaller = slot(4, Some(12)).claim(1, 10, 0, at(0)).unwrap();
        assert_eq!((smaller.charge, smaller.counter), (4, None));
        assert_eq!(smaller.commit(1).counter_delta(), -3);
    }

    #[test]
    fn the_first_claim_creates_the_counter_from_the_index_count() {
        let claim = slot(0, None).claim(2, 10, 6, at(0)).unwrap();
        assert_eq!(claim.counter, Some(CounterWrite::Create { value: 8 }));
        assert_eq!(
            slot(0, None).claim(5, 10, 6, at(0)),
            Err(ClaimRefused::QuotaExceeded)
        );
    }

    #[test]
    fn a_live_lease_refuses_claims_and_removals_and_an_expired_one_does_not() {
        let mut leased = slot(2, Some(2));
        leased.entry.lease = Some(Lease {
            token: "t".into(),
            until: at(10),
        });
        assert_eq!(leased.claim(1, 10, 0, at(9)), Err(ClaimRefused::Busy));
        assert_eq!(leased.removal(at(9)), Err(ClaimRefused::Busy));
        assert!(leased.claim(1, 10, 0, at(10)).is_ok());
        assert_eq!(
            leased.removal(at(10)),
            Ok(Some(Removal {
                version: 1,
                charge: 2,
                credit: true
            }))
        );
        assert_eq!(slot(0, None).removal(at(0)), Ok(None));
    }

    #[test]
    fn settlements_move_the_counter_to_the_charge_that_stays() {
        let before = slot(4, Some(4));
        let claim = before.claim(9, 100, 0, at(0)).unwrap();
        assert_eq!(claim.commit(9).counter_delta(), 0);
        assert_eq!(claim.release(&before.entry).counter_delta(), -5);
        assert_eq!(claim.abandon().counter_delta(), 0);
        assert!(!claim.release(&before.entry).drop_entry);
        // A new id that was never stored leaves no entry behind.
        let new = slot(0, Some(0));
        let claim = new.claim(3, 100, 0, at(0)).unwrap();
        assert!(claim.release(&new.entry).drop_entry);
        assert_eq!(claim.release(&new.entry).counter_delta(), -3);
    }
}
