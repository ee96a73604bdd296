//! CloudWatch metrics for anomalies (anomaly-scheduler), through `PutMetricData`.
//!
//! Alarm design: each anomaly is one data point (value 1, unit Count, at its detection time) of
//! `CostAnomaly` or `QualityAnomaly` in namespace `Tollgate`, in two dimension sets:
//!
//! - `[Deployment]` (the stack name): one metric per kind and deployment, whatever the number
//!   of tenants. This is the metric the alarm watches (`Sum ≥ 1` over an hour → SNS), so one
//!   alarm covers every tenant, present and future, and dev and prod never mix.
//! - `[Deployment, TenantId]`: which tenant, for dashboards and the on-call. CloudWatch bills a
//!   custom metric only for the hours it receives data, and this one receives data only when
//!   that tenant has an anomaly, so it costs next to nothing; no alarm is set on it.
//!
//! aws-sdk-cloudwatch is pinned to 1.99.0: later releases speak Smithy RPCv2-CBOR, which moto
//! cannot serve (FINDINGS.md); the awsQuery protocol of 1.99 is accepted by CloudWatch as well.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_cloudwatch::Client;
use aws_sdk_cloudwatch::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_cloudwatch::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_cloudwatch::primitives::DateTime as AwsDateTime;
use aws_sdk_cloudwatch::types::{Dimension, MetricDatum, StandardUnit};

use crate::adapters::alerts::metric_name;
use crate::adapters::aws::AwsConfigSource;
use crate::adapters::emf::NAMESPACE;
use crate::adapters::tls;
use crate::ports::alerts::{AlertError, AnomalyAlerts};
use crate::ports::store::AnomalyRecord;

/// Data points per PutMetricData (the API takes up to 1,000 and 1 MB).
const DATUMS_PER_REQUEST: usize = 500;
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
const OPERATION_TIMEOUT: Duration = Duration::from_secs(15);

/// Publishes anomalies to CloudWatch with `PutMetricData` (see the module docs).
pub struct CloudWatchAlerts {
    client: Client,
    deployment: String,
}

impl CloudWatchAlerts {
    /// Publishes through `client`; `deployment` is the `Deployment` dimension (the stack name).
    pub fn new(client: Client, deployment: impl Into<String>) -> Self {
        Self {
            client,
            deployment: deployment.into(),
        }
    }

    /// A client configured from `aws`. Makes no network call: credentials are resolved on the
    /// first publish.
    pub async fn from_env(aws: AwsConfigSource, deployment: impl Into<String>) -> Self {
        let timeouts = aws_config::timeout::TimeoutConfig::builder()
            .operation_attempt_timeout(ATTEMPT_TIMEOUT)
            .operation_timeout(OPERATION_TIMEOUT)
            .build();
        let config = aws.load(timeouts, "CLOUDWATCH").await;
        Self::new(Client::new(&config), deployment)
    }

    /// A client for a local emulator (moto) at `endpoint`, with static test credentials, so a
    /// test can never reach real AWS.
    pub fn emulator(endpoint: &str, deployment: impl Into<String>) -> Self {
        let config = aws_sdk_cloudwatch::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("test", "test", None, None, "emulator"))
            .endpoint_url(endpoint)
            .http_client(tls::aws_http_client())
            .build();
        Self::new(Client::from_conf(config), deployment)
    }
}

fn dimension(name: &str, value: &str) -> Dimension {
    Dimension::builder().name(name).value(value).build()
}

/// The data points for `anomalies`: two per anomaly of a known kind (see the module docs).
pub fn datums(anomalies: &[AnomalyRecord], deployment: &str) -> Vec<MetricDatum> {
    let mut datums = Vec::with_capacity(anomalies.len() * 2);
    for anomaly in anomalies {
        let Some(name) = metric_name(anomaly) else {
            continue;
        };
        let at = AwsDateTime::from_millis(anomaly.detected_at.timestamp_millis());
        let deployment_only = vec![dimension("Deployment", deployment)];
        let per_tenant = vec![
            dimension("Deployment", deployment),
            dimension("TenantId", anomaly.tenant_id.as_str()),
        ];
        for dimensions in [deployment_only, per_tenant] {
            datums.push(
                MetricDatum::builder()
                    .metric_name(name)
                    .set_dimensions(Some(dimensions))
                    .value(1.0)
                    .unit(StandardUnit::Count)
                    .timestamp(at)
                    .build(),
            );
        }
    }
    datums
}

fn alert_error<E, R>(err: SdkError<E, R>) -> AlertError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug,
{
    match &err {
        SdkError::ServiceError(service) => {
            let e = service.err();
            let code = e.code().unwrap_or("UnknownError");
            if matches!(code, "Throttling" | "ThrottlingException" | "LimitExceeded") {
                return AlertError::Throttled;
            }
            AlertError::Unavailable(format!(
                "CloudWatch PutMetricData: {code}: {}",
                e.message().unwrap_or("no message")
            ))
        }
        SdkError::TimeoutError(_) => {
            AlertError::Unavailable("CloudWatch PutMetricData: timed out".into())
        }
        // Display only: Debug would dump request internals.
        other => AlertError::Unavailable(format!("CloudWatch PutMetricData: {other}")),
    }
}

#[async_trait]
impl AnomalyAlerts for CloudWatchAlerts {
    async fn publish(&self, anomalies: &[AnomalyRecord]) -> Result<(), AlertError> {
        let all = datums(anomalies, &self.deployment);
        for chunk in all.chunks(DATUMS_PER_REQUEST) {
            self.client
                .put_metric_data()
                .namespace(NAMESPACE)
                .set_metric_data(Some(chunk.to_vec()))
                .send()
                .await
                .map_err(alert_error)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use rust_decimal_macros::dec;

    use super::*;
    use crate::domain::ids::TenantId;

    #[test]
    fn each_anomaly_is_counted_for_the_alarm_and_for_its_tenant() {
        let at = chrono::Utc.with_ymd_and_hms(2026, 3, 14, 15, 0, 0).unwrap();
        let anomaly = |kind: &str| AnomalyRecord {
            tenant_id: TenantId::parse("acme").unwrap(),
            hour: at,
            kind: kind.into(),
            observed: dec!(9),
            baseline: dec!(1),
            detected_at: at,
        };
        let all = datums(
            &[anomaly("cost_spike"), anomaly("quality_drop"), anomaly("x")],
            "tollgate-dev",
        );
        assert_eq!(all.len(), 4);
        assert_eq!(all[0].metric_name(), Some("CostAnomaly"));
        assert_eq!(all[0].dimensions().len(), 1);
        assert_eq!(all[1].dimensions().len(), 2);
        assert_eq!(all[1].dimensions()[1].value(), Some("acme"));
        assert_eq!(all[2].metric_name(), Some("QualityAnomaly"));
        assert_eq!(all[0].value(), Some(1.0));
        assert_eq!(all[0].timestamp().map(|t| t.secs()), Some(at.timestamp()));
    }
}
