//! Tests for the atomic writer; most need root (tmpfs mounts, chown) and
//! are ignored unless run with `--include-ignored` as root.

use super::*;
use crate::storage::tmpfs::TmpfsOptions;
use crate::storage::tmpfs::fixture::MountedTmpfs;
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, UNIX_EPOCH};

const OWNER: Ownership = Ownership {
    uid: 4242,
    gid: 4243,
};

fn volume() -> MountedTmpfs {
    let opts = TmpfsOptions {
        size_bytes: 4 << 20,
        uid: 0,
        gid: 0,
        mode: 0o755,
    };
    MountedTmpfs::new(&opts)
}

fn spec(name: &str, content: &[u8], mode: u32) -> FileSpec {
    FileSpec {
        name: name.into(),
        content: Zeroizing::new(content.to_vec()),
        mode,
    }
}

fn krb(keytab: &[u8]) -> Vec<FileSpec> {
    vec![
        spec("krb5.keytab", keytab, 0o400),
        spec("krb5.conf", b"[libdefaults]\n", 0o444),
    ]
}

fn listing(root: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

fn data_target(root: &Path) -> PathBuf {
    std::fs::read_link(root.join(DATA_LINK)).unwrap()
}

#[test]
#[ignore = "needs root"]
fn first_write_creates_linked_files_with_modes_and_owner() {
    let v = volume();
    let w = AtomicWriter::new(&v.path);
    assert_eq!(w.current_generation_dir().unwrap(), None);
    assert!(w.write(&krb(b"kt1"), OWNER).unwrap());
    let gen_dir = w.current_generation_dir().unwrap().unwrap();
    assert_eq!(gen_dir, v.path.join(data_target(&v.path)));
    assert!(is_generation_name(
        gen_dir.file_name().unwrap().to_str().unwrap()
    ));
    assert_eq!(
        std::fs::metadata(&gen_dir).unwrap().mode() & 0o7777,
        GENERATION_DIR_MODE
    );
    for (name, mode, body) in [
        ("krb5.keytab", 0o400, &b"kt1"[..]),
        ("krb5.conf", 0o444, b"[libdefaults]\n"),
    ] {
        let link = v.path.join(name);
        assert_eq!(
            std::fs::read_link(&link).unwrap(),
            Path::new("..data").join(name)
        );
        let meta = std::fs::metadata(&link).unwrap();
        assert_eq!(meta.mode() & 0o7777, mode, "{name}");
        assert_eq!((meta.uid(), meta.gid()), (4242, 4243), "{name}");
        assert_eq!(std::fs::read(&link).unwrap(), body);
    }
}

#[test]
#[ignore = "needs root"]
fn identical_write_returns_false_and_changes_nothing() {
    let v = volume();
    let w = AtomicWriter::new(&v.path);
    assert!(w.write(&krb(b"kt1"), OWNER).unwrap());
    let (before, files) = (data_target(&v.path), listing(&v.path));
    let ino = std::fs::metadata(v.path.join("krb5.keytab")).unwrap().ino();
    assert!(!w.write(&krb(b"kt1"), OWNER).unwrap());
    assert_eq!(data_target(&v.path), before);
    assert_eq!(listing(&v.path), files);
    assert_eq!(
        std::fs::metadata(v.path.join("krb5.keytab")).unwrap().ino(),
        ino
    );
    // A different owner or mode alone is a change.
    assert!(
        w.write(&krb(b"kt1"), Ownership { uid: 4242, gid: 99 })
            .unwrap()
    );
}

#[test]
#[ignore = "needs root"]
fn write_replaces_all_files_in_one_rename_and_drops_old_generation() {
    let v = volume();
    let w = AtomicWriter::new(&v.path);
    w.write(&krb(b"kt1"), OWNER).unwrap();
    let old = data_target(&v.path);
    assert!(w.write(&krb(b"kt2"), OWNER).unwrap());
    let new = data_target(&v.path);
    assert_ne!(old, new);
    assert!(!v.path.join(&old).exists());
    assert_eq!(std::fs::read(v.path.join("krb5.keytab")).unwrap(), b"kt2");
    let names = listing(&v.path);
    let expect = [new.to_str().unwrap(), "..data", "krb5.conf", "krb5.keytab"];
    assert_eq!(names, expect.map(String::from));
}

#[test]
#[ignore = "needs root"]
fn removed_files_disappear_from_the_view() {
    let v = volume();
    let w = AtomicWriter::new(&v.path);
    w.write(&krb(b"kt1"), OWNER).unwrap();
    assert!(
        w.write(&[spec("krb5.keytab", b"kt1", 0o400)], OWNER)
            .unwrap()
    );
    assert!(std::fs::symlink_metadata(v.path.join("krb5.conf")).is_err());
    assert_eq!(listing(&v.path).len(), 3, "{:?}", listing(&v.path));
    assert!(
        !w.current_generation_dir()
            .unwrap()
            .unwrap()
            .join("krb5.conf")
            .exists()
    );
}

#[test]
#[ignore = "needs root"]
fn bad_names_and_modes_are_rejected_before_touching_anything() {
    let v = volume();
    let w = AtomicWriter::new(&v.path);
    w.write(&krb(b"kt1"), OWNER).unwrap();
    let (before, files) = (data_target(&v.path), listing(&v.path));
    for bad in [
        "",
        ".",
        "..",
        "..data",
        "..x",
        "a/b",
        "/etc/passwd",
        "nul\0",
    ] {
        let payload = [spec("krb5.keytab", b"kt2", 0o400), spec(bad, b"x", 0o400)];
        let err = w.write(&payload, OWNER).unwrap_err();
        assert!(
            matches!(err, StorageError::InvalidFileName(_)),
            "{bad:?}: {err}"
        );
    }
    let dup = [spec("a", b"1", 0o400), spec("a", b"2", 0o400)];
    assert!(matches!(
        w.write(&dup, OWNER),
        Err(StorageError::DuplicateFileName(_))
    ));
    let setuid = [spec("a", b"1", 0o4755)];
    assert!(matches!(
        w.write(&setuid, OWNER),
        Err(StorageError::InvalidMode { .. })
    ));
    assert_eq!(data_target(&v.path), before);
    assert_eq!(listing(&v.path), files);
    assert_eq!(std::fs::read(v.path.join("krb5.keytab")).unwrap(), b"kt1");
}

#[test]
#[ignore = "needs root"]
fn failed_write_keeps_the_old_view_and_removes_the_partial_generation() {
    let v = volume();
    let w = AtomicWriter::new(&v.path);
    w.write(&krb(b"kt1"), OWNER).unwrap();
    let (before, files) = (data_target(&v.path), listing(&v.path));
    // Larger than the 4 MiB tmpfs: fails with ENOSPC halfway through.
    let mut payload = krb(b"kt2");
    payload.push(spec("huge", &vec![7u8; 8 << 20], 0o400));
    let err = w.write(&payload, OWNER).unwrap_err();
    assert!(matches!(err, StorageError::Io { op: "write", .. }), "{err}");
    assert_eq!(data_target(&v.path), before);
    assert_eq!(listing(&v.path), files);
    assert_eq!(std::fs::read(v.path.join("krb5.keytab")).unwrap(), b"kt1");
}

#[test]
#[ignore = "needs root"]
fn leftovers_of_an_interrupted_write_are_cleaned() {
    let v = volume();
    let w = AtomicWriter::new(&v.path);
    w.write(&krb(b"kt1"), OWNER).unwrap();
    // Crash mid-write: orphan generation, ..data_tmp, a missing visible link.
    let orphan = "..2020_01_01_00_00_00.0123456789abcdef";
    std::fs::create_dir(v.path.join(orphan)).unwrap();
    std::fs::write(v.path.join(orphan).join("krb5.keytab"), b"half").unwrap();
    std::os::unix::fs::symlink(orphan, v.path.join(DATA_TMP_LINK)).unwrap();
    std::fs::remove_file(v.path.join("krb5.conf")).unwrap();
    assert!(!w.write(&krb(b"kt1"), OWNER).unwrap());
    assert!(!v.path.join(orphan).exists());
    assert!(std::fs::symlink_metadata(v.path.join(DATA_TMP_LINK)).is_err());
    assert_eq!(
        std::fs::read(v.path.join("krb5.conf")).unwrap(),
        b"[libdefaults]\n"
    );
    assert_eq!(listing(&v.path).len(), 4, "{:?}", listing(&v.path));
}

#[test]
#[ignore = "needs root"]
fn write_never_follows_symlinks_planted_in_the_root() {
    let v = volume();
    let victim = tempfile::tempdir().unwrap();
    std::fs::write(victim.path().join("keep"), b"keep").unwrap();
    let planted_gen = "..2020_01_01_00_00_00.fedcba9876543210";
    std::os::unix::fs::symlink(victim.path(), v.path.join(planted_gen)).unwrap();
    std::os::unix::fs::symlink(victim.path().join("keep"), v.path.join("krb5.keytab")).unwrap();
    let w = AtomicWriter::new(&v.path);
    assert!(w.write(&krb(b"kt1"), OWNER).unwrap());
    assert_eq!(std::fs::read(victim.path().join("keep")).unwrap(), b"keep");
    assert!(std::fs::symlink_metadata(v.path.join(planted_gen)).is_err());
    assert_eq!(std::fs::read(v.path.join("krb5.keytab")).unwrap(), b"kt1");
    // A regular file shadowing a credential name is refused, not deleted.
    std::fs::write(v.path.join("extra"), b"mine").unwrap();
    let err = w.write(&[spec("extra", b"x", 0o400)], OWNER).unwrap_err();
    assert!(matches!(err, StorageError::Corrupt { .. }), "{err}");
    assert_eq!(std::fs::read(v.path.join("extra")).unwrap(), b"mine");
}

#[test]
fn write_refuses_a_root_that_is_not_tmpfs() {
    let dir = tempfile::tempdir().unwrap();
    if fstatfs(File::open(dir.path()).unwrap())
        .unwrap()
        .filesystem_type()
        == TMPFS_MAGIC
    {
        println!("skipped: temp dir is itself on tmpfs");
        return;
    }
    let err = AtomicWriter::new(dir.path())
        .write(&krb(b"kt1"), OWNER)
        .unwrap_err();
    assert!(matches!(err, StorageError::NotTmpfs(_)), "{err}");
    assert!(listing(dir.path()).is_empty());
}

/// `gen=NNNNNNNN;` repeated: any truncation or mix shows as a bad chunk.
fn payload(generation: u32) -> Vec<FileSpec> {
    let chunk = format!("gen={generation:08};");
    vec![
        spec("a", chunk.repeat(1500).as_bytes(), 0o400),
        spec("b", chunk.repeat(300).as_bytes(), 0o444),
    ]
}

fn parse(buf: &[u8], chunks: usize) -> u32 {
    assert_eq!(buf.len(), chunks * 13, "partial file");
    assert!(buf.chunks(13).all(|c| c == &buf[..13]), "torn file");
    std::str::from_utf8(&buf[4..12]).unwrap().parse().unwrap()
}

/// Reads a and b through one resolution of `..data`, like a careful reader.
fn read_pair(root: &Path) -> Option<(Vec<u8>, Vec<u8>)> {
    let dir = File::open(root.join(DATA_LINK)).ok()?;
    let read = |name: &str| {
        let fd = openat(&dir, name, OFlag::O_RDONLY, Mode::empty()).ok()?;
        let mut buf = Vec::new();
        File::from(fd).read_to_end(&mut buf).ok()?;
        Some(buf)
    };
    Some((read("a")?, read("b")?))
}

#[test]
#[ignore = "needs root"]
fn readers_never_see_a_partial_file_or_a_mix_of_generations() {
    let v = volume();
    let w = AtomicWriter::new(&v.path);
    w.write(&payload(0), OWNER).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (root, stop2) = (v.path.clone(), stop.clone());
    let reader = std::thread::spawn(move || {
        let (start, mut pairs, mut seen) = (Instant::now(), 0, BTreeSet::new());
        for _ in 0..20_000 {
            if stop2.load(Ordering::Relaxed) || start.elapsed() > Duration::from_secs(2) {
                break;
            }
            // None: the old generation was removed mid-read; a retry is fine.
            if let Some((a, b)) = read_pair(&root) {
                let (ga, gb) = (parse(&a, 1500), parse(&b, 300));
                assert_eq!(ga, gb, "mixed generations");
                seen.insert(ga);
                pairs += 1;
            }
            if let Ok(a) = std::fs::read(root.join("a")) {
                parse(&a, 1500);
            }
        }
        (pairs, seen.len())
    });
    for generation in 1..=200 {
        assert!(w.write(&payload(generation), OWNER).unwrap());
    }
    stop.store(true, Ordering::Relaxed);
    let (pairs, generations) = reader.join().expect("reader saw a torn or mixed view");
    println!("reader checked {pairs} pairs across {generations} generations");
    assert!(pairs > 0);
    assert_eq!(listing(&v.path).len(), 4);
}

#[test]
fn generation_names_are_strictly_recognized() {
    let name = new_generation_name(UNIX_EPOCH + Duration::from_secs(1_777_636_800));
    assert!(name.starts_with("..2026_05_01_12_00_00."), "{name}");
    assert!(is_generation_name(&name));
    for bad in [
        "..data",
        "..data_tmp",
        "..",
        "...",
        "..2026_05_01_12_00_00.xyz",
        "2026_05_01_12_00_00.0123456789abcdef",
    ] {
        assert!(!is_generation_name(bad), "{bad}");
    }
    let leap = new_generation_name(UNIX_EPOCH + Duration::from_secs(951_782_400));
    assert!(leap.starts_with("..2000_02_29_00_00_00."), "{leap}");
}
