//! Embedded anomaly alerts and budget event buses: [`EmfAlerts`] writes one CloudWatch EMF line per anomaly (metrics
//! with no API call: in Lambda the log agent turns the line into the same metrics
//! `adapters::cloudwatch` publishes), [`MemoryAlerts`] keeps what it is given (tests, the
//! bench, `tollgate anomalies run --alerts memory`). [`LineBudgetBus`] prints budget events as
//! JSON lines (`tollgate serve`), [`MemoryBudgetBus`] keeps them (tests).

use std::io::Write;
use std::sync::Mutex;

use async_trait::async_trait;
use serde_json::{Value, json};

use crate::adapters::emf::NAMESPACE;
use crate::domain::anomaly::AnomalyKind;
use crate::domain::budget_event::{BudgetEvent, EVENT_SOURCE};
use crate::ports::alerts::{AlertError, AnomalyAlerts, BudgetEventBus};
use crate::ports::store::AnomalyRecord;

/// The metric an anomaly is counted in; `None` for a kind this build does not know (an
/// anomaly recorded by a newer version), which is then not published.
pub fn metric_name(anomaly: &AnomalyRecord) -> Option<&'static str> {
    AnomalyKind::parse(&anomaly.kind).map(AnomalyKind::metric_name)
}

/// One anomaly's EMF document: the same metric and dimension sets as the CloudWatch adapter
/// (`[Deployment]` for the alarm, `[Deployment, TenantId]` to see who), plus the figures as
/// properties for Logs Insights.
pub fn render(anomaly: &AnomalyRecord, deployment: &str) -> Option<Value> {
    let name = metric_name(anomaly)?;
    Some(json!({
        "_aws": {
            "Timestamp": anomaly.detected_at.timestamp_millis(),
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [["Deployment"], ["Deployment", "TenantId"]],
                "Metrics": [{"Name": name, "Unit": "Count"}],
            }],
        },
        "Deployment": deployment,
        "TenantId": anomaly.tenant_id.as_str(),
        name: 1,
        "AnomalyKind": anomaly.kind,
        "Hour": anomaly.hour.to_rfc3339(),
        "Observed": anomaly.observed.to_string(),
        "Baseline": anomaly.baseline.to_string(),
    }))
}

/// Publishes anomalies as CloudWatch EMF lines, one per anomaly of a known kind, to a writer.
pub struct EmfAlerts {
    deployment: String,
    out: Mutex<Box<dyn Write + Send>>,
}

impl EmfAlerts {
    /// Writes to standard output, where Lambda's log agent picks the lines up.
    pub fn stdout(deployment: impl Into<String>) -> Self {
        Self::new(deployment, Box::new(std::io::stdout()))
    }

    /// Writes to `out`; `deployment` is the `Deployment` dimension (the stack name).
    pub fn new(deployment: impl Into<String>, out: Box<dyn Write + Send>) -> Self {
        Self {
            deployment: deployment.into(),
            out: Mutex::new(out),
        }
    }
}

#[async_trait]
impl AnomalyAlerts for EmfAlerts {
    async fn publish(&self, anomalies: &[AnomalyRecord]) -> Result<(), AlertError> {
        let mut lines = Vec::new();
        for doc in anomalies.iter().filter_map(|a| render(a, &self.deployment)) {
            serde_json::to_writer(&mut lines, &doc)
                .map_err(|e| AlertError::Unavailable(format!("encoding an EMF line: {e}")))?;
            lines.push(b'\n');
        }
        let mut out = self
            .out
            .lock()
            .map_err(|_| AlertError::Unavailable("EMF writer lock poisoned".into()))?;
        out.write_all(&lines)
            .and_then(|()| out.flush())
            .map_err(|e| AlertError::Unavailable(format!("writing EMF lines: {e}")))
    }
}

/// Keeps every published anomaly, in order.
#[derive(Default)]
pub struct MemoryAlerts {
    published: Mutex<Vec<AnomalyRecord>>,
}

impl MemoryAlerts {
    /// Every anomaly published so far, in order.
    pub fn published(&self) -> Vec<AnomalyRecord> {
        self.published.lock().map(|p| p.clone()).unwrap_or_default()
    }
}

#[async_trait]
impl AnomalyAlerts for MemoryAlerts {
    async fn publish(&self, anomalies: &[AnomalyRecord]) -> Result<(), AlertError> {
        self.published
            .lock()
            .map_err(|_| AlertError::Unavailable("alerts lock poisoned".into()))?
            .extend_from_slice(anomalies);
        Ok(())
    }
}

/// Publishes budget events as JSON lines, EventBridge's envelope (`source`, `detail-type`,
/// `time`, `detail`) under `budget_event`, to a writer: `tollgate serve` prints them.
pub struct LineBudgetBus {
    out: Mutex<Box<dyn Write + Send>>,
}

impl LineBudgetBus {
    /// Writes to standard output.
    pub fn stdout() -> Self {
        Self::new(Box::new(std::io::stdout()))
    }

    /// Writes to `out`.
    pub fn new(out: Box<dyn Write + Send>) -> Self {
        Self {
            out: Mutex::new(out),
        }
    }
}

/// One budget event as EventBridge delivers it to a rule's target (less the ids it adds).
pub fn envelope(event: &BudgetEvent) -> Value {
    json!({
        "source": EVENT_SOURCE,
        "detail-type": event.kind.detail_type(),
        "time": event.occurred_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "detail": event.detail(),
    })
}

#[async_trait]
impl BudgetEventBus for LineBudgetBus {
    async fn put(&self, events: &[BudgetEvent]) -> Result<(), AlertError> {
        let mut lines = Vec::new();
        for event in events {
            serde_json::to_writer(&mut lines, &json!({ "budget_event": envelope(event) }))
                .map_err(|e| AlertError::Unavailable(format!("encoding a budget event: {e}")))?;
            lines.push(b'\n');
        }
        let mut out = self
            .out
            .lock()
            .map_err(|_| AlertError::Unavailable("budget event writer lock poisoned".into()))?;
        out.write_all(&lines)
            .and_then(|()| out.flush())
            .map_err(|e| AlertError::Unavailable(format!("writing budget events: {e}")))
    }
}

/// Keeps every published budget event, in order.
#[derive(Default)]
pub struct MemoryBudgetBus {
    published: Mutex<Vec<BudgetEvent>>,
}

impl MemoryBudgetBus {
    /// Every budget event published so far, in order.
    pub fn published(&self) -> Vec<BudgetEvent> {
        self.published.lock().map(|p| p.clone()).unwrap_or_default()
    }
}

#[async_trait]
impl BudgetEventBus for MemoryBudgetBus {
    async fn put(&self, events: &[BudgetEvent]) -> Result<(), AlertError> {
        self.published
            .lock()
            .map_err(|_| AlertError::Unavailable("budget bus lock poisoned".into()))?
            .extend_from_slice(events);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use rust_decimal_macros::dec;

    use super::*;
    use crate::domain::ids::TenantId;

    fn anomaly(kind: &str) -> AnomalyRecord {
        let at = chrono::Utc.with_ymd_and_hms(2026, 3, 14, 15, 0, 0).unwrap();
        AnomalyRecord {
            tenant_id: TenantId::parse("acme").unwrap(),
            hour: at,
            kind: kind.into(),
            observed: dec!(12.5),
            baseline: dec!(1.25),
            detected_at: at + chrono::Duration::minutes(65),
        }
    }

    #[derive(Clone, Default)]
    struct Shared(std::sync::Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn each_anomaly_is_one_emf_line_with_an_alarmable_dimension_set() {
        let out = Shared::default();
        let alerts = EmfAlerts::new("tollgate-prod", Box::new(out.clone()));
        alerts
            .publish(&[
                anomaly("cost_spike"),
                anomaly("quality_drop"),
                anomaly("future"),
            ])
            .await
            .unwrap();
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "an unknown kind is not published");
        let first = &lines[0];
        let directive = &first["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], "Tollgate");
        assert_eq!(directive["Dimensions"][0], json!(["Deployment"]));
        assert_eq!(directive["Metrics"][0]["Name"], "CostAnomaly");
        assert_eq!(first["CostAnomaly"], 1);
        assert_eq!(first["TenantId"], "acme");
        assert_eq!(first["Deployment"], "tollgate-prod");
        assert_eq!(first["Observed"], "12.5");
        assert_eq!(lines[1]["QualityAnomaly"], 1);
    }
}
