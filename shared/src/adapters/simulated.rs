//! A simulated provider for the embedded default: deterministic replies, token counts from a
//! real tokenizer, configurable latency, and prompt caching that behaves like the real thing
//! (OpenAI: cached reads in 128-token steps past 1,024 tokens; Anthropic: a cache write on
//! first use of a long system prompt, reads for five minutes after).

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures_util::stream;

use crate::domain::chat::{Completion, FinishReason, Role};
use crate::domain::tenant::ProviderKind;
use crate::domain::usage::TokenUsage;
use crate::ports::provider::{
    EventStream, LlmProvider, ProviderError, ProviderRequest, StreamEvent,
};
use crate::tokenizer::{count_chat_tokens, count_tokens, count_tokens_memo};

const CACHE_MIN_TOKENS: usize = 1024;
const CACHE_TTL: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Copy, Default)]
pub struct SimulatedLatency {
    /// Before the reply (or the first stream chunk).
    pub first_token: Duration,
    /// Between stream chunks.
    pub per_chunk: Duration,
}

pub struct SimulatedProvider {
    kind: ProviderKind,
    latency: SimulatedLatency,
    /// Hash of (model, system prompt) → when it was last cached.
    prompt_cache: Mutex<HashMap<u64, Instant>>,
}

impl SimulatedProvider {
    pub fn new(kind: ProviderKind, latency: SimulatedLatency) -> Self {
        Self {
            kind,
            latency,
            prompt_cache: Mutex::new(HashMap::new()),
        }
    }

    /// The deterministic reply: it quotes the start of the last user turn so a person trying
    /// the gateway can see their message went through.
    fn reply_text(request: &ProviderRequest) -> String {
        let last_user = request
            .messages
            .iter()
            .rev()
            .find(|m| m.role == Role::User)
            .map_or("", |m| m.content.as_str());
        let quoted: String = last_user.chars().take(80).collect();
        let ellipsis = if last_user.chars().count() > 80 {
            "…"
        } else {
            ""
        };
        format!(
            "This is a simulated reply from {}. You said: \"{quoted}{ellipsis}\". Set OPENAI_API_KEY or ANTHROPIC_API_KEY to talk to a real model.",
            request.model
        )
    }

    /// Cuts the reply to `max_tokens` (whole words), like a provider stopping at the limit.
    fn truncate(text: String, max_tokens: Option<u32>) -> (String, FinishReason) {
        let Some(max) = max_tokens.map(|m| m as usize) else {
            return (text, FinishReason::Stop);
        };
        if count_tokens(&text) <= max {
            return (text, FinishReason::Stop);
        }
        let mut out = String::new();
        for word in text.split_inclusive(' ') {
            let candidate = format!("{out}{word}");
            if count_tokens(&candidate) > max {
                break;
            }
            out = candidate;
        }
        (out, FinishReason::Length)
    }

    fn usage(&self, request: &ProviderRequest, reply: &str) -> TokenUsage {
        let prompt = count_chat_tokens(request.system.as_deref(), &request.messages) as u64;
        let completion = count_tokens(reply) as u64;
        let mut usage = TokenUsage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            ..TokenUsage::default()
        };
        let Some(system) = request.system.as_deref() else {
            return usage;
        };
        let system_tokens = count_tokens_memo(system);
        if system_tokens < CACHE_MIN_TOKENS {
            return usage;
        }
        let mut hasher = DefaultHasher::new();
        (&request.model, system).hash(&mut hasher);
        let key = hasher.finish();
        let now = Instant::now();
        let warm = match self.prompt_cache.lock() {
            Ok(mut cache) => {
                let warm = cache
                    .get(&key)
                    .is_some_and(|t| now.duration_since(*t) < CACHE_TTL);
                cache.insert(key, now);
                warm
            }
            Err(_) => false,
        };
        let system_tokens = system_tokens as u64;
        match (self.kind, warm) {
            (ProviderKind::Openai, true) => usage.cached_tokens = system_tokens / 128 * 128,
            (ProviderKind::Anthropic, true) => usage.cached_tokens = system_tokens,
            (ProviderKind::Anthropic, false) => usage.cache_write_tokens = system_tokens,
            (ProviderKind::Openai, false) => {}
        }
        usage
    }

    fn generate(&self, request: &ProviderRequest) -> Completion {
        let (content, finish_reason) =
            Self::truncate(Self::reply_text(request), request.max_tokens);
        let usage = self.usage(request, &content);
        Completion {
            content,
            finish_reason,
            usage,
            served_model: request.model.clone(),
        }
    }
}

#[async_trait]
impl LlmProvider for SimulatedProvider {
    fn kind(&self) -> ProviderKind {
        self.kind
    }

    async fn complete(&self, request: &ProviderRequest) -> Result<Completion, ProviderError> {
        if !self.latency.first_token.is_zero() {
            tokio::time::sleep(self.latency.first_token).await;
        }
        Ok(self.generate(request))
    }

    async fn stream(&self, request: &ProviderRequest) -> Result<EventStream, ProviderError> {
        let completion = self.generate(request);
        let mut events = vec![StreamEvent::Model(completion.served_model.clone())];
        events.extend(
            completion
                .content
                .split_inclusive(' ')
                .map(|word| StreamEvent::Delta(word.to_owned())),
        );
        events.push(StreamEvent::Finish(completion.finish_reason));
        events.push(StreamEvent::Usage(completion.usage));
        let latency = self.latency;
        let stream = stream::unfold(
            (events.into_iter(), true),
            move |(mut events, first)| async move {
                let event = events.next()?;
                let delay = if first {
                    latency.first_token
                } else {
                    latency.per_chunk
                };
                if !delay.is_zero()
                    && matches!(event, StreamEvent::Delta(_) | StreamEvent::Model(_))
                {
                    tokio::time::sleep(delay).await;
                }
                Some((Ok(event), (events, false)))
            },
        );
        Ok(Box::pin(stream))
    }
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;

    use super::*;
    use crate::domain::chat::Message;

    fn request(system: Option<String>, text: &str, max_tokens: Option<u32>) -> ProviderRequest {
        ProviderRequest {
            model: "gpt-4o-mini".into(),
            system,
            messages: vec![Message {
                role: Role::User,
                content: text.into(),
                name: None,
            }],
            max_tokens,
            temperature: None,
            top_p: None,
            stop: vec![],
            seed: None,
            presence_penalty: None,
            frequency_penalty: None,
        }
    }

    #[tokio::test]
    async fn replies_are_deterministic_and_counted_with_the_tokenizer() {
        let p = SimulatedProvider::new(ProviderKind::Openai, SimulatedLatency::default());
        let a = p
            .complete(&request(Some("Be kind.".into()), "hello", None))
            .await
            .unwrap();
        let b = p
            .complete(&request(Some("Be kind.".into()), "hello", None))
            .await
            .unwrap();
        assert_eq!(a, b);
        assert_eq!(a.usage.completion_tokens, count_tokens(&a.content) as u64);
        assert_eq!(
            a.usage.prompt_tokens,
            (count_tokens("Be kind.") + 3 + count_tokens("hello") + 3 + 3) as u64
        );
    }

    #[tokio::test]
    async fn max_tokens_cuts_the_reply_and_says_length() {
        let p = SimulatedProvider::new(ProviderKind::Openai, SimulatedLatency::default());
        let c = p.complete(&request(None, "hello", Some(5))).await.unwrap();
        assert_eq!(c.finish_reason, FinishReason::Length);
        assert!(c.usage.completion_tokens <= 5);
    }

    #[tokio::test]
    async fn a_streamed_reply_matches_the_buffered_one() {
        let p = SimulatedProvider::new(ProviderKind::Anthropic, SimulatedLatency::default());
        let buffered = p.complete(&request(None, "stream me", None)).await.unwrap();
        let mut text = String::new();
        let mut usage = None;
        let mut s = p.stream(&request(None, "stream me", None)).await.unwrap();
        while let Some(event) = s.next().await {
            match event.unwrap() {
                StreamEvent::Delta(d) => text.push_str(&d),
                StreamEvent::Usage(u) => usage = Some(u),
                _ => {}
            }
        }
        assert_eq!(text, buffered.content);
        assert_eq!(usage, Some(buffered.usage));
    }

    #[tokio::test]
    async fn long_system_prompts_are_cached_like_the_real_providers() {
        let long = "You are a meticulous assistant. ".repeat(300);
        let anthropic =
            SimulatedProvider::new(ProviderKind::Anthropic, SimulatedLatency::default());
        let first = anthropic
            .complete(&request(Some(long.clone()), "q", None))
            .await
            .unwrap();
        let second = anthropic
            .complete(&request(Some(long.clone()), "q", None))
            .await
            .unwrap();
        assert!(first.usage.cache_write_tokens >= 1024 && first.usage.cached_tokens == 0);
        assert_eq!(second.usage.cached_tokens, first.usage.cache_write_tokens);

        let openai = SimulatedProvider::new(ProviderKind::Openai, SimulatedLatency::default());
        let first = openai
            .complete(&request(Some(long.clone()), "q", None))
            .await
            .unwrap();
        let second = openai
            .complete(&request(Some(long), "q", None))
            .await
            .unwrap();
        assert_eq!(first.usage.cached_tokens, 0);
        assert!(second.usage.cached_tokens >= 1024 && second.usage.cached_tokens % 128 == 0);
    }
}
