//! A cheap, deterministic quality score for grounded answers: **groundedness**, the share of
//! the answer's content words that also appear in the retrieved text.
//!
//! Content words are alphanumeric runs of 4 or more characters, lowercased (short function
//! words carry no evidence either way). An answer made entirely of words from its sources
//! scores 1; one that shares none scores 0. It cannot tell a faithful paraphrase from a wrong
//! one, but it falls sharply when answers stop using the tenant's documents, which is the
//! trend the daily quality view is for. Rounded to 3 decimal places; `None` when the answer
//! has no content words or nothing was retrieved.

use std::collections::HashSet;

use rust_decimal::Decimal;

fn content_words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.chars().count() >= 4)
        .map(str::to_lowercase)
}

/// The groundedness of `answer` against `sources` (see the module docs): 0 to 1, 3 places.
pub fn groundedness<'a>(
    answer: &str,
    sources: impl IntoIterator<Item = &'a str>,
) -> Option<Decimal> {
    let vocabulary: HashSet<String> = sources.into_iter().flat_map(content_words).collect();
    if vocabulary.is_empty() {
        return None;
    }
    let words: Vec<String> = content_words(answer).collect();
    if words.is_empty() {
        return None;
    }
    let supported = words.iter().filter(|w| vocabulary.contains(*w)).count();
    Some((Decimal::from(supported) / Decimal::from(words.len())).round_dp(3))
}

#[cfg(test)]
mod tests {
    use rust_decimal_macros::dec;

    use super::*;

    #[test]
    fn an_answer_drawn_from_its_sources_scores_high_and_an_unrelated_one_low() {
        let sources = ["Refunds are free within 24 hours of booking; later changes cost a fee."];
        assert_eq!(
            groundedness("Refunds are free within 24 hours.", sources),
            Some(dec!(1))
        );
        assert_eq!(
            groundedness("Bananas contain potassium.", sources),
            Some(dec!(0))
        );
        assert_eq!(groundedness("Refunds? Bananas!", sources), Some(dec!(0.5)));
    }

    #[test]
    fn no_sources_or_no_content_words_means_no_score() {
        assert_eq!(groundedness("Refunds are free.", []), None);
        assert_eq!(groundedness("ok, yes", ["Refunds are free"]), None);
    }
}
