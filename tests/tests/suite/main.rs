//! Every end-to-end suite of the gateway, as one test binary: one link of the AWS SDK and the
//! stand-ins instead of one per suite (twenty-one binaries made a cold CI target several GB
//! larger and slower to link). A suite is a module: `cargo test -p tollgate-tests --test suite
//! faults::` runs one, `cargo test qdrant` still selects the Qdrant contract tests.

mod admin_api;
mod anomaly_scheduler;
mod aws_http;
mod bad_input;
mod bedrock;
mod budget_events;
mod budgets;
mod conversations;
mod dynamodb_invoke;
mod embeddings;
mod failover;
mod faults;
mod images;
mod ingest;
mod invoke_handler;
mod isolation;
mod isolation_canaries;
mod key_lifecycle;
mod key_quotas;
mod limiter_contract;
mod log_queries;
mod messages_api;
mod metering;
mod profiles;
mod providers;
mod rate_limits;
mod retrieval;
mod secrets;
mod spend_integrity;
mod store_contract;
mod structured_outputs;
mod table_definitions;
mod tls;
mod tools;
mod usage_report;
mod vector_contract;
