//! The nearest known word to a typo, for "did you mean" hints.

/// Levenshtein distance (insertions, deletions, substitutions) of two
/// short strings.
pub fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitute = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitute.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}

/// The candidate closest to `word`, if it is close enough to be the word
/// that was meant (at most 3 edits, and fewer than half its length).
pub fn nearest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (distance(word, c), *c))
        .filter(|(d, c)| *d <= 3 && *d * 2 < c.len())
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distance_counts_single_edits() {
        assert_eq!(distance("keytabs", "keytabs"), 0);
        assert_eq!(distance("keytab", "keytabs"), 1);
        assert_eq!(distance("kyetabs", "keytabs"), 2);
        assert_eq!(distance("", "abc"), 3);
        assert_eq!(distance("kitten", "sitting"), 3);
    }

    #[test]
    fn a_typo_finds_its_word_and_nonsense_finds_none() {
        let known = ["kcred.io/keytabs", "kcred.io/tickets", "kcred.io/keys"];
        assert_eq!(nearest("kcred.io/keytab", &known), Some("kcred.io/keytabs"));
        assert_eq!(nearest("kcred.io/ticket", &known), Some("kcred.io/tickets"));
        assert_eq!(nearest("kcred.io/key", &known), Some("kcred.io/keys"));
        assert_eq!(nearest("kcred.io/something-else", &known), None);
    }
}
