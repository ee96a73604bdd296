//! Token counting with a real BPE (tiktoken's `o200k_base`, the GPT-4o/GPT-5 vocabulary).
//!
//! Used by the simulated provider (its usage numbers must look like a real provider's) and for
//! estimates (Anthropic's cacheable-prompt threshold). Anthropic's tokenizer differs, so counts
//! for Claude models are estimates; the authoritative numbers always come from the provider's
//! usage fields. The BPE tables load lazily on first use (about 100 ms), never at cold start.
//!
//! The vocabulary is tiktoken-rs's, packed at build time by `build.rs` (raw token bytes in rank
//! order, deflated: 1 MB instead of the 3.6 MB of base64 text tiktoken-rs would embed). The
//! encoder is our own ([`bpe`]): it encodes exactly as tiktoken-rs, which the tests check on
//! fixed texts and 20,000 random strings, several times faster.
//!
//! Every entry point hands the encoder the text in slices that hold no run longer than 512 bytes
//! (see `segments`): a request or document made of one long run would otherwise cost far more
//! than its size suggests, or crash the tokenizer. Ordinary text is one slice, unchanged.

use std::sync::LazyLock;

use crate::domain::chat::Message;
use crate::domain::tools::{ToolCall, Tools};

mod bpe;

use bpe::{Bpe, Rank};

static O200K_PACKED: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/o200k_base.deflate"));

static O200K: LazyLock<Bpe> = LazyLock::new(o200k_base);

#[allow(
    clippy::expect_used,
    reason = "the packed vocabulary is built and checked with the binary; it cannot be malformed at run time"
)]
fn o200k_base() -> Bpe {
    let packed = miniz_oxide::inflate::decompress_to_vec(O200K_PACKED)
        .expect("the packed vocabulary inflates");
    Bpe::new(packed)
}

/// Tokens in `text` by o200k_base, special tokens counted as plain text (long runs are cut
/// first; see the module docs).
pub fn count_tokens(text: &str) -> usize {
    let bpe = &*O200K;
    segments(text).map(|segment| bpe.count(segment)).sum()
}

/// Byte offsets where each token of `text` ends: `ends[i]` is the end of token `i`.
pub fn token_ends(text: &str) -> Vec<usize> {
    let bpe = &*O200K;
    let mut end = 0;
    encode(text)
        .into_iter()
        .map(|t| {
            end += bpe.token(t).map_or(0, <[u8]>::len);
            end
        })
        .collect()
}

/// The tokens of `text`, special-token text included as ordinary text. They decode back to
/// `text` byte for byte: each segment is whole characters and decodes to itself.
fn encode(text: &str) -> Vec<Rank> {
    let bpe = &*O200K;
    let mut tokens = Vec::new();
    for segment in segments(text) {
        bpe.encode_into(segment, &mut tokens);
    }
    tokens
}

/// Longest run, in bytes, that the encoder is handed whole (see [`segments`]).
///
/// 512 bytes is 512 ASCII characters or about 170 CJK ones: longer than the URLs, identifiers,
/// hashes and sentences of ordinary text (and a longer run is still cut exactly where it has a
/// piece boundary), yet small enough that a piece costs microseconds whatever merge algorithm
/// the BPE uses (1 KiB pieces at most, see [`next_cut`]).
const MAX_RUN_BYTES: usize = 512;

/// `text` as the consecutive slices the encoder encodes one at a time.
///
/// tiktoken splits text with a regex into pieces and byte-pair merges each piece; the o200k
/// pattern leaves runs of letters, of punctuation and of whitespace unbounded, so one long run
/// is one piece. Such a piece is expensive: tiktoken's merge used to be quadratic in the piece's
/// length (openai/tiktoken#195: 512 KiB of "x" took 119 s), and the heap-based merge tiktoken-rs
/// 0.12.1 uses for pieces of 100 bytes or more still spends 0.6 to 2.9 s on 1 MiB of one run,
/// against 60 ms for 1 MiB of prose (release build, shared 2-core dev machine). Worse, from
/// about 1,000,000 spaces the regex overflows fancy-regex's backtracking stack, and tiktoken-rs
/// unwraps that: a panic. Chat bodies go up to 4 MiB and documents to 1 MiB, so any tenant
/// could send either.
///
/// Text without runs longer than [`MAX_RUN_BYTES`] is one slice, tokenized exactly as
/// tiktoken-rs would. A longer run is cut at a character boundary, where tiktoken ends a piece
/// anyway if the run has such a place (changing nothing), otherwise every [`MAX_RUN_BYTES`];
/// 1 MiB of one run then takes 0.05 to 0.25 s. A cut inside a piece makes the count close to
/// tiktoken's, not equal. Measured against plain tiktoken-rs 0.12.1 on 1 MiB samples:
/// - identical: "x", "X", "_", "\n", "/\n", "東", "🚀", "a\u{301}" and digits repeated, CJK
///   prose without spaces (cut only where pieces end), minified JSON (its digits end its runs),
///   and 900 KB of spaces (7,032 tokens; tiktoken panics on 1 MiB of them);
/// - random lowercase letters: 544,028 tokens instead of 543,687 (+0.06%); random mixed-case
///   letters: 640,008 instead of 639,595 (+0.06%); "Hello" repeated: 211,353 instead of
///   209,715 (+0.8%, a cut splits a "Hello" every 512 bytes).
///
/// Every difference measured is upwards, but none is guaranteed either way: BPE merges greedily,
/// not optimally, so splitting a piece can also save a token.
fn segments(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let (segment, tail) = rest.split_at(next_cut(rest).unwrap_or(rest.len()));
        rest = tail;
        Some(segment)
    })
}

/// Where the first slice of `text` ends, if a run in it is too long.
///
/// A piece of the o200k pattern is at most 3 digits; or one character, then a run of letters
/// and punctuation (`[^\r\n\p{L}\p{N}]?\p{L}+'s`, ` ?[^\s\p{L}\p{N}]+`: whitespace and digits
/// end both), then a run of `[\r\n/]` (the tail of a punctuation piece, which makes
/// `"/\n" * n` one piece); or a run of whitespace. Bounding those three runs bounds every
/// piece, and the regex's backtracking with it. Runs are counted from the start of the slice:
/// tiktoken sees no further back either.
fn next_cut(text: &str) -> Option<usize> {
    let mut space = 0;
    let mut solid = 0;
    let mut slashes = 0;
    for (i, c) in text.char_indices() {
        let n = c.len_utf8();
        (space, solid) = if c.is_whitespace() {
            (space + n, 0)
        } else if c.is_numeric() {
            (0, 0)
        } else {
            (0, solid + n)
        };
        slashes = if matches!(c, '\r' | '\n' | '/') {
            slashes + n
        } else {
            0
        };
        if solid > MAX_RUN_BYTES {
            let run_start = i + n - solid;
            let cut = last_piece_boundary(&text[run_start..i + n]).map_or(i, |b| run_start + b);
            return Some(cut);
        }
        if space > MAX_RUN_BYTES || slashes > MAX_RUN_BYTES {
            return Some(i);
        }
    }
    None
}

/// The last offset inside `run` (letters and punctuation) where tiktoken certainly starts a
/// new piece: after a letter followed by punctuation or a symbol other than `'`, where a letter
/// piece ends.
///
/// Cutting there changes no token: the pattern looks behind nothing, and its only look-ahead
/// (`\s+(?!\S)`) cannot reach across the letter. Letters and punctuation are told apart only
/// in scripts without combining marks (see [`without_marks`]); elsewhere the run is cut at the
/// bound.
fn last_piece_boundary(run: &str) -> Option<usize> {
    let mut chars = run.char_indices().rev();
    let (_, mut after) = chars.next()?;
    for (i, before) in chars {
        if after != '\''
            && before.is_alphabetic()
            && !after.is_alphabetic()
            && without_marks(before)
            && without_marks(after)
        {
            return Some(i + before.len_utf8());
        }
        after = before;
    }
    None
}

/// Whether `c` is in a block where an alphabetic character is a letter (`\p{L}`) and no
/// character is a combining mark (`\p{M}`, which joins both letter and punctuation pieces):
/// Latin, Greek, Cyrillic, Armenian, Hebrew and Arabic letters, general punctuation and
/// symbols, CJK, kana, Hangul and fullwidth forms. Checked against the Unicode database with
/// Perl's `\p{M}`, `\p{Alphabetic}` and `\p{L}` (the alphabetic numbers there, `Ⅻ` and `〇`,
/// never reach this: runs stop at digits).
fn without_marks(c: char) -> bool {
    matches!(c,
        '\u{0000}'..='\u{02FF}'
        | '\u{0370}'..='\u{0482}'
        | '\u{048A}'..='\u{052F}'
        | '\u{0531}'..='\u{058A}'
        | '\u{05D0}'..='\u{05F4}'
        | '\u{0620}'..='\u{064A}'
        | '\u{1E00}'..='\u{1FFF}'
        | '\u{2000}'..='\u{20CF}'
        | '\u{2100}'..='\u{24B5}'
        | '\u{24EA}'..='\u{2BFF}'
        | '\u{3000}'..='\u{3029}'
        | '\u{3030}'..='\u{3098}'
        | '\u{309B}'..='\u{30FF}'
        | '\u{3400}'..='\u{4DBF}'
        | '\u{4E00}'..='\u{9FFF}'
        | '\u{AC00}'..='\u{D7A3}'
        | '\u{FF00}'..='\u{FFEF}')
}

/// Long texts that repeat (tenant system prompts) are counted once and remembered: the count
/// is a pure function of the text, and tokenizing a 2,000-token prompt on every request would
/// dominate the gateway's own overhead.
const MEMO_MIN_BYTES: usize = 1024;
const MEMO_CAPACITY: usize = 1024;

/// [`count_tokens`], remembered for texts of 1 KiB or more (tenant system prompts).
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
        .map(|m| {
            count_tokens(&m.content)
                + PER_MESSAGE
                + usize::from(m.name.is_some())
                + m.tool_calls.iter().map(count_call).sum::<usize>()
                + m.tool_call_id.as_deref().map_or(0, count_tokens)
        })
        .sum();
    system + messages + REPLY_PRIMING
}

/// A tool call as the model wrote it: its id, name and arguments, and a little framing.
fn count_call(call: &ToolCall) -> usize {
    const PER_CALL: usize = 3;
    count_tokens(&call.id) + count_tokens(&call.name) + count_tokens(&call.arguments) + PER_CALL
}

/// What a request's tool definitions add to its prompt, counted as the JSON the client sent.
/// Providers render tools into the prompt in their own, terser form (OpenAI as TypeScript
/// declarations, Anthropic as its tool-use system prompt plus a fixed preamble), so this is an
/// estimate for reservations, not the provider's figure. Definitions repeat on every turn of a
/// tool loop, so their text is memoized.
pub fn count_tools_tokens(tools: &Tools) -> usize {
    /// Anthropic's tool-use system prompt (its docs: 159 to 346 tokens, by model and choice).
    const PREAMBLE: usize = 346;
    if tools.is_empty() {
        return 0;
    }
    let json = serde_json::to_string(&tools.wire_tools()).unwrap_or_default();
    count_tokens_memo(&json) + PREAMBLE
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::chat::Role;

    /// tiktoken-rs's own o200k_base, the reference this encoder must equal.
    fn reference() -> &'static tiktoken_rs::CoreBPE {
        tiktoken_rs::o200k_base_singleton()
    }

    /// The bytes `tokens` decode to.
    fn decode(tokens: &[Rank]) -> Vec<u8> {
        tokens
            .iter()
            .flat_map(|&t| O200K.token(t).expect("a token this encoder produced"))
            .copied()
            .collect()
    }

    #[test]
    fn the_packed_vocabulary_encodes_exactly_as_tiktoken_rs() {
        let texts = [
            "hello world",
            "Refunds within 30 days; see https://example.com/policy?id=42#terms.",
            "  leading spaces, trailing\n\n\ttabs\r\n and    runs   ",
            "Übergrößenträger naïve café — 東京の天気は晴れです。 Привет, мир! 🚀🔥👩‍💻",
            "fn main() { println!(\"{}\", 1_000_000u64 >> 3); }",
            "<|endoftext|> is only text to encode_ordinary",
            "0123456789 3.14159 -273.15 1e-9 0xDEADBEEF",
            "I'm sure they'LL say it's John's, we've, you'd, THEY'RE  ",
            " \u{a0}\u{3000}x  \t\n \r\n\r\n  y ",
        ];
        for text in texts {
            let mut tokens = Vec::new();
            O200K.encode_into(text, &mut tokens);
            assert_eq!(tokens, reference().encode_ordinary(text), "{text:?}");
            assert_eq!(O200K.count(text), tokens.len(), "{text:?}");
        }
        // Every rank decodes to the same bytes (a shifted rank would change token ids above).
        for rank in (0..199_998).step_by(97).chain([199_997]) {
            assert_eq!(
                O200K.token(rank),
                reference().decode_bytes(&[rank]).ok().as_deref(),
                "rank {rank}"
            );
        }
        assert_eq!(O200K.token(199_998), None);
    }

    /// Characters where the o200k pattern's alternatives meet: each letter category, marks
    /// (which are both letters and punctuation to the pattern), numbers of each kind, every
    /// kind of whitespace, the contraction letters and apostrophes, punctuation that takes a
    /// leading space, and the `[\r\n/]` tail.
    const TRICKY: &[char] = &[
        ' ', ' ', ' ', '\t', '\n', '\r', '\u{a0}', '\u{3000}', '\u{2028}', '\u{b}', 'a', 'e', 'Z',
        'Q', 's', 'S', 't', 'l', 'L', 'd', 'm', 'r', 'v', '\'', '\'', '\u{2019}', 'ǅ', 'ʰ', '東',
        'の', '\u{301}', '\u{903}', '\u{20dd}', '5', '0', '٣', 'Ⅻ', '½', '.', ',', '/', '/', '!',
        '-', '_', '"', '{', '🚀', '\u{200d}', 'é', 'ß', 'П', 'и', 'Σ', 'ς', 'ا', 'न', '\u{93e}',
    ];

    /// `n` strings of 0 to 40 characters drawn from [`TRICKY`] by a fixed xorshift sequence.
    fn tricky_strings(n: usize) -> Vec<String> {
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        (0..n)
            .map(|_| {
                let len = next() % 41;
                (0..len)
                    .map(|_| TRICKY[(next() % TRICKY.len() as u64) as usize])
                    .collect()
            })
            .collect()
    }

    #[test]
    fn random_strings_of_the_patterns_edge_characters_encode_exactly_as_tiktoken_rs() {
        for text in tricky_strings(20_000) {
            // The pieces tile the text: every character starts a piece where the last ended.
            assert_eq!(O200K.pieces(&text).collect::<String>(), text);
            let mut tokens = Vec::new();
            O200K.encode_into(&text, &mut tokens);
            assert_eq!(tokens, reference().encode_ordinary(&text), "{text:?}");
            assert_eq!(O200K.count(&text), tokens.len(), "{text:?}");
        }
    }

    #[test]
    fn pieces_of_100_bytes_and_more_merge_exactly_as_tiktoken_rs() {
        // Not tokens themselves, so they go through the heap merge.
        let texts = [
            random_letters(99),
            random_letters(100),
            random_letters(511),
            "aé".repeat(200),
            "_-".repeat(150),
            format!(" {}", "\u{93e}_".repeat(60)),
        ];
        for text in &texts {
            let mut tokens = Vec::new();
            O200K.encode_into(text, &mut tokens);
            assert_eq!(tokens, reference().encode_ordinary(text), "{text:?}");
            assert_eq!(O200K.count(text), tokens.len(), "{text:?}");
        }
    }

    /// Lowercase ASCII letters from a fixed xorshift sequence: the references below were
    /// measured on exactly these bytes.
    fn random_letters(len: usize) -> String {
        let mut state: u64 = 42;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                char::from(b'a' + (state % 26) as u8)
            })
            .collect()
    }

    /// Encodes `text`, checks the tokens decode back to it byte for byte, and counts them.
    fn decoded_count(text: &str) -> usize {
        let tokens = encode(text);
        assert_eq!(decode(&tokens), text.as_bytes());
        tokens.len()
    }

    /// Every entry point agrees on `text`, and its tokens decode back to it.
    fn assert_round_trip(text: &str) {
        let n = decoded_count(text);
        assert_eq!(count_tokens(text), n);
        let ends = token_ends(text);
        assert_eq!(ends.len(), n);
        assert_eq!(ends.last().copied().unwrap_or(0), text.len());
    }

    /// `actual` within 1% of `reference`.
    fn assert_close(actual: usize, reference: usize) {
        let tolerance = reference / 100;
        assert!(
            actual.abs_diff(reference) <= tolerance,
            "{actual} tokens, expected {reference} ± {tolerance}"
        );
    }

    #[test]
    fn ordinary_multilingual_and_code_text_tokenizes_exactly_as_tiktoken_rs() {
        let reference = reference();
        let paragraph = "東京の天気は晴れです。明日は雨が降るでしょう、傘を持って行ってください。";
        let texts = [
            "Refunds are issued within 30 days of purchase. Contact support@example.com \
             or call +1 (555) 010-0199; see https://example.com/policy?id=42&lang=en#terms."
                .to_owned(),
            "Übergrößenträger und naïve Cafés in Köln. Привет, мир! Γειά σου Κόσμε. \
             שלום עולם. مرحبا بالعالم. नमस्ते दुनिया। สวัสดีชาวโลก 안녕하세요 세계 🚀🔥👩‍💻"
                .repeat(20),
            "fn main() {\n    let v: Vec<u64> = (0..10).map(|x| x * x).collect();\n    \
             println!(\"{v:?}\");\n}\n\n\tif (a && b || !c) { return -1; }\r\n"
                .repeat(20),
            // Runs over the bound that have places where tiktoken ends a piece anyway: cut
            // there, they tokenize exactly as whole.
            paragraph.repeat(40),
            format!(
                "https://example.com/{}",
                "docs/refunds-and-returns/".repeat(60)
            ),
            "{\"tenant\":\"acme\",\"tags\":[\"a\",\"b\"],\"note\":\"ok\"},".repeat(40),
            format!("{} done", "=".repeat(80)),
        ];
        assert!(segments(&texts[3]).count() > 1, "the CJK paragraph is cut");
        for text in &texts {
            let expected = reference.encode_ordinary(text);
            assert_eq!(encode(text), expected, "{text}");
            assert_eq!(count_tokens(text), expected.len(), "{text}");
            assert_round_trip(text);
        }
    }

    #[test]
    fn runs_up_to_the_bound_are_whole_and_longer_runs_are_cut_at_it() {
        let reference = reference();
        // (unit, text before the run, text after it): the context ends the run.
        let cases = [
            ("x", "head ", " tail"),
            ("_", "head ", " tail"),
            (" ", "head", "tail"),
            ("\n", "head", "tail"),
            ("/\n", "head ", " tail"),
            ("7", "head ", " tail"),
        ];
        for (unit, before, after) in cases {
            let units = MAX_RUN_BYTES / unit.len();
            let at_bound = format!("{before}{}{after}", unit.repeat(units));
            assert_eq!(segments(&at_bound).count(), 1, "{unit:?}");
            assert_eq!(
                encode(&at_bound),
                reference.encode_ordinary(&at_bound),
                "{unit:?}"
            );

            let over = format!("{before}{}{after}", unit.repeat(units + 1));
            // Digits are never cut: the pattern already caps their pieces at 3.
            let expected_segments = if unit == "7" { 1 } else { 2 };
            assert_eq!(segments(&over).count(), expected_segments, "{unit:?}");
            assert_eq!(segments(&over).collect::<String>(), over);
            assert_round_trip(&over);
            let exact = reference.encode_ordinary(&over).len();
            assert!(count_tokens(&over).abs_diff(exact) <= 2, "{unit:?}");
        }
        // A run of 3-byte characters is cut at the character boundary before the bound.
        let kanji = "東".repeat(MAX_RUN_BYTES / 3 + 1);
        let cut: Vec<_> = segments(&kanji).collect();
        assert_eq!(cut.len(), 2);
        assert_eq!(cut[0].len(), MAX_RUN_BYTES / 3 * 3);
        assert_round_trip(&kanji);
    }

    #[test]
    fn long_runs_of_every_kind_are_handed_to_tiktoken_in_bounded_slices() {
        let texts = [
            "x".repeat(20_000),
            "_".repeat(20_000),
            " ".repeat(20_000),
            "\t".repeat(20_000),
            "\n".repeat(20_000),
            "/\n".repeat(10_000),
            "東".repeat(7_000),
            "🚀".repeat(5_000),
            "Hello".repeat(4_000),
            random_letters(20_000),
            // Letters with combining accents, and punctuation with vowel signs: one piece each.
            "a\u{301}".repeat(7_000),
            format!("__{}", "\u{93e}_".repeat(5_000)),
        ];
        for text in &texts {
            let slices: Vec<_> = segments(text).collect();
            let longest = slices.iter().map(|s| s.len()).max().unwrap_or(0);
            assert!(
                longest <= MAX_RUN_BYTES,
                "{longest} bytes: {:?}",
                &text[..8]
            );
            assert_eq!(slices.concat(), *text);
            assert_round_trip(text);
        }
    }

    // A mebibyte of one run (the largest document ingest accepts). Before the cut, these took
    // 0.6 to 2.9 s each in a release build, and the spaces panicked. These check the counts;
    // the time is measured by `cargo bench -p tollgate-tests --bench hot_path -- tokenizer`.
    // References: plain tiktoken-rs 0.12.1 on the same bytes.

    #[test]
    fn a_mebibyte_of_one_letter_counts_as_tiktoken_does() {
        let text = "x".repeat(1 << 20);
        let count = count_tokens(&text);
        assert_close(count, 131_072);
        assert_eq!(decoded_count(&text), count);
    }

    #[test]
    fn a_mebibyte_of_underscores_counts_as_tiktoken_does() {
        let text = "_".repeat(1 << 20);
        let count = count_tokens(&text);
        assert_close(count, 16_384);
        assert_eq!(decoded_count(&text), count);
    }

    #[test]
    fn a_mebibyte_of_random_letters_counts_close_to_tiktoken() {
        let text = random_letters(1 << 20);
        let count = count_tokens(&text);
        assert_close(count, 543_687);
        assert_eq!(decoded_count(&text), count);
    }

    #[test]
    fn a_mebibyte_of_spaces_counts_without_crashing_the_tokenizer() {
        // tiktoken-rs panics on this; 128 spaces are one token.
        let text = " ".repeat(1 << 20);
        let count = count_tokens(&text);
        assert_close(count, (1 << 20) / 128);
        assert_eq!(decoded_count(&text), count);
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
        let messages = vec![Message::new(Role::User, "hello world")];
        assert_eq!(count_chat_tokens(None, &messages), 2 + 3 + 3);
        assert_eq!(
            count_chat_tokens(Some("hello world"), &messages),
            2 + 3 + 2 + 3 + 3
        );
    }
}
