//! The o200k_base byte-pair encoder: vocabulary, pre-tokenizer and merge.
//!
//! It encodes exactly as tiktoken-rs 0.12.1's `CoreBPE::encode_ordinary` (tiktoken-rs stays the
//! reference in the tests and the source of the vocabulary in `build.rs`), at a fraction of the
//! cost, which matters because every chat request is counted before its reservation:
//! - pieces are found by regex-automata's lazy DFA instead of fancy-regex's backtracking VM,
//!   one anchored forward scan per piece (pieces tile the text, so each starts where the last
//!   ended). The o200k pattern's one look-around (`\s+(?!\S)`) is the only thing the DFA
//!   cannot do, and it is applied by hand after the match (see [`Bpe::pieces`]);
//! - the vocabulary is an Fx hash map keyed by slices of one buffer, not SipHash over one heap
//!   allocation per token;
//! - counting walks the pieces without collecting token ids.
//!
//! The merge is tiktoken's (MIT licence): a linear scan for pieces under 100 bytes and a heap
//! above, both merging the lowest-ranked adjacent pair first, the leftmost on ties.

use std::collections::BinaryHeap;

use regex_automata::meta::Regex;
use regex_automata::{Anchored, Input};
use rustc_hash::FxHashMap;

/// A token id.
pub(super) type Rank = u32;

/// o200k_base's pre-tokenizer pattern (tiktoken's `O200K_BASE_PAT_STR`) without its
/// `\s+(?!\S)` alternative, which a DFA cannot express. Its last alternative,
/// `\s+`, stands for both `\s+(?!\S)` and `\s+`; [`Bpe::pieces`] tells them apart.
const PIECES: &str = concat!(
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    "|",
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    "|",
    r"\p{N}{1,3}",
    "|",
    r" ?[^\s\p{L}\p{N}]+[\r\n/]*",
    "|",
    r"\s*[\r\n]+",
    "|",
    r"\s+",
);

/// Pieces at least this long are merged with the heap (tiktoken's threshold).
const LARGE_PIECE: usize = 100;

/// The encoder: ranks by token bytes, token bytes by rank, and the piece pattern.
pub(super) struct Bpe {
    ranks: FxHashMap<&'static [u8], Rank>,
    tokens: Vec<&'static [u8]>,
    pieces: Regex,
}

impl Bpe {
    /// The encoder over `vocabulary`: each token's bytes, length-prefixed, in rank order (the
    /// format `build.rs` packs).
    ///
    /// The vocabulary lives as long as the process (the encoder is a lazy static), so it is
    /// leaked on purpose: the maps then borrow it instead of copying 200,000 tokens.
    ///
    /// # Panics
    /// If the pattern does not compile, which a test rules out.
    #[allow(
        clippy::expect_used,
        reason = "a constant pattern; `the_encoder_builds` compiles it in every test run"
    )]
    pub(super) fn new(vocabulary: Vec<u8>) -> Self {
        let vocabulary: &'static [u8] = Box::leak(vocabulary.into_boxed_slice());
        let mut tokens = Vec::with_capacity(200_000);
        let mut rest = vocabulary;
        while let Some((&len, tail)) = rest.split_first() {
            let (token, tail) = tail.split_at(usize::from(len).min(tail.len()));
            tokens.push(token);
            rest = tail;
        }
        let mut ranks = FxHashMap::with_capacity_and_hasher(tokens.len(), Default::default());
        for (rank, token) in (0..).zip(&tokens) {
            ranks.insert(*token, rank);
        }
        let pieces = Regex::new(PIECES).expect("the o200k piece pattern compiles");
        Self {
            ranks,
            tokens,
            pieces,
        }
    }

    /// The bytes of token `rank`, if it is one.
    pub(super) fn token(&self, rank: Rank) -> Option<&'static [u8]> {
        self.tokens.get(rank as usize).copied()
    }

    /// Appends the tokens of `text` to `out`.
    pub(super) fn encode_into(&self, text: &str, out: &mut Vec<Rank>) {
        for piece in self.pieces(text) {
            let piece = piece.as_bytes();
            match self.ranks.get(piece) {
                Some(&rank) => out.push(rank),
                None => self.merge(piece, |rank| out.push(rank)),
            }
        }
    }

    /// How many tokens `text` encodes to.
    pub(super) fn count(&self, text: &str) -> usize {
        let mut n = 0;
        for piece in self.pieces(text) {
            let piece = piece.as_bytes();
            if self.ranks.contains_key(piece) {
                n += 1;
            } else {
                self.merge(piece, |_| n += 1);
            }
        }
        n
    }

    /// The pieces of `text` as the o200k pattern splits it.
    ///
    /// [`PIECES`] matches a whitespace run that is followed by more text whole; the full
    /// pattern's `\s+(?!\S)` gives such a run's last character to the next piece (that is how
    /// " word" gets its space). So a match of the `\s+` alternative of two or more characters
    /// that does not end the text is cut before its last character, and matching resumes there.
    /// The `\s+` alternative is recognised by its last character: whitespace other than `\r` and
    /// `\n`, which no other alternative ends with (`\s*[\r\n]+` is tried first and takes every
    /// run with a line break in it).
    pub(super) fn pieces<'t>(&self, text: &'t str) -> impl Iterator<Item = &'t str> + use<'_, 't> {
        let mut at = 0;
        std::iter::from_fn(move || {
            let (start, mut end) = self.next_piece(text, at)?;
            if end < text.len()
                && let Some(last) = text[start..end].chars().next_back()
                && last.is_whitespace()
                && !matches!(last, '\r' | '\n')
                && end - start > last.len_utf8()
            {
                end -= last.len_utf8();
            }
            at = end;
            Some(&text[start..end])
        })
    }

    /// The span of the first match of [`PIECES`] in `text` from `at`.
    ///
    /// Every character starts some alternative (letters, numbers, whitespace, and everything
    /// else in ` ?[^\s\p{L}\p{N}]+`), so the match starts at `at` and an anchored search,
    /// which needs no reverse scan to find the start, finds it. The unanchored search is kept
    /// for the case that reasoning is wrong: tiktoken skips text no alternative matches.
    fn next_piece(&self, text: &str, at: usize) -> Option<(usize, usize)> {
        if at >= text.len() {
            return None;
        }
        let input = Input::new(text).range(at..);
        match self
            .pieces
            .search_half(&input.clone().anchored(Anchored::Yes))
        {
            Some(end) if end.offset() > at => Some((at, end.offset())),
            _ => self.pieces.search(&input).map(|m| (m.start(), m.end())),
        }
    }

    /// Byte-pair merges `piece` (not itself a token) and hands each resulting token to `emit`.
    fn merge(&self, piece: &[u8], mut emit: impl FnMut(Rank)) {
        match piece.len() {
            0 => {}
            1 => emit(self.rank(piece)),
            n if n < LARGE_PIECE => {
                let parts = self.merge_small(piece);
                for pair in parts.windows(2) {
                    emit(self.rank(&piece[pair[0].0..pair[1].0]));
                }
            }
            _ => self.merge_large(piece, emit),
        }
    }

    /// The rank of `bytes`, `Rank::MAX` if they are not a token (a pair that cannot merge).
    /// Every single byte is a token, and merged parts are tokens by construction.
    fn rank(&self, bytes: &[u8]) -> Rank {
        self.ranks.get(bytes).copied().unwrap_or(Rank::MAX)
    }

    /// tiktoken's `_byte_pair_merge`: `(start, rank of the pair starting there)` for each part
    /// left, plus the end. O(parts × merges), the fastest for short pieces.
    fn merge_small(&self, piece: &[u8]) -> Vec<(usize, Rank)> {
        let mut parts = Vec::with_capacity(piece.len() + 1);
        let mut min_rank: (Rank, usize) = (Rank::MAX, usize::MAX);
        for i in 0..piece.len() - 1 {
            let rank = self.rank(&piece[i..i + 2]);
            if rank < min_rank.0 {
                min_rank = (rank, i);
            }
            parts.push((i, rank));
        }
        parts.push((piece.len() - 1, Rank::MAX));
        parts.push((piece.len(), Rank::MAX));

        // The rank of parts[i] merged with parts[i + 1], read before parts[i + 1] is removed
        // (hence i + 3).
        let rank_after = |parts: &[(usize, Rank)], i: usize| {
            if i + 3 < parts.len() {
                self.rank(&piece[parts[i].0..parts[i + 3].0])
            } else {
                Rank::MAX
            }
        };
        while min_rank.0 != Rank::MAX {
            let i = min_rank.1;
            if i > 0 {
                parts[i - 1].1 = rank_after(&parts, i - 1);
            }
            parts[i].1 = rank_after(&parts, i);
            parts.remove(i + 1);
            min_rank = (Rank::MAX, usize::MAX);
            for (i, &(_, rank)) in parts[..parts.len() - 1].iter().enumerate() {
                if rank < min_rank.0 {
                    min_rank = (rank, i);
                }
            }
        }
        parts
    }

    /// tiktoken's `_byte_pair_merge_large`: the same merges in O(n log n) with a heap of
    /// candidate pairs and a linked list of parts.
    fn merge_large(&self, piece: &[u8], mut emit: impl FnMut(Rank)) {
        let mut state = Vec::with_capacity(piece.len());
        state.push(Part {
            prev: usize::MAX,
            end: 1,
            next_end: 2,
            next_rank: Rank::MAX,
            cur_rank: Rank::MAX,
        });
        let mut heap = BinaryHeap::with_capacity(piece.len());
        for i in 0..piece.len() - 1 {
            if let Some(&rank) = self.ranks.get(&piece[i..i + 2]) {
                heap.push(Merge { start: i, rank });
                state[i].next_rank = rank;
            }
            // One part per byte; part i + 1 is pushed while looking at pair i.
            state.push(Part {
                prev: i,
                end: i + 2,
                next_end: i + 3,
                next_rank: Rank::MAX,
                cur_rank: Rank::MAX,
            });
        }

        // Records the merge of the part at `start` with the part ending at `next_end`, if
        // that is a token, replacing the part's previous candidate.
        let candidate =
            |state: &mut [Part], heap: &mut BinaryHeap<Merge>, start: usize, next_end: usize| {
                state[start].next_end = next_end;
                state[start].next_rank = Rank::MAX;
                if next_end <= piece.len()
                    && let Some(&rank) = self.ranks.get(&piece[start..next_end])
                {
                    heap.push(Merge { start, rank });
                    state[start].next_rank = rank;
                }
            };

        while let Some(left) = heap.pop() {
            if left.rank == Rank::MAX {
                break;
            }
            if left.rank != state[left.start].next_rank {
                continue; // invalidated by an earlier merge
            }
            let left_start = left.start;
            let right_start = state[left_start].end;
            let right_end = state[left_start].next_end;
            let right_next_end = state[right_start].next_end;

            state[left_start].cur_rank = state[left_start].next_rank;
            state[left_start].end = right_end;
            candidate(&mut state, &mut heap, left_start, right_next_end);
            if right_end < state.len() {
                state[right_end].prev = left_start;
            }
            if left_start > 0 {
                let prev_start = state[left_start].prev;
                candidate(&mut state, &mut heap, prev_start, right_end);
            }
            state[right_start].next_rank = Rank::MAX;
        }

        let mut i = 0;
        while i < state.len() {
            emit(if state[i].cur_rank == Rank::MAX {
                self.rank(&piece[i..state[i].end])
            } else {
                state[i].cur_rank
            });
            i = state[i].end;
        }
    }
}

/// A candidate merge for [`Bpe::merge_large`]'s heap: the lowest rank first, then the
/// leftmost.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Merge {
    start: usize,
    rank: Rank,
}

impl Ord for Merge {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        other
            .rank
            .cmp(&self.rank)
            .then_with(|| other.start.cmp(&self.start))
    }
}

impl PartialOrd for Merge {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// One part of a piece during [`Bpe::merge_large`], indexed by its start byte.
struct Part {
    prev: usize,
    end: usize,
    next_end: usize,
    next_rank: Rank,
    cur_rank: Rank,
}
