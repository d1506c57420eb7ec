//! Ring ids, which name files inside pods.

use crate::KeyError;

/// Checks a ring id: 1..=63 bytes of `[a-z0-9.-]`, starting and ending alphanumeric,
/// no `..`, because it becomes a file name inside pods.
pub fn validate_id(id: &str) -> Result<(), KeyError> {
    let err = match id {
        "" => "empty",
        _ if id.len() > 63 => "longer than 63 bytes",
        _ if !id
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.')) =>
        {
            "only a-z, 0-9, '-' and '.' are allowed"
        }
        _ if !id.starts_with(|c: char| c.is_ascii_alphanumeric())
            || !id.ends_with(|c: char| c.is_ascii_alphanumeric()) =>
        {
            "must start and end with a letter or digit"
        }
        _ if id.contains("..") => "must not contain '..'",
        _ => return Ok(()),
    };
    Err(KeyError::InvalidId(err))
}
