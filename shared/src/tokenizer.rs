//! Token counting with a real BPE (tiktoken's `o200k_base`, the GPT-4o/GPT-5 vocabulary).
//!
//! Used by the simulated provider (its usage numbers must look like a real provider's) and for
//! estimates (Anthropic's cacheable-prompt threshold). Anthropic's tokenizer differs, so counts
//! for Claude models are estimates; the authoritative numbers always come from the provider's
//! usage fields. The BPE tables load lazily on first use (about 100 ms), never at cold start.
//!
//! The vocabulary is tiktoken-rs's, packed at build time by `build.rs` (raw token bytes in rank
//! order, deflated: 1 MB instead of the 3.6 MB of base64 text tiktoken-rs would embed).

use std::sync::LazyLock;

use rustc_hash::FxHashMap;
use tiktoken_rs::{CoreBPE, ENDOFPROMPT, ENDOFTEXT, O200K_BASE_PAT_STR, Rank};

use crate::domain::chat::Message;

static O200K_PACKED: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/o200k_base.deflate"));

static O200K: LazyLock<CoreBPE> = LazyLock::new(o200k_base);

#[allow(
    clippy::expect_used,
    reason = "the packed vocabulary is built and checked with the binary; it cannot be malformed at run time"
)]
fn o200k_base() -> CoreBPE {
    let packed = miniz_oxide::inflate::decompress_to_vec(O200K_PACKED)
        .expect("the packed vocabulary inflates");
    let mut encoder: FxHashMap<Vec<u8>, Rank> =
        FxHashMap::with_capacity_and_hasher(200_000, Default::default());
    let mut rest = packed.as_slice();
    let mut rank: Rank = 0;
    while let Some((&len, tail)) = rest.split_first() {
        let (token, tail) = tail.split_at(usize::from(len));
        encoder.insert(token.to_vec(), rank);
        rank += 1;
        rest = tail;
    }
    // The special tokens tiktoken's o200k_base defines, with its ranks.
    let special = FxHashMap::from_iter([
        (ENDOFTEXT.to_owned(), 199_999),
        (ENDOFPROMPT.to_owned(), 200_018),
    ]);
    CoreBPE::new(encoder, special, O200K_BASE_PAT_STR).expect("o200k_base's pattern compiles")
}

pub fn count_tokens(text: &str) -> usize {
    O200K.encode_ordinary(text).len()
}

/// Byte offsets where each token of `text` ends: `ends[i]` is the end of token `i`.
pub fn token_ends(text: &str) -> Vec<usize> {
    let bpe = &*O200K;
    let mut end = 0;
    bpe.encode_ordinary(text)
        .into_iter()
        .map(|t| {
            end += bpe.decode_bytes(&[t]).map_or(0, |b| b.len());
            end
        })
        .collect()
}

/// Long texts that repeat (tenant system prompts) are counted once and remembered: the count
/// is a pure function of the text, and tokenizing a 2,000-token prompt on every request would
/// dominate the gateway's own overhead.
const MEMO_MIN_BYTES: usize = 1024;
const MEMO_CAPACITY: usize = 1024;

pub fn count_tokens_memo(text: &str) -> usize {
    use std::collections::HashMap;
    use std::hash::{BuildHasher, RandomState};
    use std::sync::{Mutex, OnceLock};

    if text.len() < MEMO_MIN_BYTES {
        return count_tokens(text);
    }
    static MEMO: OnceLock<(RandomState, Mutex<HashMap<u64, usize>>)> = OnceLock::new();
    let (hasher, memo) = MEMO.get_or_init(|| (RandomState::new(), Mutex::new(HashMap::new())));
    // Keyed by a 64-bit hash plus the length: a collision would only misestimate a count.
    let key = hasher.hash_one(text) ^ (text.len() as u64).rotate_left(32);
    if let Some(&n) = memo.lock().ok().as_ref().and_then(|m| m.get(&key)) {
        return n;
    }
    let n = count_tokens(text);
    if let Ok(mut m) = memo.lock() {
        if m.len() >= MEMO_CAPACITY {
            m.clear();
        }
        m.insert(key, n);
    }
    n
}

/// Prompt tokens the way OpenAI counts a chat: each message costs its content plus a few
/// framing tokens, and every reply is primed with 3 more.
pub fn count_chat_tokens(system: Option<&str>, messages: &[Message]) -> usize {
    const PER_MESSAGE: usize = 3;
    const REPLY_PRIMING: usize = 3;
    let system = system.map_or(0, |s| count_tokens_memo(s) + PER_MESSAGE);
    let messages: usize = messages
        .iter()
        .map(|m| count_tokens(&m.content) + PER_MESSAGE + usize::from(m.name.is_some()))
        .sum();
    system + messages + REPLY_PRIMING
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::chat::Role;

    #[test]
    fn the_packed_vocabulary_encodes_exactly_as_tiktoken_rs() {
        let reference = tiktoken_rs::o200k_base_singleton();
        let texts = [
            "hello world",
            "Refunds within 30 days; see https://example.com/policy?id=42#terms.",
            "  leading spaces, trailing\n\n\ttabs\r\n and    runs   ",
            "Übergrößenträger naïve café — 東京の天気は晴れです。 Привет, мир! 🚀🔥👩‍💻",
            "fn main() { println!(\"{}\", 1_000_000u64 >> 3); }",
            "<|endoftext|> is only text to encode_ordinary",
            "0123456789 3.14159 -273.15 1e-9 0xDEADBEEF",
        ];
        for text in texts {
            assert_eq!(
                O200K.encode_ordinary(text),
                reference.encode_ordinary(text),
                "{text}"
            );
            assert_eq!(
                O200K.encode_with_special_tokens(text),
                reference.encode_with_special_tokens(text),
                "{text}"
            );
        }
        // Every rank decodes to the same bytes (a shifted rank would change token ids above).
        for rank in (0..199_998).step_by(97).chain([199_997, 199_999, 200_018]) {
            assert_eq!(
                O200K.decode_bytes(&[rank]).ok(),
                reference.decode_bytes(&[rank]).ok(),
                "rank {rank}"
            );
        }
    }

    #[test]
    fn counts_real_bpe_tokens_not_characters() {
        assert_eq!(count_tokens("hello world"), 2);
        assert_eq!(count_tokens(""), 0);
        // A long repeated word compresses far below chars/4.
        let text = "tokenization ".repeat(100);
        assert!(count_tokens(&text) < text.len() / 4);
    }

    #[test]
    fn memoized_counts_equal_fresh_counts() {
        let long = "A long system prompt about refunds. ".repeat(100);
        assert_eq!(count_tokens_memo(&long), count_tokens(&long));
        assert_eq!(count_tokens_memo(&long), count_tokens(&long));
        assert_eq!(count_tokens_memo("short"), 1);
    }

    #[test]
    fn chat_counts_include_message_framing() {
        let messages = vec![Message {
            role: Role::User,
            content: "hello world".into(),
            name: None,
        }];
        assert_eq!(count_chat_tokens(None, &messages), 2 + 3 + 3);
        assert_eq!(
            count_chat_tokens(Some("hello world"), &messages),
            2 + 3 + 2 + 3 + 3
        );
    }
}
