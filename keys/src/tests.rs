//! The pod file contract and the framing, from the reader's side.

use serde_json::{Value, json};

use super::*;

const KEY_1: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
const KEY_2: &str = "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=";

/// A file as the controller delivers it: `versions` as (version, key), the last primary.
fn delivered(versions: &[(u32, &str)]) -> Value {
    let primary = versions.last().map_or(0, |v| v.0);
    let keys: Vec<Value> = versions
        .iter()
        .map(|(v, k)| {
            json!({"version": v, "key": k, "created": "2025-01-02T03:04:05Z", "primary": *v == primary})
        })
        .collect();
    json!({"format": POD_FORMAT, "id": "orders-db", "algorithm": ALGORITHM,
           "primary": primary, "keys": keys})
}

/// A named way to break a delivered file.
type Break = (&'static str, fn(&mut Value));

fn parse(doc: &Value) -> Result<PodKeyFile, KeyError> {
    parse_pod_file(&serde_json::to_vec(doc).unwrap())
}

#[test]
fn parses_a_delivered_file_with_versions_ascending() {
    let mut doc = delivered(&[(1, KEY_1), (2, KEY_2)]);
    doc["keys"].as_array_mut().unwrap().reverse();
    let file = parse(&doc).unwrap();
    assert_eq!((file.id.as_str(), file.primary), ("orders-db", 2));
    let versions: Vec<u32> = file.keys.iter().map(|k| k.version).collect();
    assert_eq!(versions, [1, 2]);
    assert_eq!(*file.key(2).unwrap().key, [7u8; KEY_LEN]);
    assert!(file.key(2).unwrap().primary && !file.key(1).unwrap().primary);
    assert!(file.key(3).is_none());
}

#[test]
fn unknown_fields_are_ignored() {
    let mut doc = delivered(&[(1, KEY_1)]);
    doc["comment"] = json!("added in a compatible v1");
    doc["keys"][0]["origin"] = json!("kcred");
    assert!(parse(&doc).is_ok());
}

#[test]
fn files_breaking_the_contract_are_refused() {
    let breaks: [Break; 9] = [
        ("format", |d| d["format"] = json!("kcred-keys/v2")),
        ("algorithm", |d| d["algorithm"] = json!("AES-128-GCM")),
        ("id", |d| d["id"] = json!("../etc")),
        ("version 0", |d| d["keys"][0]["version"] = json!(0)),
        ("duplicate", |d| d["keys"][1]["version"] = json!(1)),
        ("two primaries", |d| d["keys"][0]["primary"] = json!(true)),
        ("primary mismatch", |d| d["primary"] = json!(1)),
        ("short key", |d| d["keys"][0]["key"] = json!("AAAA")),
        ("not base64", |d| {
            d["keys"][0]["key"] = json!("!".repeat(44))
        }),
    ];
    for (what, mutate) in breaks {
        let mut doc = delivered(&[(1, KEY_1), (2, KEY_2)]);
        mutate(&mut doc);
        assert!(
            matches!(parse(&doc), Err(KeyError::PodFile(_))),
            "{what} must be refused"
        );
    }
    assert!(matches!(
        parse_pod_file(b"not json"),
        Err(KeyError::PodFile(_))
    ));
}

#[test]
fn data_sealed_before_a_rotation_opens_after_it() {
    let before = parse(&delivered(&[(1, KEY_1)])).unwrap();
    let after = parse(&delivered(&[(1, KEY_1), (2, KEY_2)])).unwrap();
    let old = seal_with_primary(&before, b"row 7", b"orders").unwrap();
    assert_eq!(old[..4], 1u32.to_be_bytes());
    assert_eq!(&*open_with_any(&after, &old, b"orders").unwrap(), b"row 7");

    let new = seal_with_primary(&after, b"row 8", b"orders").unwrap();
    assert_eq!(new[..4], 2u32.to_be_bytes());
    assert_eq!(new.len(), HEADER_LEN + 5 + TAG_LEN);
    assert!(matches!(
        open_with_any(&before, &new, b"orders"),
        Err(KeyError::VersionNotDelivered(2))
    ));
}

#[test]
fn tampered_short_or_misbound_ciphertexts_do_not_open() {
    let file = parse(&delivered(&[(1, KEY_1)])).unwrap();
    let sealed = seal_with_primary(&file, b"payload", b"aad").unwrap();
    for i in [4, HEADER_LEN, sealed.len() - 1] {
        let mut bad = sealed.clone();
        bad[i] ^= 1;
        assert!(matches!(
            open_with_any(&file, &bad, b"aad"),
            Err(KeyError::Decrypt)
        ));
    }
    assert!(matches!(
        open_with_any(&file, &sealed, b"other"),
        Err(KeyError::Decrypt)
    ));
    assert!(matches!(
        open_with_any(&file, &sealed[..HEADER_LEN + TAG_LEN - 1], b"aad"),
        Err(KeyError::CiphertextTooShort)
    ));
}

#[test]
fn debug_output_never_shows_key_bytes() {
    let file = parse(&delivered(&[(1, KEY_2)])).unwrap();
    let shown = format!("{file:?}");
    assert!(shown.contains("<redacted>"), "{shown}");
    assert!(!shown.contains("7, 7"), "{shown}");
}

#[test]
fn ring_ids_are_safe_file_names() {
    for ok in ["orders-db", "a", "v1.2", &"x".repeat(63)] {
        assert!(validate_id(ok).is_ok(), "{ok}");
    }
    for bad in [
        "",
        "Orders",
        "a/b",
        "-a",
        "a-",
        "a..b",
        ".a",
        &"x".repeat(64),
    ] {
        assert!(
            matches!(validate_id(bad), Err(KeyError::InvalidId(_))),
            "{bad}"
        );
    }
}

/// Generated-input tests of the reader: no panic, no hang (inputs are
/// bounded), a `KeyError` on bad input. `PROPTEST_CASES` sets the cases
/// (256 by default; `scripts/fuzz.sh` runs 100,000).
mod fuzz {
    use proptest::prelude::*;

    use super::*;

    fn edited(sample: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
        let edits = proptest::collection::vec((0u8..3, any::<usize>(), any::<u8>()), 0..8);
        prop_oneof![
            1 => proptest::collection::vec(any::<u8>(), 0..4096),
            3 => edits.prop_map(move |edits| {
                let mut v = sample.clone();
                for (op, i, b) in edits {
                    let len = v.len().max(1);
                    match op {
                        0 if !v.is_empty() => v[i % len] = b,
                        1 => v.insert(i % (v.len() + 1), b),
                        _ if !v.is_empty() => {
                            v.remove(i % len);
                        }
                        _ => {}
                    }
                }
                v
            }),
        ]
    }

    fn sample_file() -> Vec<u8> {
        serde_json::to_vec(&delivered(&[(1, KEY_1), (2, KEY_2)])).unwrap()
    }

    proptest! {
        #[test]
        fn fuzz_pod_file_reader(bytes in edited(sample_file())) {
            match parse_pod_file(&bytes) {
                Ok(file) => {
                    // Accepted: the primary is among the delivered keys.
                    prop_assert!(file.key(file.primary).is_some());
                    prop_assert!(validate_id(&file.id).is_ok());
                }
                Err(e) => prop_assert!(!e.to_string().is_empty()),
            }
        }

        #[test]
        fn fuzz_ciphertext_reader(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let file = parse(&delivered(&[(1, KEY_1), (2, KEY_2)])).unwrap();
            prop_assert!(open_with_any(&file, &bytes, b"").is_err(), "forged data never opens");
        }
    }
}
