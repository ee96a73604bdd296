//! Packs tiktoken's `o200k_base` vocabulary for `src/tokenizer.rs`.
//!
//! tiktoken-rs embeds the vocabulary as 3.6 MB of base64 text, one `token rank` line per token,
//! in every binary that calls its `o200k_base()`. The ranks are the line numbers, so here each
//! token becomes its raw bytes, length-prefixed in rank order (1.6 MB), then deflated (about
//! 1 MB): the Lambda bootstraps carry 2.6 MB less. The source of truth stays tiktoken-rs's
//! copy, read through its own decoder; `tokenizer::tests` checks both encode alike.

#![allow(
    clippy::expect_used,
    reason = "a build script reports a broken invariant by failing the build"
)]

use std::path::PathBuf;

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    let bpe = tiktoken_rs::o200k_base().expect("tiktoken-rs builds o200k_base");
    let mut packed = Vec::with_capacity(1 << 21);
    let mut ranks: u32 = 0;
    // Ordinary ranks are 0..n with no gap; the first rank that does not decode ends them (the
    // special tokens start above it and are added by the tokenizer itself).
    while let Ok(token) = bpe.decode_bytes(&[ranks]) {
        let len = u8::try_from(token.len()).expect("o200k_base tokens are at most 255 bytes");
        packed.push(len);
        packed.extend_from_slice(&token);
        ranks += 1;
    }
    assert_eq!(ranks, 199_998, "o200k_base has 199,998 ordinary tokens");
    let deflated = miniz_oxide::deflate::compress_to_vec(&packed, 9);
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    std::fs::write(out.join("o200k_base.deflate"), deflated).expect("OUT_DIR is writable");
}
