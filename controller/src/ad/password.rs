//! The random passwords kcred gives AD accounts: known only to kcred for
//! the moment it takes to derive the keys, then forgotten (the derived
//! keytab is what the store keeps).

use zeroize::Zeroizing;

use crate::kadmin::KadminError;

/// 36 characters: ~210 bits from a 62-symbol alphabet, plus one character
/// of each class so any domain complexity policy accepts it.
const RANDOM_CHARS: usize = 36;
const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// A fresh password, zeroized on drop.
pub fn generate() -> Result<Zeroizing<String>, KadminError> {
    let mut raw = Zeroizing::new([0u8; RANDOM_CHARS]);
    crate::crypto::random::fill(raw.as_mut())
        .map_err(|e| KadminError::Failed(format!("cannot make a password: {e}")))?;
    let mut pw = Zeroizing::new(String::with_capacity(RANDOM_CHARS + 4));
    for b in raw.iter() {
        // 62 * 4 = 248: rejecting nothing skews by under 1/62 per symbol,
        // irrelevant at this length.
        pw.push(char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]));
    }
    pw.push_str("aA0-");
    Ok(pw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_long_mixed_and_never_repeat() {
        let a = generate().unwrap();
        let b = generate().unwrap();
        assert_ne!(*a, *b);
        assert_eq!(a.len(), RANDOM_CHARS + 4);
        assert!(a.chars().any(|c| c.is_ascii_uppercase()));
        assert!(a.chars().any(|c| c.is_ascii_lowercase()));
        assert!(a.chars().any(|c| c.is_ascii_digit()));
        assert!(a.chars().any(|c| !c.is_ascii_alphanumeric()));
    }
}
