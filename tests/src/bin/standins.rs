//! The provider and Qdrant stand-ins as one process, for end-to-end runs of the real function
//! binaries (`cargo lambda watch` in infra/test.sh). Prints one line per server,
//! `<name> <url>`, then serves until killed.
//!
//! - `openai http://127.0.0.1:<port>/v1`: OpenAI Chat Completions and Embeddings wire format
//! - `anthropic http://127.0.0.1:<port>`: Anthropic Messages wire format
//! - `qdrant http://127.0.0.1:<port>`: Qdrant's gRPC protocol (refuses queries without a
//!   tenant filter)

#![allow(clippy::print_stdout)] // The URLs are this program's output.

use std::io::Write;

use tollgate_tests::{AnthropicStandIn, OpenAiStandIn, QdrantStandIn};

#[tokio::main]
async fn main() {
    let openai = OpenAiStandIn::start().await;
    let anthropic = AnthropicStandIn::start().await;
    let qdrant = QdrantStandIn::start().await;
    println!("openai {}", openai.base_url());
    println!("anthropic {}", anthropic.base_url());
    println!("qdrant {}", qdrant.url());
    let _ = std::io::stdout().flush();
    // Serve until the process is stopped.
    std::future::pending::<()>().await;
}
