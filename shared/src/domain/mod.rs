//! The domain: pure rules with no I/O. Identifiers, keys, tenant configuration, routing,
//! prompt rendering, end-user profiles, pricing, the usage event, the usage report, the
//! anomaly rules, structured-output formats, tool calling, images and the document storage quota.

pub mod anomaly;
pub mod audit;
pub mod budget;
pub mod budget_event;
pub mod cache_key;
pub mod chat;
pub mod chunking;
pub mod documents;
pub mod ids;
pub mod image;
pub mod keys;
pub mod limits;
pub mod pricing;
pub mod profile;
pub mod prompt;
pub mod quality;
pub mod routing;
pub mod storage;
pub mod structured;
pub mod tenant;
pub mod tools;
pub mod usage;
pub mod usage_report;
