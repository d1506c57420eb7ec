//! Running the realm's daemons: start, readiness, stop, and reaping.

use super::*;

impl Realm {
    /// Stops the KDC but leaves kadmind running, to test behaviour during a
    /// KDC outage. Does nothing if it is already stopped.
    pub fn stop_kdc(&mut self) -> Result<(), RealmError> {
        if let Some(child) = self.kdc.take() {
            stop_child(child).map_err(|e| io_err("stopping krb5kdc", e))?;
        }
        Ok(())
    }

    /// Starts the KDC again on the same port after [`Realm::stop_kdc`]
    /// (no-op if it is running). Fails if the port was taken meanwhile.
    pub fn start_kdc(&mut self) -> Result<(), RealmError> {
        if self.kdc.is_some() {
            return Ok(());
        }
        let child = self.spawn_daemon("krb5kdc", &["-n"], self.kdc_addr())?;
        self.kdc = Some(child);
        Ok(())
    }

    /// Stops kadmind but leaves the KDC running, to test behaviour during
    /// an admin-server outage. Does nothing if it is already stopped.
    pub fn stop_kadmind(&mut self) -> Result<(), RealmError> {
        if let Some(child) = self.kadmind.take() {
            stop_child(child).map_err(|e| io_err("stopping kadmind", e))?;
        }
        Ok(())
    }

    /// Starts kadmind on its port (no-op if it is running).
    pub fn start_kadmind(&mut self) -> Result<(), RealmError> {
        if self.kadmind.is_some() {
            return Ok(());
        }
        let child = self.spawn_daemon("kadmind", &["-nofork"], self.kadmind_addr())?;
        self.kadmind = Some(child);
        Ok(())
    }

    /// Spawns a daemon and waits until it has bound its ports: both daemons
    /// write their pid file only after network setup succeeded, and exit when
    /// a port is taken, so "pid file names our child and the port accepts" is
    /// a reliable readiness test.
    fn spawn_daemon(
        &self,
        daemon: &'static str,
        args: &[&str],
        addr: SocketAddr,
    ) -> Result<Child, RealmError> {
        let pid_file = self.dir().join(format!("{daemon}.pid"));
        let stderr_file = self.dir().join(format!("{daemon}.stderr"));
        let log_file = self.dir().join(match daemon {
            "krb5kdc" => "kdc.log",
            _ => "kadmind.log",
        });
        match fs::remove_file(&pid_file) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(io_err(format!("removing {}", pid_file.display()), e));
            }
            _ => {}
        }
        let stderr = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&stderr_file)
            .map_err(|e| io_err(format!("opening {}", stderr_file.display()), e))?;
        let mut cmd = self.tool(daemon);
        cmd.args(args)
            .arg("-P")
            .arg(&pid_file)
            .stdout(Stdio::null())
            .stderr(stderr);
        let mut child = cmd
            .spawn()
            .map_err(|e| io_err(format!("spawning {daemon}"), e))?;
        let log = || log_tail(&[&log_file, &stderr_file]);

        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => {
                    return Err(RealmError::DaemonStart {
                        daemon,
                        reason: format!("exited with {status}"),
                        log: log(),
                    });
                }
                Ok(None) => {}
                Err(e) => {
                    let _ = stop_child(child);
                    return Err(io_err(format!("waiting for {daemon}"), e));
                }
            }
            let pid_ok = fs::read_to_string(&pid_file)
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok())
                == Some(child.id());
            if pid_ok && TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(child);
            }
            if Instant::now() >= deadline {
                let _ = stop_child(child);
                return Err(RealmError::DaemonStart {
                    daemon,
                    reason: format!("not listening on {addr} after {READY_TIMEOUT:?}"),
                    log: log(),
                });
            }
            thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Realm {
    fn drop(&mut self) {
        for child in [self.kdc.take(), self.kadmind.take()].into_iter().flatten() {
            let _ = stop_child(child);
        }
    }
}

/// Kills and reaps a daemon so it leaves neither an orphan nor a zombie.
pub(crate) fn stop_child(mut child: Child) -> io::Result<()> {
    if child.try_wait()?.is_none() {
        child.kill()?;
    }
    child.wait().map(drop)
}

/// Last lines of the given files, for daemon start-up errors.
pub(crate) fn log_tail(files: &[&Path]) -> String {
    let mut out = String::new();
    for file in files {
        if let Ok(text) = fs::read_to_string(file) {
            let lines: Vec<&str> = text.lines().collect();
            let start = lines.len().saturating_sub(15);
            for line in &lines[start..] {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}
