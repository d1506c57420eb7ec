//! Readiness checks: what a daemon needs before it can do its job, each
//! named, so a failing `/readyz` says which one is missing.

use std::fmt::Display;

/// One readiness condition and whether it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// Short stable name (`store`, `audit`, `pods`), shown in `/readyz`.
    pub name: &'static str,
    /// Why it does not hold; `None` when it does.
    pub failure: Option<String>,
}

impl Check {
    /// A condition that holds.
    pub fn ok(name: &'static str) -> Check {
        Check {
            name,
            failure: None,
        }
    }

    /// A condition that does not hold, and why.
    pub fn failing(name: &'static str, reason: impl Into<String>) -> Check {
        Check {
            name,
            failure: Some(reason.into()),
        }
    }

    /// From the outcome of probing the condition.
    pub fn from_result<E: Display>(name: &'static str, result: Result<(), E>) -> Check {
        match result {
            Ok(()) => Check::ok(name),
            Err(e) => Check::failing(name, e.to_string()),
        }
    }

    /// Whether the condition holds.
    pub fn is_ok(&self) -> bool {
        self.failure.is_none()
    }
}

/// The `/readyz` verdict and body, in the Kubernetes API server's format
/// (`[+]name ok`, `[-]name failed: reason`, then a summary line).
pub fn report(checks: &[Check]) -> (bool, String) {
    let mut body = String::new();
    for c in checks {
        match &c.failure {
            None => body.push_str(&format!("[+]{} ok\n", c.name)),
            Some(why) => body.push_str(&format!("[-]{} failed: {why}\n", c.name)),
        }
    }
    let ready = checks.iter().all(Check::is_ok);
    body.push_str(if ready {
        "readyz check passed\n"
    } else {
        "readyz check failed\n"
    });
    (ready, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_failing_check_makes_the_daemon_unready_and_is_named() {
        let (ready, body) = report(&[
            Check::ok("store"),
            Check::from_result("audit", Err::<(), _>("audit.log: No such file")),
        ]);
        assert!(!ready);
        assert_eq!(
            body,
            "[+]store ok\n[-]audit failed: audit.log: No such file\nreadyz check failed\n"
        );
    }

    #[test]
    fn no_checks_means_ready() {
        assert_eq!(report(&[]), (true, "readyz check passed\n".to_string()));
    }
}
