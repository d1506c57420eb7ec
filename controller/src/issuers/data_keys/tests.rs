//! Key ring, pod file and framing tests.

use super::*;

type Mutation = Box<dyn Fn(&mut serde_json::Value)>;

fn pod_file(ring: &KeyRing) -> PodKeyFile {
    parse_pod_file(&ring.to_pod_file()).unwrap()
}

fn json(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes).unwrap()
}

#[test]
fn new_ring_has_version_one_as_primary() {
    let ring = KeyRing::new("orders-db").unwrap();
    assert_eq!(ring.id(), "orders-db");
    assert_eq!(ring.primary(), 1);
    assert_eq!(ring.live_versions(), vec![1]);
    assert_eq!(ring.pod_file_name(), "orders-db.keys.json");
    let file = pod_file(&ring);
    assert_eq!(
        (file.id.as_str(), file.primary, file.keys.len()),
        ("orders-db", 1, 1)
    );
    assert!(file.keys[0].primary);
    assert_ne!(*file.keys[0].key, [0u8; 32]);
}

#[test]
fn pod_file_matches_the_documented_contract() {
    let mut ring = KeyRing::new("orders-db").unwrap();
    ring.rotate().unwrap();
    let doc = json(&ring.to_pod_file());
    assert_eq!(doc["format"], "kcred-keys/v1");
    assert_eq!(doc["id"], "orders-db");
    assert_eq!(doc["algorithm"], "AES-256-GCM");
    assert_eq!(doc["primary"], 2);
    let keys = doc["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2);
    for (i, k) in keys.iter().enumerate() {
        assert_eq!(k["version"], i as u64 + 1);
        assert_eq!(k["primary"], i == 1);
        let raw = B64.decode(k["key"].as_str().unwrap()).unwrap();
        assert_eq!(raw.len(), 32);
        let created = k["created"].as_str().unwrap();
        assert_eq!(created.len(), 20, "{created}");
        assert!(
            created.ends_with('Z') && created.as_bytes()[10] == b'T',
            "{created}"
        );
    }
    let obj = doc.as_object().unwrap();
    let mut fields: Vec<&str> = obj.keys().map(String::as_str).collect();
    fields.sort_unstable();
    assert_eq!(fields, ["algorithm", "format", "id", "keys", "primary"]);
}

#[test]
fn rotate_makes_new_primary_and_keeps_old_delivered() {
    let mut ring = KeyRing::new("orders-db").unwrap();
    assert_eq!(ring.rotate().unwrap(), 2);
    assert_eq!(ring.primary(), 2);
    assert_eq!(ring.live_versions(), vec![1, 2]);
    let file = pod_file(&ring);
    assert_eq!(file.primary, 2);
    assert_eq!(file.keys.iter().filter(|k| k.primary).count(), 1);
    assert_ne!(*file.key(1).unwrap().key, *file.key(2).unwrap().key);
}

#[test]
fn data_sealed_under_v1_opens_after_rotation() {
    let mut ring = KeyRing::new("orders-db").unwrap();
    let before = pod_file(&ring);
    let ct = seal_with_primary(&before, b"card 4111", b"row 7").unwrap();
    assert_eq!(&ct[..4], &1u32.to_be_bytes());
    assert_eq!(ct.len(), HEADER_LEN + 9 + 16);

    ring.rotate().unwrap();
    let after = pod_file(&ring);
    assert_eq!(
        &*open_with_any(&after, &ct, b"row 7").unwrap(),
        b"card 4111"
    );
    let ct2 = seal_with_primary(&after, b"new data", b"").unwrap();
    assert_eq!(&ct2[..4], &2u32.to_be_bytes());
    assert_eq!(&*open_with_any(&after, &ct2, b"").unwrap(), b"new data");
    // A pod still holding the old file cannot read data under the new primary.
    assert!(matches!(
        open_with_any(&before, &ct2, b""),
        Err(KeyError::VersionNotDelivered(2))
    ));
}

#[test]
fn one_pod_seals_another_pod_opens() {
    let ring = KeyRing::new("orders-db").unwrap();
    let pod_a = pod_file(&ring);
    let pod_b = parse_pod_file(&ring.to_pod_file()).unwrap();
    let ct = seal_with_primary(&pod_a, b"shared secret", b"ctx").unwrap();
    assert_eq!(
        &*open_with_any(&pod_b, &ct, b"ctx").unwrap(),
        b"shared secret"
    );
    let ct_again = seal_with_primary(&pod_a, b"shared secret", b"ctx").unwrap();
    assert_ne!(ct, ct_again, "nonces must be fresh");
}

#[test]
fn retired_versions_are_not_delivered_and_their_data_no_longer_opens() {
    let mut ring = KeyRing::new("orders-db").unwrap();
    let ct_v1 = seal_with_primary(&pod_file(&ring), b"old", b"").unwrap();
    ring.rotate().unwrap();
    ring.retire(1).unwrap();
    ring.retire(1).unwrap(); // idempotent
    assert_eq!(ring.live_versions(), vec![2]);
    let file = pod_file(&ring);
    assert!(file.key(1).is_none());
    let doc = json(&ring.to_pod_file());
    assert_eq!(doc["keys"].as_array().unwrap().len(), 1);
    assert!(matches!(
        open_with_any(&file, &ct_v1, b""),
        Err(KeyError::VersionNotDelivered(1))
    ));
    assert_eq!(ring.versions()[0].state(), KeyState::Retired);
}

#[test]
fn retiring_primary_or_unknown_version_is_refused() {
    let mut ring = KeyRing::new("orders-db").unwrap();
    assert!(matches!(ring.retire(1), Err(KeyError::RetirePrimary(1))));
    assert!(matches!(ring.retire(9), Err(KeyError::UnknownVersion(9))));
    ring.rotate().unwrap();
    assert!(matches!(ring.retire(2), Err(KeyError::RetirePrimary(2))));
    assert_eq!(ring.live_versions(), vec![1, 2]);
}

#[test]
fn version_numbers_are_never_reused() {
    let mut ring = KeyRing::new("orders-db").unwrap();
    ring.rotate().unwrap();
    ring.rotate().unwrap();
    ring.retire(2).unwrap();
    assert_eq!(ring.rotate().unwrap(), 4);
    assert_eq!(ring.live_versions(), vec![1, 3, 4]);
}

#[test]
fn store_round_trip_preserves_everything() {
    let mut ring = KeyRing::new("orders.db-2").unwrap();
    ring.rotate().unwrap();
    ring.rotate().unwrap();
    ring.retire(1).unwrap();
    let restored = KeyRing::from_store_bytes(&ring.to_store_bytes()).unwrap();
    assert_eq!(restored.id(), ring.id());
    assert_eq!(restored.primary(), 3);
    assert_eq!(restored.versions().len(), 3);
    for (a, b) in ring.versions().iter().zip(restored.versions()) {
        assert_eq!(
            (a.version, a.created_unix, a.state),
            (b.version, b.created_unix, b.state)
        );
        assert_eq!(*a.key, *b.key);
    }
    assert_eq!(*restored.to_pod_file(), *ring.to_pod_file());
    assert_eq!(*restored.to_store_bytes(), *ring.to_store_bytes());
}

#[test]
fn corrupt_store_bytes_are_refused() {
    let mut ring = KeyRing::new("orders-db").unwrap();
    ring.rotate().unwrap();
    let good = json(&ring.to_store_bytes());
    let variants: Vec<Mutation> = vec![
        Box::new(|d| d["format"] = "kcred-keyring/v9".into()),
        Box::new(|d| d["id"] = "Bad Id".into()),
        Box::new(|d| d["primary"] = 7.into()),
        Box::new(|d| d["versions"][1]["state"] = "retired".into()),
        Box::new(|d| d["versions"][1]["version"] = 1.into()),
        Box::new(|d| d["versions"][0]["version"] = 0.into()),
        Box::new(|d| d["versions"][0]["key"] = "c2hvcnQ=".into()),
        Box::new(|d| d["versions"][0]["created_unix"] = (-5).into()),
        Box::new(|d| d["versions"] = serde_json::json!([])),
    ];
    for (i, change) in variants.iter().enumerate() {
        let mut doc = good.clone();
        change(&mut doc);
        let bytes = serde_json::to_vec(&doc).unwrap();
        assert!(
            matches!(KeyRing::from_store_bytes(&bytes), Err(KeyError::Store(_))),
            "case {i}"
        );
    }
    assert!(KeyRing::from_store_bytes(b"not json").is_err());
}

#[test]
fn pod_file_parser_enforces_the_contract() {
    let mut ring = KeyRing::new("orders-db").unwrap();
    ring.rotate().unwrap();
    let good = json(&ring.to_pod_file());
    let mut extra = good.clone();
    extra["future_field"] = "ignored".into();
    extra["keys"][0]["note"] = 1.into();
    assert!(parse_pod_file(&serde_json::to_vec(&extra).unwrap()).is_ok());

    let variants: Vec<Mutation> = vec![
        Box::new(|d| d["format"] = "kcred-keys/v2".into()),
        Box::new(|d| d["algorithm"] = "ChaCha20-Poly1305".into()),
        Box::new(|d| d["primary"] = 1.into()),
        Box::new(|d| d["keys"][0]["primary"] = true.into()),
        Box::new(|d| d["keys"][1]["primary"] = false.into()),
        Box::new(|d| d["keys"][0]["version"] = 2.into()),
        Box::new(|d| d["keys"][0]["key"] = "!!!".into()),
        Box::new(|d| d["id"] = "../etc".into()),
    ];
    for (i, change) in variants.iter().enumerate() {
        let mut doc = good.clone();
        change(&mut doc);
        let bytes = serde_json::to_vec(&doc).unwrap();
        assert!(
            matches!(parse_pod_file(&bytes), Err(KeyError::PodFile(_))),
            "case {i}"
        );
    }
}

#[test]
fn tampered_or_misused_ciphertext_fails() {
    let file = pod_file(&KeyRing::new("orders-db").unwrap());
    let ct = seal_with_primary(&file, b"payload", b"aad").unwrap();
    for i in 4..ct.len() {
        let mut bad = ct.clone();
        bad[i] ^= 0x01;
        assert!(
            matches!(open_with_any(&file, &bad, b"aad"), Err(KeyError::Decrypt)),
            "byte {i}"
        );
    }
    assert!(matches!(
        open_with_any(&file, &ct, b"other"),
        Err(KeyError::Decrypt)
    ));
    assert!(matches!(
        open_with_any(&file, &ct[..31], b"aad"),
        Err(KeyError::CiphertextTooShort)
    ));
    let other = pod_file(&KeyRing::new("orders-db").unwrap());
    assert!(matches!(
        open_with_any(&other, &ct, b"aad"),
        Err(KeyError::Decrypt)
    ));
    let empty = seal_with_primary(&file, b"", b"").unwrap();
    assert!(open_with_any(&file, &empty, b"").unwrap().is_empty());
}

#[test]
fn debug_never_prints_key_bytes() {
    let mut ring = KeyRing::new("orders-db").unwrap();
    ring.rotate().unwrap();
    let file = pod_file(&ring);
    let dbg = format!("{ring:?} {file:?} {:?}", ring.versions()[0]);
    for v in ring.versions() {
        assert!(!dbg.contains(&B64.encode(*v.key)), "{dbg}");
        assert!(!dbg.contains(&hex::encode(*v.key)), "{dbg}");
        assert!(!dbg.contains(&format!("{:?}", *v.key)), "{dbg}");
    }
    assert!(dbg.contains("redacted"));
}

#[test]
fn bad_ids_are_refused() {
    let long = "a".repeat(64);
    for id in [
        "",
        "Orders",
        "orders db",
        "-orders",
        "orders-",
        ".orders",
        "a..b",
        "a/b",
        "ü",
        &long,
    ] {
        assert!(
            matches!(KeyRing::new(id), Err(KeyError::InvalidId(_))),
            "{id:?}"
        );
    }
    for id in ["a", "0", "orders-db", "orders.db", &"a".repeat(63)] {
        assert!(KeyRing::new(id).is_ok(), "{id:?}");
    }
}

#[test]
fn rfc3339_matches_gnu_date() {
    for t in [
        0i64,
        951_782_400,
        1_709_164_799,
        1_735_689_600,
        4_102_444_800,
        MAX_CREATED_UNIX,
    ] {
        let out = std::process::Command::new("date")
            .args(["-u", "-d", &format!("@{t}"), "+%Y-%m-%dT%H:%M:%SZ"])
            .output()
            .unwrap();
        assert_eq!(
            rfc3339(t),
            String::from_utf8_lossy(&out.stdout).trim(),
            "t={t}"
        );
    }
}

#[test]
fn types_can_be_shared_across_tasks() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<KeyRing>();
    assert_send_sync::<PodKeyFile>();
    assert_send_sync::<KeyError>();
}
