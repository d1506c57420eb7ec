//! `kcred-auth-probe`: runs either half of kcred's node authentication from
//! the command line, to check a node's or the controller's keytab by hand,
//! and so this crate's tests can run the initiator in a child process with
//! its own realm's `KRB5_CONFIG` (the only way MIT lets one choose a KDC).
//!
//! ```text
//! kcred-auth-probe token KEYTAB PRINCIPAL SERVICE [COUNT [THREADS]]
//!     prints COUNT (default 1) metadata values "Negotiate <base64>", one a
//!     line, made by THREADS (default 1) threads sharing one initiator
//! kcred-auth-probe accept KEYTAB [REPLAY_CACHE_FILE]
//!     reads metadata values from stdin, one a line, and prints for each
//!     "ok <principal>" or "refused <reason>"; exits 1 if any was refused
//! ```

use std::io::{BufRead, Write};
use std::path::Path;
use std::process::ExitCode;

use kcred_auth::{Acceptor, Initiator, from_metadata_value, to_metadata_value};

const USAGE: &str = "usage: kcred-auth-probe token KEYTAB PRINCIPAL SERVICE [COUNT [THREADS]]\n       \
                     kcred-auth-probe accept KEYTAB [REPLAY_CACHE_FILE] < metadata-values";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args.as_slice() {
        ["token", keytab, principal, service] => token(keytab, principal, service, "1", "1"),
        ["token", keytab, principal, service, count] => {
            token(keytab, principal, service, count, "1")
        }
        ["token", keytab, principal, service, count, threads] => {
            token(keytab, principal, service, count, threads)
        }
        ["accept", keytab] => accept(keytab, None),
        ["accept", keytab, rcache] => accept(keytab, Some(rcache)),
        _ => Err(USAGE.to_string()),
    };
    match result {
        Ok(code) => code,
        Err(message) => {
            eprintln!("kcred-auth-probe: {message}");
            ExitCode::from(2)
        }
    }
}

fn token(
    keytab: &str,
    principal: &str,
    service: &str,
    count: &str,
    threads: &str,
) -> Result<ExitCode, String> {
    let number = |what: &str, s: &str| {
        s.parse::<usize>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("{what} must be a positive number: {s:?}"))
    };
    let count = number("COUNT", count)?;
    let threads = number("THREADS", threads)?.min(count);
    let initiator =
        Initiator::new(Path::new(keytab), principal, service).map_err(|e| e.to_string())?;
    // Each thread makes its share; all share one initiator, as a driver does.
    let batches: Vec<Result<Vec<String>, String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|i| {
                let n = count / threads + usize::from(i < count % threads);
                let initiator = &initiator;
                scope.spawn(move || {
                    (0..n)
                        .map(|_| initiator.token().map(|t| to_metadata_value(&t)))
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|e| e.to_string())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("a thread panicked".into())))
            .collect()
    });
    let mut out = std::io::stdout().lock();
    for batch in batches {
        for value in batch? {
            writeln!(out, "{value}").map_err(|e| e.to_string())?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn accept(keytab: &str, rcache: Option<&str>) -> Result<ExitCode, String> {
    let acceptor = match rcache {
        None => Acceptor::new(Path::new(keytab)),
        Some(rc) => Acceptor::with_replay_cache(Path::new(keytab), Path::new(rc)),
    }
    .map_err(|e| e.to_string())?;
    let mut out = std::io::stdout().lock();
    let mut all_ok = true;
    for line in std::io::stdin().lock().lines() {
        let line = line.map_err(|e| format!("reading stdin: {e}"))?;
        let verdict = from_metadata_value(&line).and_then(|t| acceptor.accept(&t));
        match verdict {
            Ok(principal) => writeln!(out, "ok {principal}"),
            Err(e) => {
                all_ok = false;
                writeln!(out, "refused {e}")
            }
        }
        .map_err(|e| e.to_string())?;
    }
    Ok(if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
