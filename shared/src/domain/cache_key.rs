//! Response-cache keys.
//!
//! A key hashes everything that can change the answer: the tenant, its configuration version,
//! the route (provider and provider model), the rendered system prompt and the normalized
//! request. It starts with the tenant id in the clear, so a store can partition by tenant and
//! refuse a key that does not belong to the caller.

use sha2::{Digest, Sha256};

use super::chat::ChatRequest;
use super::ids::TenantId;
use super::tenant::Route;

/// The response-cache key for `request` as served by `route`: `{tenant}#{sha256 hex}`.
pub fn response_cache_key(
    tenant: &TenantId,
    config_version: u64,
    route: &Route,
    system_prompt: Option<&str>,
    request: &ChatRequest,
) -> String {
    let mut hasher = Sha256::new();
    // Length-prefix every field so no two different inputs can concatenate to the same bytes.
    let mut field = |bytes: &[u8]| {
        hasher.update((bytes.len() as u64).to_le_bytes());
        hasher.update(bytes);
    };
    field(b"tollgate-response-cache-v1");
    field(tenant.as_str().as_bytes());
    field(&config_version.to_le_bytes());
    field(route.provider.as_str().as_bytes());
    field(route.model.as_bytes());
    field(system_prompt.unwrap_or_default().as_bytes());
    // `ChatRequest` serializes only the fields that change the answer (not `stream`/`user`);
    // serde_json renders it deterministically.
    field(&serde_json::to_vec(request).unwrap_or_default());
    format!("{tenant}#{}", hex::encode(hasher.finalize()))
}

/// The response-cache key for an embeddings call: `{tenant}#{sha256 hex}` over the tenant, its
/// configuration version, the route, the requested `dimensions`, the inputs' kind (`texts` or
/// `tokens`) and every input's bytes, under a tag of its own so no embeddings key can equal a
/// chat key. The encoding format is not part of it: floats and base64 are the same vectors.
pub fn embeddings_cache_key<I: AsRef<[u8]>>(
    tenant: &TenantId,
    config_version: u64,
    route: &Route,
    dimensions: Option<u32>,
    kind: &str,
    inputs: impl IntoIterator<Item = I>,
) -> String {
    let mut hasher = Sha256::new();
    let mut field = |bytes: &[u8]| {
        hasher.update((bytes.len() as u64).to_le_bytes());
        hasher.update(bytes);
    };
    field(b"tollgate-embeddings-cache-v1");
    field(tenant.as_str().as_bytes());
    field(&config_version.to_le_bytes());
    field(route.provider.as_str().as_bytes());
    field(route.model.as_bytes());
    field(&dimensions.map_or(0, |d| u64::from(d) + 1).to_le_bytes());
    field(kind.as_bytes());
    for input in inputs {
        field(input.as_ref());
    }
    format!("{tenant}#{}", hex::encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::chat::{Message, Role};
    use crate::domain::tenant::{ProviderKind, RouteKind};

    fn request(text: &str, stream: bool) -> ChatRequest {
        ChatRequest {
            model: "fast".into(),
            messages: vec![Message {
                role: Role::User,
                content: text.into(),
                name: None,
                tool_calls: Vec::new(),
                tool_call_id: None,
                parts: Vec::new(),
                cache_breakpoint: false,
            }],
            max_tokens: None,
            temperature: None,
            top_p: None,
            stop: vec![],
            seed: None,
            presence_penalty: None,
            frequency_penalty: None,
            retrieval: None,
            conversation_id: None,
            response_format: Default::default(),
            tools: Default::default(),
            user: Some(crate::domain::profile::UserId::parse("u1").unwrap()),
            stream,
            include_usage: false,
        }
    }

    fn route() -> Route {
        Route {
            fallbacks: Vec::new(),
            provider: ProviderKind::Openai,
            model: "gpt-4o-mini".into(),
            fine_tuned: false,
            kind: RouteKind::Chat,
        }
    }

    fn key(tenant: &str, version: u64, system: &str, req: &ChatRequest) -> String {
        response_cache_key(
            &TenantId::parse(tenant).unwrap(),
            version,
            &route(),
            Some(system),
            req,
        )
    }

    #[test]
    fn the_same_question_from_two_tenants_never_shares_a_key() {
        assert_ne!(
            key("acme", 1, "s", &request("hi", false)),
            key("globex", 1, "s", &request("hi", false))
        );
        assert!(key("acme", 1, "s", &request("hi", false)).starts_with("acme#"));
    }

    #[test]
    fn streaming_and_end_user_do_not_change_the_key() {
        let mut other_user = request("hi", true);
        other_user.user = Some(crate::domain::profile::UserId::parse("u2").unwrap());
        assert_eq!(
            key("acme", 1, "s", &request("hi", false)),
            key("acme", 1, "s", &other_user)
        );
    }

    #[test]
    fn config_version_system_prompt_and_content_all_change_the_key() {
        let base = key("acme", 1, "s", &request("hi", false));
        assert_ne!(base, key("acme", 2, "s", &request("hi", false)));
        assert_ne!(base, key("acme", 1, "t", &request("hi", false)));
        assert_ne!(base, key("acme", 1, "s", &request("hi!", false)));
    }

    #[test]
    fn the_response_format_changes_the_key_and_text_is_no_format() {
        use crate::domain::structured::ResponseFormat;
        let base = key("acme", 1, "s", &request("hi", false));
        let mut text = request("hi", false);
        text.response_format = ResponseFormat::Text;
        assert_eq!(base, key("acme", 1, "s", &text));
        let mut object = request("hi", false);
        object.response_format = ResponseFormat::JsonObject;
        assert_ne!(base, key("acme", 1, "s", &object));
        let schema = |name: &str| {
            let mut r = request("hi", false);
            r.response_format = ResponseFormat::parse(&serde_json::json!({
                "type": "json_schema",
                "json_schema": {"name": name, "schema": {"type": "object"}}
            }))
            .unwrap();
            key("acme", 1, "s", &r)
        };
        assert_ne!(schema("a"), key("acme", 1, "s", &object));
        assert_ne!(schema("a"), schema("b"));
        assert_eq!(schema("a"), schema("a"));
    }
}
