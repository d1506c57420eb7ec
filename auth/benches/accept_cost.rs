//! Cost of verifying one node token in process (keytab decryption, replay
//! cache write) against a throwaway MIT realm. Printed, not asserted: it
//! depends on the disk.
//!
//! `cargo bench -p kcred-auth --bench accept_cost`

use std::process::Stdio;
use std::time::Instant;

use anyhow::{Context, bail};
use kcred_auth::{Acceptor, from_metadata_value};
use kcred_testrealm::Realm;

const PROBE: &str = env!("CARGO_BIN_EXE_kcred-auth-probe");
const NODE: &str = "host/node-a.example.com";
const CONTROLLER: &str = "kcred/controller.example.com";
const SERVICE: &str = "kcred@controller.example.com";
const TOKENS: u32 = 200;

fn main() -> anyhow::Result<()> {
    let realm = Realm::start()?;
    let node_keytab = realm.dir().join("node.keytab");
    let controller_keytab = realm.dir().join("controller.keytab");
    for (principal, keytab) in [(NODE, &node_keytab), (CONTROLLER, &controller_keytab)] {
        realm.add_principal(principal)?;
        realm.extract_keytab(principal, keytab)?;
    }
    // The initiator runs in a child configured for this realm only, as in
    // the tests: the acceptor needs no Kerberos environment.
    let out = realm
        .command(PROBE)
        .args(["token", &node_keytab.display().to_string()])
        .arg(format!("{NODE}@{}", realm.name()))
        .args([SERVICE, &TOKENS.to_string(), "1"])
        .stdin(Stdio::null())
        .output()
        .context("run kcred-auth-probe token")?;
    if !out.status.success() {
        bail!("initiator failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let tokens = String::from_utf8(out.stdout)?
        .lines()
        .map(from_metadata_value)
        .collect::<Result<Vec<_>, _>>()?;
    let acceptor = Acceptor::with_replay_cache(&controller_keytab, &realm.dir().join("rcache"))?;
    let start = Instant::now();
    for token in &tokens {
        acceptor.accept(token)?;
    }
    let elapsed = start.elapsed();
    println!(
        "accept(): {} tokens in {elapsed:?}, {:?} per token, token size {} bytes",
        tokens.len(),
        elapsed / TOKENS,
        tokens.first().map_or(0, Vec::len)
    );
    Ok(())
}
