//! The provider and Qdrant stand-ins as one process, for end-to-end runs of the real function
//! binaries (`cargo lambda watch` in infra/test.sh). Prints one line per server,
//! `<name> <url>`, then serves until killed.
//!
//! - `openai http://127.0.0.1:<port>/v1`: OpenAI Chat Completions and Embeddings wire format
//! - `anthropic http://127.0.0.1:<port>`: Anthropic Messages wire format
//! - `bedrock http://127.0.0.1:<port> <access key> <secret key> <session token>`: Bedrock's
//!   Converse (SigV4 checked against these test credentials, region us-east-1)
//! - `qdrant http://127.0.0.1:<port>`: Qdrant's gRPC protocol (refuses queries without a
//!   tenant filter)
//!
//! `STANDIN_ANTHROPIC_STATUS=529` (or any status) makes every Anthropic request fail with it:
//! a storm, for the failover walkthrough (infra/bedrock-demo.sh).

#![allow(clippy::print_stdout)] // The URLs are this program's output.

use std::io::Write;

use tollgate_tests::standins::bedrock;
use tollgate_tests::{AnthropicStandIn, BedrockStandIn, Behavior, OpenAiStandIn, QdrantStandIn};

#[tokio::main]
async fn main() {
    let openai = OpenAiStandIn::start().await;
    let anthropic = AnthropicStandIn::start().await;
    let bedrock = BedrockStandIn::start().await;
    let qdrant = QdrantStandIn::start().await;
    if let Some(status) = std::env::var("STANDIN_ANTHROPIC_STATUS")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        anthropic.always(Some(Behavior::status(status)));
    }
    println!("openai {}", openai.base_url());
    println!("anthropic {}", anthropic.base_url());
    println!(
        "bedrock {} {} {} {}",
        bedrock.base_url(),
        bedrock::ACCESS_KEY,
        bedrock::SECRET_KEY,
        bedrock::SESSION_TOKEN
    );
    println!("qdrant {}", qdrant.url());
    let _ = std::io::stdout().flush();
    // Serve until the process is stopped.
    std::future::pending::<()>().await;
}
