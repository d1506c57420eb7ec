//! Tests for the state directory: records round-trip, hostile ids stay
//! safe file names, older drivers' records are read.

use super::*;
use std::os::unix::fs::MetadataExt;

fn record(volume_id: &str) -> PublishedVolume {
    PublishedVolume {
        volume_id: volume_id.into(),
        target: "/var/lib/kubelet/pods/u/volumes/kubernetes.io~csi/v/mount".into(),
        pod_namespace: "ns".into(),
        pod_name: "pod".into(),
        pod_uid: "u".into(),
        service_account: "sa".into(),
        readonly: false,
        uid: 4242,
        gid: 4243,
        published_at: Deadline::from_controller(1_777_636_800).unwrap(),
        phase: Phase::Mounted {
            generation: "g1".into(),
            refresh_at: None,
        },
    }
}

fn files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn open_creates_a_private_dir_and_its_owner_drops_stale_temp_files() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("a/b");
    fs::create_dir_all(&root).unwrap();
    fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(root.join(".tmp-deadbeef"), b"{half").unwrap();
    let dir = StateDir::open(&root).unwrap();
    assert_eq!(fs::metadata(&root).unwrap().mode() & 0o777, 0o700);
    let _owner = dir.claim().unwrap();
    assert!(files(&root).is_empty());
}

#[test]
fn a_second_driver_leaves_the_owners_saves_under_way_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("state");
    let _first = StateDir::open(&root).unwrap().claim().unwrap();
    // The owner's save in flight, as a rolling update's new driver starts.
    let in_flight = root.join(".tmp-0123456789abcdef");
    fs::write(&in_flight, b"{\"half").unwrap();

    let second = StateDir::open(&root).unwrap();
    second.claim().expect_err("two owners");

    assert!(in_flight.exists(), "the owner's save is left to finish");
}

#[test]
fn save_load_list_remove_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = StateDir::open(tmp.path()).unwrap();
    let (a, b) = (record("vol-a"), record("vol-b"));
    dir.save(&b).unwrap();
    dir.save(&a).unwrap();
    assert_eq!(dir.load("vol-a").unwrap(), Some(a.clone()));
    assert_eq!(dir.load("vol-missing").unwrap(), None);
    assert_eq!(dir.list().unwrap(), vec![a.clone(), b.clone()]);
    let a2 = PublishedVolume {
        phase: Phase::Mounted {
            generation: "g2".into(),
            refresh_at: Deadline::from_controller(1_777_640_000),
        },
        ..a
    };
    dir.save(&a2).unwrap();
    assert_eq!(dir.load("vol-a").unwrap(), Some(a2));
    assert_eq!(files(tmp.path()).len(), 2, "no temp files left behind");
    let mode = fs::metadata(dir.path_for("vol-a")).unwrap().mode();
    assert_eq!(mode & 0o777, 0o600);
    dir.remove("vol-a").unwrap();
    dir.remove("vol-a").unwrap();
    assert_eq!(dir.load("vol-a").unwrap(), None);
    assert_eq!(dir.list().unwrap(), vec![b]);
}

/// A record that fits its file is rewritten in place (the same inode: no
/// file created or deleted); one that outgrows it, or a file an older
/// driver wrote without room, is replaced whole; every version reads back.
#[test]
fn saves_rewrite_a_record_in_place_while_it_fits_its_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = StateDir::open(tmp.path()).unwrap();
    let path = dir.path_for("vol-a");
    let inode = || fs::metadata(&path).unwrap().ino();
    let mut rec = PublishedVolume {
        phase: Phase::Publishing,
        ..record("vol-a")
    };
    dir.save(&rec).unwrap();
    let first = inode();
    assert_eq!(fs::metadata(&path).unwrap().len(), ROOM as u64);
    for n in 0..3 {
        rec.phase = Phase::Mounted {
            generation: format!("generation-{n}"),
            refresh_at: Deadline::from_controller(1_777_640_000 + n),
        };
        dir.save(&rec).unwrap();
        assert_eq!(inode(), first, "rewritten in place");
        assert_eq!(dir.load("vol-a").unwrap(), Some(rec.clone()));
    }
    // Shorter again: the rest of the file is white space.
    rec.phase = Phase::Publishing;
    dir.save(&rec).unwrap();
    assert_eq!(inode(), first);
    assert_eq!(dir.list().unwrap(), vec![rec.clone()]);

    // Outgrowing the file: replaced by a bigger one, which reads back.
    rec.pod_name = "p".repeat(ROOM);
    dir.save(&rec).unwrap();
    assert_ne!(inode(), first, "replaced");
    assert_eq!(dir.load("vol-a").unwrap(), Some(rec.clone()));

    // An older driver's record: its exact JSON, no room; a longer version
    // replaces it, a shorter one fits it.
    let old = record("vol-b");
    let old_path = dir.path_for("vol-b");
    fs::write(&old_path, serde_json::to_vec(&old).unwrap()).unwrap();
    let longer = PublishedVolume {
        pod_name: "a-longer-pod-name".into(),
        ..old.clone()
    };
    dir.save(&longer).unwrap();
    assert_eq!(dir.load("vol-b").unwrap(), Some(longer));
    assert_eq!(
        fs::metadata(&old_path).unwrap().len(),
        ROOM as u64,
        "given room"
    );
    assert_eq!(files(tmp.path()).len(), 2, "no temp files left behind");
}

/// Whatever else sits at a record's path (a symlink, a FIFO, a file with
/// another hard link) is replaced by a save, never written through or
/// waited on.
#[test]
fn saves_replace_what_is_not_a_plain_record_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = StateDir::open(tmp.path().join("state")).unwrap();
    let elsewhere = tmp.path().join("elsewhere");
    fs::write(&elsewhere, b"not a record").unwrap();
    type Make<'a> = &'a dyn Fn(&Path);
    let kinds: [(&str, Make); 3] = [
        ("symlink", &|p| {
            std::os::unix::fs::symlink(&elsewhere, p).unwrap()
        }),
        ("fifo", &|p| {
            nix::unistd::mkfifo(p, nix::sys::stat::Mode::S_IRWXU).unwrap()
        }),
        ("hard link", &|p| fs::hard_link(&elsewhere, p).unwrap()),
    ];
    for (kind, make) in kinds {
        let rec = record(&format!("vol-{kind}"));
        let path = dir.path_for(&rec.volume_id);
        make(&path);
        dir.save(&rec).unwrap_or_else(|e| panic!("{kind}: {e}"));
        assert_eq!(dir.load(&rec.volume_id).unwrap(), Some(rec), "{kind}");
        let meta = fs::symlink_metadata(&path).unwrap();
        assert!(meta.is_file() && meta.nlink() == 1, "{kind}: replaced");
        assert_eq!(fs::read(&elsewhere).unwrap(), b"not a record", "{kind}");
    }
}

#[test]
fn list_skips_corrupt_and_misplaced_entries() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = StateDir::open(tmp.path()).unwrap();
    dir.save(&record("good")).unwrap();
    fs::write(dir.path_for("bad"), b"{not json").unwrap();
    let misplaced = serde_json::to_vec(&record("other")).unwrap();
    fs::write(dir.path_for("elsewhere"), misplaced).unwrap();
    fs::write(tmp.path().join("README"), b"ignored").unwrap();
    fs::create_dir(tmp.path().join("sub.json")).unwrap();
    assert_eq!(dir.list().unwrap(), vec![record("good")]);
    assert!(matches!(dir.load("bad"), Err(StorageError::Corrupt { .. })));
    assert!(matches!(
        dir.load("elsewhere"),
        Err(StorageError::Corrupt { .. })
    ));
}

#[test]
fn file_names_are_safe_for_hostile_volume_ids() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("state");
    let dir = StateDir::open(&root).unwrap();
    let hostile = ["../../etc/passwd", "", "a/b", "/abs", ".tmp-x", "nul\0byte"];
    for id in hostile {
        dir.save(&record(id)).unwrap();
        assert_eq!(dir.load(id).unwrap(), Some(record(id)));
    }
    let names = files(&root);
    assert_eq!(names.len(), hostile.len());
    for name in &names {
        let stem = name.strip_suffix(".json").unwrap();
        assert!(stem.len() == 64 && stem.bytes().all(|b| b.is_ascii_hexdigit()));
    }
    assert_eq!(files(tmp.path()), vec!["state".to_string()]);
    assert_eq!(dir.list().unwrap().len(), hostile.len());
}

#[test]
fn records_of_older_drivers_are_read_into_typed_phases() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = StateDir::open(tmp.path()).unwrap();
    let old = |generation: &str, refresh: i64| {
        format!(
            r#"{{"volume_id":"v","target_path":"/t","pod_namespace":"ns","pod_name":"p",
            "pod_uid":"u","service_account":"sa","uid":1,"gid":2,
            "generation":"{generation}","published_at_unix":1777636800,
            "refresh_after_unix":{refresh}}}"#
        )
    };
    fs::write(
        dir.path_for("v"),
        old("..2026_05_01_12_00_00.0123456789abcdef", 0),
    )
    .unwrap();
    let v = dir.load("v").unwrap().unwrap();
    assert_eq!(
        v.phase,
        Phase::Mounted {
            generation: "..2026_05_01_12_00_00.0123456789abcdef".into(),
            refresh_at: None
        }
    );
    assert!(!v.readonly);
    fs::write(dir.path_for("v"), old("g", 1_777_640_000)).unwrap();
    assert_eq!(
        dir.load("v").unwrap().unwrap().phase,
        Phase::Mounted {
            generation: "g".into(),
            refresh_at: Deadline::from_controller(1_777_640_000)
        }
    );
    fs::write(dir.path_for("v"), old("wiped", 0)).unwrap();
    assert_eq!(
        dir.load("v").unwrap().unwrap().phase,
        Phase::Wiped {
            reason: WipeReason::Revoked
        }
    );
}

#[test]
fn typed_records_round_trip_every_phase() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = StateDir::open(tmp.path()).unwrap();
    for phase in [
        Phase::Publishing,
        Phase::Mounted {
            generation: "g".into(),
            refresh_at: Deadline::from_controller(1_777_640_000),
        },
        Phase::Wiped {
            reason: WipeReason::Revoked,
        },
    ] {
        let v = PublishedVolume {
            phase,
            readonly: true,
            ..record("v")
        };
        dir.save(&v).unwrap();
        assert_eq!(dir.load("v").unwrap(), Some(v));
    }
}

#[test]
fn one_process_owns_the_state_dir_until_it_lets_go() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = StateDir::open(tmp.path().join("state")).unwrap();
    let first = dir.claim().expect("the first driver owns it");
    // A second driver (another open file description, as another process
    // would have) is refused, naming the directory.
    let second = StateDir::open(tmp.path().join("state")).unwrap();
    let err = second.claim().expect_err("two owners");
    assert!(matches!(err, StorageError::StateDirHeld(_)), "{err}");
    assert!(err.to_string().contains("state"), "{err}");
    drop(first);
    second.claim().expect("free again once the first lets go");
}
