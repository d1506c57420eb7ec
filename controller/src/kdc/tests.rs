//! Tickets against a real MIT KDC (one throwaway realm per test).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kcred_testrealm::Realm;
use zeroize::Zeroizing;

use super::*;

const FOO: &str = "tsfoo@KCRED.TEST";
const HTTP: &str = "HTTP/web.example.com@KCRED.TEST";

struct Fixture {
    realm: Realm,
    work: tempfile::TempDir,
    keytab: Keytab,
}

/// A realm with `tsfoo` (password user, keytab extracted without changing
/// its key) and a service to ask tickets for.
fn fixture() -> Fixture {
    let realm = Realm::start().expect("realm");
    realm
        .add_principal_with_password(FOO, "tsfoo-Pass-1")
        .expect("add tsfoo");
    realm.add_principal(HTTP).expect("add HTTP");
    let path = realm.dir().join("tsfoo.keytab");
    realm.extract_keytab(FOO, &path).expect("ktadd");
    let bytes = Zeroizing::new(fs::read(&path).expect("read keytab"));
    let keytab = Keytab::parse(bytes).expect("keytab");
    let work = tempfile::tempdir().expect("tempdir");
    Fixture {
        realm,
        work,
        keytab,
    }
}

impl Fixture {
    fn work_dir(&self) -> PathBuf {
        self.work.path().join("tickets")
    }

    fn issuer(&self, lifetime: u64, renew: u64) -> KdcClient {
        let mut cfg = TicketConfig::new(self.work_dir());
        cfg.krb5_config = Some(self.realm.krb5_conf_path());
        cfg.lifetime = Duration::from_secs(lifetime);
        cfg.renew_lifetime = Duration::from_secs(renew);
        cfg.timeout = Duration::from_secs(10);
        KdcClient::new(cfg).expect("issuer")
    }

    /// Writes the ccache where MIT tools can read it; returns `FILE:path`.
    fn copy(&self, t: &Ticket, name: &str) -> String {
        let path = self.realm.dir().join(name);
        fs::write(&path, t.ccache()).expect("write ccache copy");
        format!("FILE:{}", path.display())
    }

    /// `klist -f` in the C locale and UTC, so the test can read its dates.
    fn klist(&self, cc: &str) -> String {
        let out = self
            .realm
            .command("klist")
            .env("LC_ALL", "C")
            .env("TZ", "UTC")
            .args(["-f", "-c", cc])
            .output()
            .expect("klist");
        assert!(out.status.success(), "klist: {out:?}");
        String::from_utf8(out.stdout).expect("utf8")
    }

    fn kvno_works(&self, cc: &str) -> bool {
        let out = self
            .realm
            .command("kvno")
            .args(["-c", cc, HTTP])
            .output()
            .expect("kvno");
        out.status.success()
    }

    fn work_files(&self) -> Vec<PathBuf> {
        fs::read_dir(self.work_dir())
            .expect("read work dir")
            .map(|e| e.expect("entry").path())
            .collect()
    }
}

/// Parses klist's C-locale `MM/DD/YY HH:MM:SS` (UTC).
fn klist_time(s: &str) -> SystemTime {
    let n: Vec<i64> = s
        .split(['/', ' ', ':'])
        .map(|p| p.parse().expect("number"))
        .collect();
    let [m, d, y, hh, mm, ss] = n[..] else {
        panic!("bad klist time {s:?}")
    };
    // Days from civil (Howard Hinnant's algorithm).
    let (y, m) = if m <= 2 {
        (2000 + y - 1, m + 9)
    } else {
        (2000 + y, m - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    UNIX_EPOCH + Duration::from_secs((days * 86_400 + hh * 3600 + mm * 60 + ss) as u64)
}

/// (start, end, renew_till, flags) of the TGT line in `klist -f` output.
fn klist_tgt(out: &str) -> (SystemTime, SystemTime, SystemTime, String) {
    let mut lines = out.lines();
    let tgt = lines
        .by_ref()
        .find(|l| l.ends_with("krbtgt/KCRED.TEST@KCRED.TEST"))
        .unwrap_or_else(|| panic!("no TGT in {out}"));
    let next = lines.next().expect("renew/flags line").trim();
    let (renew, flags) = next
        .strip_prefix("renew until ")
        .and_then(|r| r.split_once(", Flags: "))
        .unwrap_or_else(|| panic!("unexpected {next:?}"));
    (
        klist_time(&tgt[..17]),
        klist_time(&tgt[19..36]),
        klist_time(renew),
        flags.to_string(),
    )
}

fn close(a: SystemTime, b: SystemTime) -> bool {
    let d = a.duration_since(b).unwrap_or_else(|e| e.duration());
    d <= Duration::from_secs(2)
}

#[tokio::test]
async fn acquire_gives_a_forwardable_renewable_tgt_that_klist_agrees_with() {
    let fx = fixture();
    let issuer = fx.issuer(3600, 86_400);
    let t0 = Instant::now();
    let t = issuer.acquire(FOO, &fx.keytab).await.expect("acquire");
    eprintln!("acquire took {:?}", t0.elapsed());
    assert_eq!(t.client, FOO);
    assert!(t.forwardable && t.renewable && t.renewal_extends(), "{t:?}");
    assert!(fx.work_files().is_empty(), "left {:?}", fx.work_files());

    let cc = fx.copy(&t, "acquired.ccache");
    let out = fx.klist(&cc);
    assert!(out.contains("Default principal: tsfoo@KCRED.TEST"), "{out}");
    let (start, end, renew_till, flags) = klist_tgt(&out);
    assert!(flags.contains('F') && flags.contains('R'), "flags {flags}");
    assert!(close(t.start, start) && close(t.end, end), "{t:?} vs {out}");
    assert!(close(t.renew_till, renew_till), "{t:?} vs {out}");
    let life = t.end.duration_since(t.start).expect("end after start");
    assert!(life.abs_diff(Duration::from_secs(3600)) <= Duration::from_secs(2));
    assert!(t.refresh_at(REFRESH_FRACTION) > t.start && t.refresh_at(f64::NAN) < t.end);
    assert!(fx.kvno_works(&cc), "kvno with the acquired TGT failed");

    let shown = format!("{t:?}");
    assert!(shown.contains("ccache_len") && shown.len() < 400, "{shown}");
}

#[tokio::test]
async fn renew_extends_the_end_but_not_the_renewable_life() {
    let fx = fixture();
    let issuer = fx.issuer(60, 3600);
    let t = issuer.acquire(FOO, &fx.keytab).await.expect("acquire");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let t0 = Instant::now();
    let r = issuer.renew(&t).await.expect("renew");
    eprintln!("renew took {:?}", t0.elapsed());
    assert!(r.end > t.end && r.start > t.start, "{t:?} then {r:?}");
    assert_eq!(r.renew_till, t.renew_till);
    assert_eq!(r.client, FOO);
    assert!(r.forwardable && r.renewable, "{r:?}");
    assert!(fx.kvno_works(&fx.copy(&r, "renewed.ccache")));
    assert!(fx.work_files().is_empty(), "left {:?}", fx.work_files());
}

#[tokio::test]
async fn renewal_stops_at_renew_till_and_for_non_renewable_tickets() {
    let fx = fixture();
    // MIT raises a renewable life shorter than the lifetime to the lifetime.
    let short = fx
        .issuer(2, 1)
        .acquire(FOO, &fx.keytab)
        .await
        .expect("short");
    assert_eq!(short.renew_till, short.end, "{short:?}");
    let lapsed = fx
        .issuer(2, 3600)
        .acquire(FOO, &fx.keytab)
        .await
        .expect("2s");
    let plain = fx
        .issuer(60, 0)
        .acquire(FOO, &fx.keytab)
        .await
        .expect("plain");
    assert!(!plain.renewable && !plain.renewal_extends(), "{plain:?}");

    let issuer = fx.issuer(60, 3600);
    let not_renewable = |e: &TicketError, text: &str| {
        eprintln!("{e}");
        matches!(e, TicketError::NotRenewable(m) if m.contains(text))
    };
    let err = issuer.renew(&plain).await.expect_err("not renewable");
    assert!(not_renewable(&err, "is not renewable"), "{err}");
    let err = issuer.renew_at_kdc(&plain).await.expect_err("KDC refuses");
    assert!(not_renewable(&err, "can't fulfill"), "{err}");

    let wait = short.renew_till.max(lapsed.end) + Duration::from_millis(1500);
    tokio::time::sleep(wait.duration_since(SystemTime::now()).unwrap_or_default()).await;
    let err = issuer.renew(&short).await.expect_err("past renew_till");
    assert!(not_renewable(&err, "has ended"), "{err}");
    let err = issuer.renew_at_kdc(&short).await.expect_err("KDC refuses");
    assert!(not_renewable(&err, "Ticket expired"), "{err}");
    // Surprise: MIT still renews an expired ticket within its clock skew.
    assert!(SystemTime::now() > lapsed.end);
    issuer
        .renew(&lapsed)
        .await
        .expect("renew expired but renewable");
}

#[tokio::test]
async fn kdc_outage_is_retryable_and_leaves_no_files() {
    let mut fx = fixture();
    let issuer = fx.issuer(60, 3600);
    let t = issuer.acquire(FOO, &fx.keytab).await.expect("acquire");
    fx.realm.stop_kdc().expect("stop kdc");
    let err = issuer.acquire(FOO, &fx.keytab).await.expect_err("no KDC");
    eprintln!("{err}");
    assert!(matches!(err, TicketError::KdcUnavailable(_)) && err.is_retryable());
    let err = issuer.renew(&t).await.expect_err("no KDC");
    assert!(matches!(err, TicketError::KdcUnavailable(_)), "{err}");
    assert!(fx.work_files().is_empty(), "left {:?}", fx.work_files());
    fx.realm.start_kdc().expect("start kdc");
    issuer
        .acquire(FOO, &fx.keytab)
        .await
        .expect("acquire again");
}

#[tokio::test]
async fn wrong_stale_or_deleted_keys_are_refused() {
    let fx = fixture();
    let issuer = fx.issuer(60, 3600);
    fx.realm
        .add_principal("tsbar@KCRED.TEST")
        .expect("add tsbar");
    let err = issuer
        .acquire("tsbar@KCRED.TEST", &fx.keytab)
        .await
        .expect_err("keytab of another principal");
    assert!(
        matches!(&err, TicketError::Refused { principal, .. } if principal == "tsbar@KCRED.TEST")
    );

    fx.realm
        .kadmin_local("cpw -randkey tsfoo")
        .expect("randkey");
    eprintln!("{err}");
    let err = issuer.acquire(FOO, &fx.keytab).await.expect_err("stale");
    eprintln!("{err}");
    assert!(
        matches!(err, TicketError::Refused { .. }) && !err.is_retryable(),
        "{err}"
    );
    fx.realm.delete_principal(FOO).expect("delprinc");
    let err = issuer.acquire(FOO, &fx.keytab).await.expect_err("deleted");
    eprintln!("{err}");
    assert!(matches!(err, TicketError::Refused { .. }), "{err}");
    assert!(fx.work_files().is_empty(), "left {:?}", fx.work_files());
}

#[tokio::test]
async fn every_truncation_of_real_ccaches_is_rejected() {
    let fx = fixture();
    let issuer = fx.issuer(60, 3600);
    let t = issuer.acquire(FOO, &fx.keytab).await.expect("acquire");
    let r = issuer.renew(&t).await.expect("renew");
    // The header's KDC offset (KDC minus local clock) is taken out of times.
    // kinit may have recorded one already (the KDC's clock read across a
    // second boundary from the client's): 5 more seconds of it.
    let mut ahead = t.ccache().to_vec();
    assert_eq!(ahead[4..8], [0, 1, 0, 8], "header is one offset field");
    let recorded = i32::from_be_bytes([ahead[8], ahead[9], ahead[10], ahead[11]]);
    ahead[8..12].copy_from_slice(&(recorded + 5).to_be_bytes());
    let shifted = Ticket::parse(Zeroizing::new(ahead)).expect("shifted");
    assert_eq!(shifted.end + Duration::from_secs(5), t.end);

    for full in [t.ccache(), r.ccache()] {
        Ticket::parse(Zeroizing::new(full.to_vec())).expect("full cache");
        for len in 0..full.len() {
            let res = Ticket::parse(Zeroizing::new(full[..len].to_vec()));
            assert!(res.is_err(), "prefix of {len} bytes accepted");
        }
        for i in 0..full.len() {
            for v in [0x00, 0x7f, 0xff] {
                let mut bad = full.to_vec();
                bad[i] = v;
                let _ = Ticket::parse(Zeroizing::new(bad)); // must not panic
            }
        }
    }
}

#[tokio::test]
async fn setup_failures_and_hung_kinit_leave_nothing_behind() {
    let work = tempfile::tempdir().expect("tempdir");
    let dir = work.path().join("tickets");
    fs::create_dir(&dir).expect("mkdir");
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).expect("chmod");
    fs::create_dir(dir.join("kcred-tkt-1-1")).expect("leftover");
    fs::write(dir.join("kcred-tkt-1-1/keytab"), b"old key").expect("leftover");
    fs::write(dir.join("unrelated"), b"keep").expect("unrelated");

    // A kinit that hangs, to exercise the timeout and the kill on drop.
    let hang = work.path().join("hang.sh");
    fs::write(&hang, "#!/bin/sh\nexec sleep 30\n").expect("script");
    fs::set_permissions(&hang, fs::Permissions::from_mode(0o755)).expect("chmod");
    let mut cfg = TicketConfig::new(&dir);
    cfg.kinit = hang;
    cfg.timeout = Duration::from_millis(300);
    let issuer = KdcClient::new(cfg.clone()).expect("issuer");
    let mode = fs::metadata(&dir).expect("stat").permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
    let names: Vec<_> = fs::read_dir(&dir)
        .expect("ls")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names, ["unrelated"]);

    let keytab = keytab_stub();
    let err = issuer.acquire(FOO, &keytab).await.expect_err("hangs");
    assert!(matches!(err, TicketError::KdcUnavailable(_)), "{err}");
    let err = issuer
        .acquire("-k", &keytab)
        .await
        .expect_err("option-like");
    assert!(matches!(err, TicketError::InvalidPrincipal(_)), "{err}");
    cfg.kinit = Path::new("/nonexistent/kinit").to_path_buf();
    let err = KdcClient::new(cfg.clone())
        .expect("issuer")
        .acquire(FOO, &keytab)
        .await
        .expect_err("no kinit");
    assert!(matches!(err, TicketError::Failed(_)), "{err}");
    assert_eq!(fs::read_dir(&dir).expect("ls").count(), 1);

    cfg.lifetime = Duration::ZERO;
    assert!(KdcClient::new(cfg).is_err());
}

/// A syntactically valid keytab; never sent to a KDC.
fn keytab_stub() -> Keytab {
    let mut body = vec![0, 1, 0, 1, b'R', 0, 1, b'a', 0, 0, 0, 1, 0, 0, 0, 0, 1];
    body.extend([0, 18, 0, 4, 1, 2, 3, 4]);
    let mut b = vec![5, 2];
    b.extend((body.len() as i32).to_be_bytes());
    b.extend(body);
    Keytab::parse(Zeroizing::new(b)).expect("stub keytab")
}
