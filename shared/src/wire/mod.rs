//! OpenAI-compatible wire shapes: what clients send and receive.

pub mod anthropic;
pub mod embeddings;
pub mod fields;
pub mod openai;
pub mod request;
pub mod tools;
