//! Keys as the format writes them: standard padded base64 of 32 bytes.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Deserialize;
use zeroize::Zeroizing;

use crate::KEY_LEN;

/// A 32-byte key decoded straight from its base64 string into zeroizing memory, so
/// no plain copy of the key is left in a `String` (shared with the controller's store).
pub struct B64Key(pub Zeroizing<[u8; KEY_LEN]>);

impl<'de> Deserialize<'de> for B64Key {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = B64Key;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a base64 string encoding 32 bytes")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<B64Key, E> {
                let mut buf = Zeroizing::new([0u8; KEY_LEN + 16]);
                match B64.decode_slice(s, &mut buf[..]) {
                    Ok(KEY_LEN) => {
                        let mut key = Zeroizing::new([0u8; KEY_LEN]);
                        key.copy_from_slice(&buf[..KEY_LEN]);
                        Ok(B64Key(key))
                    }
                    _ => Err(E::custom("key must be standard base64 of exactly 32 bytes")),
                }
            }
        }
        d.deserialize_str(Visitor)
    }
}
