//! Splitting a document into overlapping chunks of at most `size` tokens.
//!
//! Tokens are the tokenizer's (o200k), so a chunk's size is what an embedding model and the
//! prompt will count. Chunk edges move to the nearest UTF-8 character boundary (a token can end
//! inside a multi-byte character), and then back to a preceding whitespace when one is close,
//! so words are not cut in half.

use crate::tokenizer::token_ends;

/// How to chunk a document: chunk size and overlap, in tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkSpec {
    /// Tokens per chunk.
    pub size: usize,
    /// Tokens shared by consecutive chunks.
    pub overlap: usize,
}

impl Default for ChunkSpec {
    fn default() -> Self {
        Self {
            size: 400,
            overlap: 60,
        }
    }
}

fn ceil_boundary(text: &str, mut i: usize) -> usize {
    while i < text.len() && !text.is_char_boundary(i) {
        i += 1;
    }
    i.min(text.len())
}

/// Moves a cut back to just after a whitespace within the last 40 bytes, if there is one.
fn soften(text: &str, cut: usize, floor: usize) -> usize {
    if cut >= text.len() {
        return text.len();
    }
    let window_start = ceil_boundary(text, cut.saturating_sub(40).max(floor));
    text[window_start..cut]
        .rfind(char::is_whitespace)
        .map(|i| ceil_boundary(text, window_start + i + 1))
        .filter(|&i| i > floor)
        .unwrap_or(cut)
}

/// The chunks of `text`, in order. Empty or whitespace-only text has none.
pub fn chunk_text(text: &str, spec: ChunkSpec) -> Vec<String> {
    if text.trim().is_empty() {
        return Vec::new();
    }
    let size = spec.size.max(1);
    let step = size.saturating_sub(spec.overlap).max(1);
    let ends = token_ends(text);
    let start_of = |token: usize| if token == 0 { 0 } else { ends[token - 1] };
    let mut chunks = Vec::new();
    let mut first = 0;
    while first < ends.len() {
        let last = (first + size).min(ends.len());
        let start = ceil_boundary(text, start_of(first));
        let raw_end = ceil_boundary(text, ends[last - 1]);
        let end = if last == ends.len() {
            text.len()
        } else {
            soften(text, raw_end, start)
        };
        let chunk = text[start..end].trim();
        if !chunk.is_empty() {
            chunks.push(chunk.to_owned());
        }
        if last == ends.len() {
            break;
        }
        first += step;
    }
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenizer::count_tokens;

    #[test]
    fn short_text_is_one_chunk_and_empty_text_none() {
        assert_eq!(
            chunk_text("Hello world.", ChunkSpec::default()),
            vec!["Hello world."]
        );
        assert!(chunk_text("  \n ", ChunkSpec::default()).is_empty());
    }

    #[test]
    fn chunks_respect_the_token_size_and_overlap() {
        let text = (0..600)
            .map(|i| format!("word{i}"))
            .collect::<Vec<_>>()
            .join(" ");
        let spec = ChunkSpec {
            size: 100,
            overlap: 20,
        };
        let chunks = chunk_text(&text, spec);
        assert!(chunks.len() > 5);
        for c in &chunks {
            assert!(count_tokens(c) <= 101, "{} tokens", count_tokens(c));
        }
        // Consecutive chunks share text (the overlap).
        let tail: String = chunks[0].split(' ').next_back().unwrap().to_owned();
        assert!(chunks[1].contains(&tail), "{tail}");
        // Every word of the document is in some chunk.
        for i in [0, 299, 599] {
            assert!(
                chunks
                    .iter()
                    .any(|c| c.split(' ').any(|w| w == format!("word{i}"))),
                "word{i}"
            );
        }
    }

    #[test]
    fn a_mebibyte_single_word_document_chunks_back_into_the_original_text() {
        // The largest document ingest accepts, as one run of random letters: the tokenizer cuts
        // it into bounded slices, and the chunks still tile it exactly.
        let mut state: u64 = 7;
        let text: String = (0..1 << 20)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                char::from(b'a' + (state % 26) as u8)
            })
            .collect();
        let chunks = chunk_text(&text, ChunkSpec::default());
        // About 544,000 tokens in steps of 340.
        assert!((1_500..1_700).contains(&chunks.len()), "{}", chunks.len());
        let mut rebuilt = String::new();
        let mut start = 0;
        for chunk in &chunks {
            start += text[start..].find(chunk.as_str()).unwrap();
            assert!(start <= rebuilt.len(), "a gap before byte {start}");
            assert!(
                start + chunk.len() > rebuilt.len(),
                "no new text at byte {start}"
            );
            rebuilt.push_str(&chunk[rebuilt.len() - start..]);
        }
        assert_eq!(rebuilt, text);
    }

    #[test]
    fn multibyte_text_is_never_cut_inside_a_character() {
        let text = "Grüße aus Köln! 東京の天気は晴れです。🌍🌍🌍 ".repeat(200);
        for c in chunk_text(
            &text,
            ChunkSpec {
                size: 37,
                overlap: 5,
            },
        ) {
            assert!(!c.contains('\u{FFFD}'));
        }
    }
}
