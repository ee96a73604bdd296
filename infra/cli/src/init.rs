//! `tollgate init`: creates Tollgate's DynamoDB tables (or prints them as CloudFormation) and,
//! when a Qdrant URL is given, the Qdrant collection with its tenant index.
//!
//! The endpoint, region and credentials come from the standard AWS environment, so the same
//! command sets up an account or an emulator:
//! `AWS_ENDPOINT_URL=http://127.0.0.1:5000 AWS_REGION=us-east-1 tollgate init`. Qdrant's key
//! comes from `TOLLGATE_QDRANT_API_KEY` or `TOLLGATE_QDRANT_API_KEY_SECRET_ID`, the vector size
//! from `TOLLGATE_EMBEDDING_DIMENSIONS`, as in the functions.

use anyhow::Context;
use tollgate::adapters::aws::AwsConfigSource;
use tollgate::adapters::dynamodb::tables::{self, CLOUDFORMATION_PREFIX, DEFAULT_PREFIX};
use tollgate::adapters::dynamodb::{DynamoStore, TableNames};
use tollgate::bootstrap::init_vector_index;
use tollgate::config::{ProviderMode, Settings};

#[derive(clap::Args, Debug)]
pub struct InitArgs {
    /// Table name prefix: creates `{prefix}-tenants`, `-usage`, `-limits` and `-cache`.
    /// Defaults to `tollgate`, or to `${AWS::StackName}` with `--cloudformation`.
    #[arg(long = "table-prefix", alias = "prefix", env = "TOLLGATE_TABLE_PREFIX")]
    prefix: Option<String>,
    /// Print the `AWS::DynamoDB::Table` resources for template.yaml instead of creating
    /// anything (the block between the `# BEGIN generated tables` markers).
    #[arg(long)]
    cloudformation: bool,
    /// Also create (or check) the Qdrant collection and its payload indexes at this gRPC URL.
    #[arg(long = "qdrant-url", env = "TOLLGATE_QDRANT_URL")]
    qdrant_url: Option<String>,
    /// Only set up Qdrant; leave the DynamoDB tables alone.
    #[arg(long = "qdrant-only", requires = "qdrant_url")]
    qdrant_only: bool,
}

#[allow(clippy::print_stdout)] // What was created (or the YAML) is this command's output.
pub async fn run(args: InitArgs) -> anyhow::Result<()> {
    if args.cloudformation {
        let prefix = args.prefix.as_deref().unwrap_or(CLOUDFORMATION_PREFIX);
        print!(
            "{}",
            tables::cloudformation_yaml(&TableNames::with_prefix(prefix))
        );
        return Ok(());
    }
    if !args.qdrant_only {
        let prefix = args.prefix.as_deref().unwrap_or(DEFAULT_PREFIX);
        let store = DynamoStore::from_env(
            AwsConfigSource::DEFAULT_CHAIN,
            TableNames::with_prefix(prefix),
        )
        .await;
        let reports = store.create_tables().await.context(
            "creating the DynamoDB tables (endpoint and credentials come from the AWS_* environment)",
        )?;
        for report in reports {
            println!("{report}");
        }
    }
    if let Some(url) = args.qdrant_url {
        let mut settings = Settings::from_env(ProviderMode::Real, AwsConfigSource::DEFAULT_CHAIN)?;
        settings.retrieval.qdrant_url = Some(url);
        if let Some(line) = init_vector_index(&settings)
            .await
            .context("setting up the Qdrant collection")?
        {
            println!("{line}");
        }
    }
    Ok(())
}
