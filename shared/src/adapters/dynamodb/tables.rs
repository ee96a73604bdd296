//! The table definitions, in one place. `tollgate init` creates tables from them and
//! `tollgate init --cloudformation` renders the `AWS::DynamoDB::Table` resources that
//! `template.yaml` carries between its `# BEGIN generated tables` markers; a test fails when the
//! two differ, so the deployed tables and the emulator's cannot drift.

use std::fmt::Write as _;
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, StreamSpecification, StreamViewType, TableStatus,
    TimeToLiveSpecification, TimeToLiveStatus,
};

use super::codec::{EXPIRES_AT, GSI1PK, GSI1SK, PK, SK};
use super::error;
use crate::ports::store::StoreError;

/// The table-name prefix when none is configured.
pub const DEFAULT_PREFIX: &str = "tollgate";

/// The markers around the generated block in `template.yaml`.
pub const CLOUDFORMATION_BEGIN: &str =
    "  # BEGIN generated tables (tollgate init --cloudformation)";
/// The line that ends the generated block in `template.yaml`.
pub const CLOUDFORMATION_END: &str = "  # END generated tables";

/// The prefix `template.yaml` uses: each stack (`tollgate-dev`, `tollgate-prod`) gets its own
/// tables, and functions receive the stack name as their table prefix.
pub const CLOUDFORMATION_PREFIX: &str = "${AWS::StackName}";

/// The GSI on the tenants table: a tenant's keys (`KEY#…`), and every tenant config under the
/// constant partition `TENANTS` (sorted by id) for listing.
pub const TENANTS_BY_TENANT: &str = "by_tenant";
/// The GSI on the usage table: a tenant's events in time order.
pub const USAGE_BY_TENANT_TIME: &str = "by_tenant_time";
/// The activity index on the usage table: every rollup of one hour, keyed
/// `HOUR_PK = HOUR#{yyyy-mm-ddThh}` / `HOUR_SK = {tenant}#{model}` (see `activity`).
pub const USAGE_BY_HOUR: &str = "by_hour";
/// The hash key attribute of [`USAGE_BY_HOUR`].
pub const HOUR_PK: &str = "hour_pk";
/// The range key attribute of [`USAGE_BY_HOUR`].
pub const HOUR_SK: &str = "hour_sk";

/// The four tables' names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableNames {
    /// Tenant configs, keys, the fine-tuned registry, the catalog, profiles and documents.
    pub tenants: String,
    /// Usage events and hourly rollups.
    pub usage: String,
    /// Limiter counters.
    pub limits: String,
    /// Cached completions.
    pub cache: String,
}

impl TableNames {
    /// `{prefix}-tenants`, `{prefix}-usage`, `{prefix}-limits`, `{prefix}-cache`.
    pub fn with_prefix(prefix: &str) -> Self {
        Self {
            tenants: format!("{prefix}-tenants"),
            usage: format!("{prefix}-usage"),
            limits: format!("{prefix}-limits"),
            cache: format!("{prefix}-cache"),
        }
    }
}

impl Default for TableNames {
    fn default() -> Self {
        Self::with_prefix(DEFAULT_PREFIX)
    }
}

/// A global secondary index with string hash and range keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexDefinition {
    /// The index name.
    pub name: &'static str,
    /// Its hash key attribute.
    pub hash_key: &'static str,
    /// Its range key attribute.
    pub range_key: &'static str,
    /// What it holds besides keys.
    pub projection: IndexProjection,
}

/// What an index holds besides its keys (and the table's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexProjection {
    /// Every attribute: the index answers whole items.
    All,
    /// Keys only: the smallest index items, for an index that answers "which" and not "what".
    KeysOnly,
}

impl IndexProjection {
    fn cloudformation(self) -> &'static str {
        match self {
            Self::All => "ALL",
            Self::KeysOnly => "KEYS_ONLY",
        }
    }

    fn sdk(self) -> ProjectionType {
        match self {
            Self::All => ProjectionType::All,
            Self::KeysOnly => ProjectionType::KeysOnly,
        }
    }
}

/// One table: string keys, on-demand billing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableDefinition {
    /// The CloudFormation logical id.
    pub logical_id: &'static str,
    /// The table's name.
    pub name: String,
    /// Its hash key attribute.
    pub hash_key: &'static str,
    /// Its range key attribute, if any.
    pub range_key: Option<&'static str>,
    /// Its global secondary indexes.
    pub indexes: Vec<IndexDefinition>,
    /// The attribute DynamoDB expires items by, if any.
    pub ttl_attribute: Option<&'static str>,
    /// Whether the table has a stream of new item images (the usage table's feeds the budget
    /// event publisher, filtered to `BUDGET#` items).
    pub stream: bool,
    /// Whether the data outlives a deleted stack (tenants and billing data do; limiter
    /// counters and cached responses are disposable).
    pub retain: bool,
}

impl TableDefinition {
    /// Every key attribute of the table and its indexes (all strings), in a stable order.
    pub fn key_attributes(&self) -> Vec<&'static str> {
        let mut attrs = vec![self.hash_key];
        attrs.extend(self.range_key);
        for index in &self.indexes {
            for attr in [index.hash_key, index.range_key] {
                if !attrs.contains(&attr) {
                    attrs.push(attr);
                }
            }
        }
        attrs
    }
}

/// The four tables, named from `names`.
pub fn definitions(names: &TableNames) -> Vec<TableDefinition> {
    vec![
        TableDefinition {
            logical_id: "TenantsTable",
            name: names.tenants.clone(),
            hash_key: PK,
            range_key: Some(SK),
            indexes: vec![IndexDefinition {
                name: TENANTS_BY_TENANT,
                hash_key: GSI1PK,
                range_key: GSI1SK,
                projection: IndexProjection::All,
            }],
            // Only audit records carry it.
            ttl_attribute: Some(EXPIRES_AT),
            stream: false,
            retain: true,
        },
        TableDefinition {
            logical_id: "UsageTable",
            name: names.usage.clone(),
            hash_key: PK,
            range_key: Some(SK),
            indexes: vec![
                IndexDefinition {
                    name: USAGE_BY_TENANT_TIME,
                    hash_key: GSI1PK,
                    range_key: GSI1SK,
                    projection: IndexProjection::All,
                },
                // Only rollup items carry these keys, each written once per tenant, model and
                // hour: the index is as large as the rollups' count, not the requests'.
                IndexDefinition {
                    name: USAGE_BY_HOUR,
                    hash_key: HOUR_PK,
                    range_key: HOUR_SK,
                    projection: IndexProjection::KeysOnly,
                },
            ],
            ttl_attribute: None,
            stream: true,
            retain: true,
        },
        TableDefinition {
            logical_id: "LimitsTable",
            name: names.limits.clone(),
            hash_key: PK,
            range_key: None,
            indexes: vec![],
            ttl_attribute: Some(EXPIRES_AT),
            stream: false,
            retain: false,
        },
        TableDefinition {
            logical_id: "CacheTable",
            name: names.cache.clone(),
            hash_key: PK,
            range_key: None,
            indexes: vec![],
            ttl_attribute: Some(EXPIRES_AT),
            stream: false,
            retain: false,
        },
    ]
}

/// What `create_tables` did to one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableReport {
    /// The table's name.
    pub table: String,
    /// False when the table already existed (it is left as it is).
    pub created: bool,
    /// The TTL attribute, if the table has one, and whether this run enabled it.
    pub ttl: Option<(&'static str, bool)>,
}

impl std::fmt::Display for TableReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = if self.created { "created" } else { "found" };
        write!(f, "{what} {}", self.table)?;
        match self.ttl {
            Some((attr, true)) => write!(f, " (TTL on `{attr}` enabled)"),
            Some((attr, false)) => write!(f, " (TTL on `{attr}` already enabled)"),
            None => Ok(()),
        }
    }
}

fn key_schema(hash: &str, range: Option<&str>) -> Result<Vec<KeySchemaElement>, StoreError> {
    let mut schema = vec![
        KeySchemaElement::builder()
            .attribute_name(hash)
            .key_type(KeyType::Hash)
            .build()
            .map_err(error::build)?,
    ];
    if let Some(range) = range {
        schema.push(
            KeySchemaElement::builder()
                .attribute_name(range)
                .key_type(KeyType::Range)
                .build()
                .map_err(error::build)?,
        );
    }
    Ok(schema)
}

/// Creates every table that does not exist yet, waits for it to be active, and enables TTL.
pub async fn create_tables(
    client: &Client,
    names: &TableNames,
) -> Result<Vec<TableReport>, StoreError> {
    let mut reports = Vec::new();
    for def in definitions(names) {
        let created = create_table(client, &def).await?;
        wait_active(client, &def.name).await?;
        let ttl = match def.ttl_attribute {
            Some(attr) => Some((attr, enable_ttl(client, &def.name, attr).await?)),
            None => None,
        };
        reports.push(TableReport {
            table: def.name.clone(),
            created,
            ttl,
        });
    }
    Ok(reports)
}

/// True if this call created the table, false if it existed.
async fn create_table(client: &Client, def: &TableDefinition) -> Result<bool, StoreError> {
    let mut request = client
        .create_table()
        .table_name(&def.name)
        .billing_mode(BillingMode::PayPerRequest)
        .set_key_schema(Some(key_schema(def.hash_key, def.range_key)?));
    for attr in def.key_attributes() {
        request = request.attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name(attr)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .map_err(error::build)?,
        );
    }
    for index in &def.indexes {
        request = request.global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name(index.name)
                .set_key_schema(Some(key_schema(index.hash_key, Some(index.range_key))?))
                .projection(
                    Projection::builder()
                        .projection_type(index.projection.sdk())
                        .build(),
                )
                .build()
                .map_err(error::build)?,
        );
    }
    if def.stream {
        request = request.stream_specification(
            StreamSpecification::builder()
                .stream_enabled(true)
                .stream_view_type(StreamViewType::NewImage)
                .build()
                .map_err(error::build)?,
        );
    }
    match request.send().await {
        Ok(_) => Ok(true),
        Err(err) => {
            let exists = err
                .as_service_error()
                .is_some_and(|e| e.is_resource_in_use_exception());
            if exists {
                Ok(false)
            } else {
                Err(error::sdk("CreateTable", err))
            }
        }
    }
}

/// Real DynamoDB takes seconds to create a table; an emulator answers ACTIVE at once.
async fn wait_active(client: &Client, table: &str) -> Result<(), StoreError> {
    for _ in 0..120 {
        let out = client
            .describe_table()
            .table_name(table)
            .send()
            .await
            .map_err(|e| error::sdk("DescribeTable", e))?;
        let status = out.table().and_then(|t| t.table_status());
        if status == Some(&TableStatus::Active) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(StoreError::Unavailable(format!(
        "table {table} did not become ACTIVE within a minute"
    )))
}

/// True if this call enabled TTL, false if it was already on.
async fn enable_ttl(client: &Client, table: &str, attr: &str) -> Result<bool, StoreError> {
    let out = client
        .describe_time_to_live()
        .table_name(table)
        .send()
        .await
        .map_err(|e| error::sdk("DescribeTimeToLive", e))?;
    let status = out
        .time_to_live_description()
        .and_then(|d| d.time_to_live_status());
    if matches!(
        status,
        Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling)
    ) {
        return Ok(false);
    }
    client
        .update_time_to_live()
        .table_name(table)
        .time_to_live_specification(
            TimeToLiveSpecification::builder()
                .attribute_name(attr)
                .enabled(true)
                .build()
                .map_err(error::build)?,
        )
        .send()
        .await
        .map_err(|e| error::sdk("UpdateTimeToLive", e))?;
    Ok(true)
}

/// The `AWS::DynamoDB::Table` resources for `names` (whose prefix may hold CloudFormation
/// `${…}` references: names are rendered with `!Sub`), indented to sit under `Resources:`,
/// between the BEGIN/END markers.
pub fn cloudformation_yaml(names: &TableNames) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = render(&mut out, &definitions(names));
    out
}

fn render(out: &mut String, defs: &[TableDefinition]) -> std::fmt::Result {
    writeln!(out, "{CLOUDFORMATION_BEGIN}")?;
    for def in defs {
        writeln!(out, "  {}:", def.logical_id)?;
        writeln!(out, "    Type: AWS::DynamoDB::Table")?;
        if def.retain {
            writeln!(out, "    DeletionPolicy: Retain")?;
            writeln!(out, "    UpdateReplacePolicy: Retain")?;
        }
        writeln!(out, "    Properties:")?;
        writeln!(out, "      TableName: !Sub \"{}\"", def.name)?;
        writeln!(out, "      BillingMode: PAY_PER_REQUEST")?;
        writeln!(out, "      AttributeDefinitions:")?;
        for attr in def.key_attributes() {
            writeln!(out, "        - AttributeName: {attr}")?;
            writeln!(out, "          AttributeType: S")?;
        }
        writeln!(out, "      KeySchema:")?;
        render_key_schema(out, "        ", def.hash_key, def.range_key)?;
        if !def.indexes.is_empty() {
            writeln!(out, "      GlobalSecondaryIndexes:")?;
            for index in &def.indexes {
                writeln!(out, "        - IndexName: {}", index.name)?;
                writeln!(out, "          KeySchema:")?;
                render_key_schema(out, "            ", index.hash_key, Some(index.range_key))?;
                writeln!(out, "          Projection:")?;
                writeln!(
                    out,
                    "            ProjectionType: {}",
                    index.projection.cloudformation()
                )?;
            }
        }
        if def.stream {
            writeln!(out, "      StreamSpecification:")?;
            writeln!(out, "        StreamViewType: NEW_IMAGE")?;
        }
        if let Some(attr) = def.ttl_attribute {
            writeln!(out, "      TimeToLiveSpecification:")?;
            writeln!(out, "        AttributeName: {attr}")?;
            writeln!(out, "        Enabled: true")?;
        }
        writeln!(out, "      PointInTimeRecoverySpecification:")?;
        writeln!(out, "        PointInTimeRecoveryEnabled: true")?;
        writeln!(out, "      SSESpecification:")?;
        writeln!(out, "        SSEEnabled: true")?;
    }
    writeln!(out, "{CLOUDFORMATION_END}")
}

fn render_key_schema(
    out: &mut String,
    indent: &str,
    hash: &str,
    range: Option<&str>,
) -> std::fmt::Result {
    writeln!(out, "{indent}- AttributeName: {hash}")?;
    writeln!(out, "{indent}  KeyType: HASH")?;
    if let Some(range) = range {
        writeln!(out, "{indent}- AttributeName: {range}")?;
        writeln!(out, "{indent}  KeyType: RANGE")?;
    }
    Ok(())
}

/// The generated block as `template` currently holds it (markers included), if present.
pub fn cloudformation_block(template: &str) -> Option<&str> {
    let start = template.find(CLOUDFORMATION_BEGIN)?;
    let end_marker = template[start..].find(CLOUDFORMATION_END)? + start;
    let end = template[end_marker..]
        .find('\n')
        .map_or(template.len(), |i| end_marker + i + 1);
    Some(&template[start..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_is_named_after_the_prefix() {
        let names = TableNames::with_prefix("t-1");
        let defs = definitions(&names);
        let tables: Vec<_> = defs.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(
            tables,
            ["t-1-tenants", "t-1-usage", "t-1-limits", "t-1-cache"]
        );
        assert_eq!(TableNames::default(), TableNames::with_prefix("tollgate"));
    }

    #[test]
    fn the_rendered_block_can_be_found_again_between_its_markers() {
        let yaml = cloudformation_yaml(&TableNames::with_prefix(CLOUDFORMATION_PREFIX));
        let template = format!("Resources:\n{yaml}  Other:\n    Type: X\n");
        assert_eq!(cloudformation_block(&template), Some(yaml.as_str()));
        assert!(yaml.contains("TableName: !Sub \"${AWS::StackName}-limits\""));
        assert_eq!(yaml.matches("Type: AWS::DynamoDB::Table").count(), 4);
        assert_eq!(yaml.matches("TimeToLiveSpecification:").count(), 3);
    }
}
