//! `POST /v1/embeddings`: OpenAI's request body parsed and bounded, and its response shape.
//!
//! `input` is a string, an array of strings, an array of token ids, or an array of token-id
//! arrays. Bounds are OpenAI's own, so a request the gateway admits is one the provider
//! accepts: at most [`MAX_INPUTS`] inputs, none empty, none over [`MAX_INPUT_TOKENS`] tokens, and
//! [`MAX_TOTAL_TOKENS`] in all. A refusal is a 400 naming the field, never echoing the input.

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::GatewayError;
use crate::ports::provider::EmbeddingInput;
use crate::tokenizer::count_tokens;

use super::fields::{self, FieldError};

/// Inputs per request (OpenAI's limit).
pub const MAX_INPUTS: usize = 2_048;
/// Tokens per input (OpenAI's limit for its embedding models).
pub const MAX_INPUT_TOKENS: u64 = 8_192;
/// Tokens per request, all inputs together (OpenAI's limit).
pub const MAX_TOTAL_TOKENS: u64 = 300_000;
/// The longest vector a client may ask for (`text-embedding-3-large` has 3,072).
pub const MAX_DIMENSIONS: i64 = 4_096;
const MAX_MODEL_LEN: usize = 256;

/// A checked embeddings request.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddingsRequest {
    /// The logical model, resolved through the tenant's routes.
    pub model: String,
    /// What to embed.
    pub input: EmbeddingInput,
    /// The token count of each input: exact for token arrays, the gateway's tokenizer for
    /// texts (what the limiter reserves; the provider's report is what is metered).
    pub tokens: Vec<u64>,
    /// Shorter vectors, when asked for.
    pub dimensions: Option<u32>,
    /// How the vectors go back to the client.
    pub encoding: Encoding,
    /// The client's end user, if named.
    pub user: Option<crate::domain::profile::UserId>,
}

impl EmbeddingsRequest {
    /// Tokens across all inputs, as counted.
    pub fn total_tokens(&self) -> u64 {
        self.tokens.iter().sum()
    }
}

/// `encoding_format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Encoding {
    /// JSON arrays of numbers.
    #[default]
    Float,
    /// Each vector's little-endian `f32`s, base64-encoded (what the OpenAI Python SDK asks for
    /// by default, and decodes itself).
    Base64,
}

#[derive(Deserialize)]
struct RawRequest {
    model: String,
    input: RawInput,
    #[serde(default)]
    dimensions: Option<i64>,
    #[serde(default)]
    encoding_format: Option<String>,
    #[serde(default)]
    user: Option<String>,
}

#[derive(Deserialize)]
#[serde(
    untagged,
    expecting = "expected a string, an array of strings, an array of token ids or an array of token-id arrays"
)]
enum RawInput {
    Text(String),
    Texts(Vec<String>),
    Tokens(Vec<u32>),
    TokenArrays(Vec<Vec<u32>>),
}

fn invalid(message: impl Into<String>, param: &str) -> GatewayError {
    GatewayError::invalid(message, Some(param.to_owned()))
}

/// Parses and bounds an embeddings body. Every failure is a 400 naming the field.
pub fn parse_embeddings_request(body: &[u8]) -> Result<EmbeddingsRequest, GatewayError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        GatewayError::invalid(format!("the request body is not valid JSON ({e})"), None)
    })?;
    if !value.is_object() {
        return Err(GatewayError::invalid(
            "the request body must be a JSON object with `model` and `input`",
            None,
        ));
    }
    let raw: RawRequest = serde_path_to_error::deserialize(&value).map_err(|e| {
        let FieldError { param, message } = fields::describe(&e, &value);
        GatewayError::invalid(message, param)
    })?;
    let model = raw.model.trim().to_owned();
    if model.is_empty() || model.len() > MAX_MODEL_LEN {
        return Err(invalid("`model` must be a non-empty model name", "model"));
    }
    let input = match raw.input {
        RawInput::Text(text) => EmbeddingInput::Texts(vec![text]),
        RawInput::Texts(texts) => EmbeddingInput::Texts(texts),
        RawInput::Tokens(ids) => EmbeddingInput::Tokens(vec![ids]),
        RawInput::TokenArrays(arrays) => EmbeddingInput::Tokens(arrays),
    };
    if input.is_empty() {
        return Err(invalid("`input` must contain at least one input", "input"));
    }
    if input.len() > MAX_INPUTS {
        return Err(invalid(
            format!(
                "`input` has {} inputs; the limit is {MAX_INPUTS}",
                input.len()
            ),
            "input",
        ));
    }
    let tokens = count_inputs(&input)?;
    let total: u64 = tokens.iter().sum();
    if total > MAX_TOTAL_TOKENS {
        return Err(invalid(
            format!("`input` has {total} tokens in all; the limit is {MAX_TOTAL_TOKENS}"),
            "input",
        ));
    }
    let dimensions = match raw.dimensions {
        None => None,
        Some(d) if (1..=MAX_DIMENSIONS).contains(&d) => u32::try_from(d).ok(),
        Some(_) => {
            return Err(invalid(
                format!("`dimensions` must be between 1 and {MAX_DIMENSIONS}"),
                "dimensions",
            ));
        }
    };
    let encoding = match raw.encoding_format.as_deref() {
        None | Some("float") => Encoding::Float,
        Some("base64") => Encoding::Base64,
        Some(_) => {
            return Err(invalid(
                "`encoding_format` must be `float` or `base64`",
                "encoding_format",
            ));
        }
    };
    let user = super::request::end_user(raw.user)?;
    Ok(EmbeddingsRequest {
        model,
        input,
        tokens,
        dimensions,
        encoding,
        user,
    })
}

/// Each input's tokens, refusing an empty input or one over [`MAX_INPUT_TOKENS`].
fn count_inputs(input: &EmbeddingInput) -> Result<Vec<u64>, GatewayError> {
    let counts: Vec<u64> = match input {
        EmbeddingInput::Texts(texts) => texts.iter().map(|t| count_tokens(t) as u64).collect(),
        EmbeddingInput::Tokens(arrays) => arrays.iter().map(|ids| ids.len() as u64).collect(),
    };
    for (i, &n) in counts.iter().enumerate() {
        if n == 0 {
            return Err(invalid(format!("`input[{i}]` is empty"), "input"));
        }
        if n > MAX_INPUT_TOKENS {
            return Err(invalid(
                format!("`input[{i}]` has {n} tokens; the limit is {MAX_INPUT_TOKENS} per input"),
                "input",
            ));
        }
    }
    Ok(counts)
}

/// The response body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingsResponse {
    /// Always `list`.
    pub object: String,
    /// One entry per input, in input order.
    pub data: Vec<EmbeddingDatum>,
    /// The model as the client named it.
    pub model: String,
    /// Tokens billed.
    pub usage: EmbeddingsUsage,
}

/// One input's vector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingDatum {
    /// Always `embedding`.
    pub object: String,
    /// The input's position.
    pub index: usize,
    /// The vector, as numbers or base64.
    pub embedding: EmbeddingVector,
}

/// A vector as `encoding_format` asked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EmbeddingVector {
    /// JSON numbers.
    Float(Vec<f32>),
    /// Little-endian `f32`s, base64.
    Base64(String),
}

impl EmbeddingVector {
    /// `vector` in `encoding`.
    pub fn encode(vector: Vec<f32>, encoding: Encoding) -> Self {
        match encoding {
            Encoding::Float => EmbeddingVector::Float(vector),
            Encoding::Base64 => {
                let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
                EmbeddingVector::Base64(base64::engine::general_purpose::STANDARD.encode(bytes))
            }
        }
    }
}

/// `usage` of an embeddings response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmbeddingsUsage {
    /// Tokens in the inputs.
    pub prompt_tokens: u64,
    /// The same: embeddings have no output tokens.
    pub total_tokens: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: Value) -> Result<EmbeddingsRequest, GatewayError> {
        parse_embeddings_request(body.to_string().as_bytes())
    }

    fn refused_param(body: Value) -> Option<String> {
        match parse(body).unwrap_err() {
            GatewayError::InvalidRequest { param, .. } => param,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_input_shape_parses_and_is_counted() {
        let one = parse(serde_json::json!({"model": "embed", "input": "hello world"})).unwrap();
        assert_eq!(one.input, EmbeddingInput::Texts(vec!["hello world".into()]));
        assert_eq!(one.tokens, [2]);
        let many = parse(serde_json::json!({"model": "embed", "input": ["a b", "c"]})).unwrap();
        assert_eq!(many.input.len(), 2);
        let ids = parse(serde_json::json!({"model": "embed", "input": [1, 2, 3]})).unwrap();
        assert_eq!(ids.input, EmbeddingInput::Tokens(vec![vec![1, 2, 3]]));
        assert_eq!(ids.total_tokens(), 3);
        let arrays =
            parse(serde_json::json!({"model": "embed", "input": [[1, 2], [3]], "dimensions": 64, "encoding_format": "base64"}))
                .unwrap();
        assert_eq!(arrays.tokens, [2, 1]);
        assert_eq!(arrays.dimensions, Some(64));
        assert_eq!(arrays.encoding, Encoding::Base64);
    }

    #[test]
    fn bad_bodies_are_refused_naming_the_field() {
        let model = || Some("model".to_owned());
        let input = || Some("input".to_owned());
        assert_eq!(
            refused_param(serde_json::json!({"model": " ", "input": "x"})),
            model()
        );
        assert_eq!(
            refused_param(serde_json::json!({"model": "e", "input": []})),
            input()
        );
        assert_eq!(
            refused_param(serde_json::json!({"model": "e", "input": [""]})),
            input()
        );
        assert_eq!(
            refused_param(serde_json::json!({"model": "e", "input": [[]]})),
            input()
        );
        assert_eq!(
            refused_param(serde_json::json!({"model": "e", "input": {"a": 1}})),
            input()
        );
        assert_eq!(
            refused_param(serde_json::json!({"model": "e", "input": [1, "x"]})),
            input()
        );
        let too_many: Vec<&str> = vec!["x"; MAX_INPUTS + 1];
        assert_eq!(
            refused_param(serde_json::json!({"model": "e", "input": too_many})),
            input()
        );
        let long = vec![7u32; MAX_INPUT_TOKENS as usize + 1];
        assert_eq!(
            refused_param(serde_json::json!({"model": "e", "input": [long]})),
            input()
        );
        let total = vec![vec![7u32; 8_000]; 38];
        assert_eq!(
            refused_param(serde_json::json!({"model": "e", "input": total})),
            input()
        );
        for dimensions in [0, -1, MAX_DIMENSIONS + 1] {
            assert_eq!(
                refused_param(
                    serde_json::json!({"model": "e", "input": "x", "dimensions": dimensions})
                ),
                Some("dimensions".to_owned())
            );
        }
        assert_eq!(
            refused_param(
                serde_json::json!({"model": "e", "input": "x", "encoding_format": "int8"})
            ),
            Some("encoding_format".to_owned())
        );
        assert!(matches!(
            parse_embeddings_request(b"[1]"),
            Err(GatewayError::InvalidRequest { param: None, .. })
        ));
    }

    #[test]
    fn base64_vectors_are_the_little_endian_floats() {
        let EmbeddingVector::Base64(encoded) =
            EmbeddingVector::encode(vec![1.0, -0.5], Encoding::Base64)
        else {
            panic!("base64 asked for");
        };
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .unwrap();
        let floats: Vec<f32> = bytes
            .chunks(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(floats, [1.0, -0.5]);
    }
}
