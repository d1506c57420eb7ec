//! Throwaway etcd clusters for kcred's tests: one or three members on
//! loopback ports, data in a temporary directory, gone when dropped.
//! Members can be killed (`kill -9`) and started again on the same data.
//! Clients may be required to speak TLS with certificates.
//!
//! The `etcd` binary comes from `$KCRED_ETCD` or `PATH` (Debian's
//! `etcd-server`, installed by `scripts/install-deps.sh`).

#![forbid(unsafe_code)]

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a cluster may take to become healthy.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a cluster could not be started.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    /// An I/O step failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The members did not become healthy.
    #[error("etcd not healthy: {reason}\n--- log tail ---\n{log}")]
    NotReady {
        /// Why.
        reason: String,
        /// The members' last log lines.
        log: String,
    },
}

fn io_err(context: impl Into<String>, source: io::Error) -> EtcdError {
    EtcdError::Io {
        context: context.into(),
        source,
    }
}

struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    /// Plain-HTTP `/health` (and metrics), also when clients speak TLS.
    health_port: u16,
    child: Option<Child>,
}

/// TLS for clients: members serve `cert`/`key` and require client
/// certificates signed by `ca` (`--client-cert-auth`). The serving
/// certificate must name 127.0.0.1.
#[derive(Debug, Clone)]
pub struct ClientTls {
    /// CA of client certificates (PEM file).
    pub ca: PathBuf,
    /// The members' serving certificate (PEM file).
    pub cert: PathBuf,
    /// Its key (PEM file).
    pub key: PathBuf,
}

/// A running etcd cluster.
pub struct EtcdCluster {
    dir: tempfile::TempDir,
    members: Vec<Member>,
    token: String,
    tls: Option<ClientTls>,
}

/// The etcd binary to run.
pub fn etcd_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("KCRED_ETCD") {
        return PathBuf::from(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("etcd"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("etcd"))
}

/// The etcdctl binary: `$KCRED_ETCDCTL`, else next to etcd, else `PATH`.
pub fn etcdctl_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("KCRED_ETCDCTL") {
        return PathBuf::from(p);
    }
    let beside = etcd_binary().with_file_name("etcdctl");
    if beside.is_file() {
        return beside;
    }
    PathBuf::from("etcdctl")
}

fn run_tool(mut cmd: Command, what: &str) -> Result<(), EtcdError> {
    let out = cmd
        .env("ETCDCTL_API", "3")
        .output()
        .map_err(|e| io_err(format!("running {what}"), e))?;
    if out.status.success() {
        return Ok(());
    }
    Err(EtcdError::NotReady {
        reason: format!("{what} failed"),
        log: format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    })
}

/// Free loopback ports, each one no other server started by this process
/// gets.
fn free_ports(n: usize) -> Result<Vec<u16>, EtcdError> {
    (0..n)
        .map(|_| kcred_testports::tcp().map_err(|e| io_err("finding a free loopback port", e)))
        .collect()
}

impl EtcdCluster {
    /// Starts `members` members (1 or 3, usually) and waits until every
    /// one reports healthy.
    pub fn start(members: usize) -> Result<EtcdCluster, EtcdError> {
        Self::start_with(members, None)
    }

    /// Like [`EtcdCluster::start`], with TLS (and client certificates) on
    /// the client port when `tls` is given.
    pub fn start_with(members: usize, tls: Option<ClientTls>) -> Result<EtcdCluster, EtcdError> {
        Self::start_from(members, tls, None)
    }

    /// Saves a snapshot of the cluster's data (`etcdctl snapshot save`, as
    /// an operator backs etcd up). Plain-text clusters only.
    pub fn snapshot(&self, path: &Path) -> Result<(), EtcdError> {
        let mut cmd = Command::new(etcdctl_binary());
        cmd.args(["--endpoints", &self.endpoint(0), "snapshot", "save"])
            .arg(path);
        run_tool(cmd, "etcdctl snapshot save")
    }

    /// A new cluster of `members` restored from a snapshot (`etcdctl
    /// snapshot restore` into each member's data directory), as an
    /// operator restores etcd after losing it.
    pub fn restore(snapshot: &Path, members: usize) -> Result<EtcdCluster, EtcdError> {
        Self::start_from(members, None, Some(snapshot))
    }

    fn start_from(
        members: usize,
        tls: Option<ClientTls>,
        snapshot: Option<&Path>,
    ) -> Result<EtcdCluster, EtcdError> {
        let dir = tempfile::Builder::new()
            .prefix("kcred-etcd-")
            .tempdir()
            .map_err(|e| io_err("creating the cluster directory", e))?;
        let ports = free_ports(members * 3)?;
        let members: Vec<Member> = (0..members)
            .map(|i| Member {
                name: format!("m{i}"),
                client_port: ports[3 * i],
                peer_port: ports[3 * i + 1],
                health_port: ports[3 * i + 2],
                child: None,
            })
            .collect();
        let token = dir
            .path()
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "kcred-test".into());
        let mut cluster = EtcdCluster {
            dir,
            members,
            token,
            tls,
        };
        if let Some(snapshot) = snapshot {
            let initial = cluster.initial_cluster();
            for m in &cluster.members {
                let mut cmd = Command::new(etcdctl_binary());
                cmd.arg("snapshot")
                    .arg("restore")
                    .arg(snapshot)
                    .args(["--name", &m.name])
                    .arg("--data-dir")
                    .arg(cluster.dir.path().join(&m.name))
                    .args(["--initial-cluster", &initial])
                    .args(["--initial-cluster-token", &cluster.token])
                    .args([
                        "--initial-advertise-peer-urls",
                        &format!("http://127.0.0.1:{}", m.peer_port),
                    ]);
                run_tool(cmd, "etcdctl snapshot restore")?;
            }
        }
        for i in 0..cluster.members.len() {
            cluster.spawn(i)?;
        }
        cluster.wait_healthy(&(0..cluster.members.len()).collect::<Vec<_>>())?;
        Ok(cluster)
    }

    fn initial_cluster(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn log_path(&self, i: usize) -> PathBuf {
        self.dir
            .path()
            .join(format!("{}.log", self.members[i].name))
    }

    fn spawn(&mut self, i: usize) -> Result<(), EtcdError> {
        let initial = self.initial_cluster();
        let log = self.log_path(i);
        let m = &self.members[i];
        let client = self.endpoint(i);
        let health = format!("http://127.0.0.1:{}", m.health_port);
        let peer = format!("http://127.0.0.1:{}", m.peer_port);
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(|e| io_err(format!("opening {}", log.display()), e))?;
        let err = out
            .try_clone()
            .map_err(|e| io_err("duplicating the log file", e))?;
        let mut cmd = Command::new(etcd_binary());
        if let Some(tls) = &self.tls {
            cmd.arg("--cert-file")
                .arg(&tls.cert)
                .arg("--key-file")
                .arg(&tls.key)
                .arg("--trusted-ca-file")
                .arg(&tls.ca)
                .arg("--client-cert-auth");
        }
        let child = cmd
            .args(["--name", &m.name])
            .arg("--data-dir")
            .arg(self.dir.path().join(&m.name))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-metrics-urls", &health])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &initial])
            .args(["--initial-cluster-token", &self.token])
            .args(["--initial-cluster-state", "new"])
            // Quick elections on loopback keep leader-loss tests short.
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .args(["--logger", "zap", "--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .map_err(|e| io_err(format!("starting {}", etcd_binary().display()), e))?;
        self.members[i].child = Some(child);
        Ok(())
    }

    /// Client URLs of every member (`http://127.0.0.1:PORT`).
    pub fn endpoints(&self) -> Vec<String> {
        (0..self.members.len()).map(|i| self.endpoint(i)).collect()
    }

    /// Client URL of member `i` (https with TLS).
    pub fn endpoint(&self, i: usize) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.members[i].client_port)
    }

    /// The cluster's directory (member data and logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Kills member `i` with SIGKILL and reaps it.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops member `i` without closing its sockets (SIGSTOP): connections
    /// to it open and then hear nothing, as with a host gone silent or cut
    /// off by a partition.
    pub fn freeze(&self, i: usize) {
        self.signal(i, "-STOP");
    }

    /// Lets a frozen member run again (SIGCONT).
    pub fn thaw(&self, i: usize) {
        self.signal(i, "-CONT");
    }

    fn signal(&self, i: usize, signal: &str) {
        if let Some(child) = &self.members[i].child {
            let _ = std::process::Command::new("kill")
                .args([signal, &child.id().to_string()])
                .status();
        }
    }

    /// Starts member `i` again on its data and waits until it is healthy.
    pub fn restart(&mut self, i: usize) -> Result<(), EtcdError> {
        self.kill(i);
        self.spawn(i)?;
        self.wait_healthy(&[i])
    }

    /// Whether member `i` answers `/health` with a leader.
    pub fn healthy(&self, i: usize) -> bool {
        health(self.members[i].health_port).unwrap_or(false)
    }

    fn wait_healthy(&mut self, which: &[usize]) -> Result<(), EtcdError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        for &i in which {
            loop {
                if self.healthy(i) {
                    break;
                }
                let exited = self.members[i]
                    .child
                    .as_mut()
                    .map(|c| matches!(c.try_wait(), Ok(Some(_))))
                    .unwrap_or(true);
                if exited || Instant::now() > deadline {
                    return Err(EtcdError::NotReady {
                        reason: format!(
                            "member {} {}",
                            self.members[i].name,
                            if exited { "exited" } else { "timed out" }
                        ),
                        log: self.log_tail(),
                    });
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(())
    }

    /// The last lines of every member's log.
    pub fn log_tail(&self) -> String {
        let mut out = String::new();
        for i in 0..self.members.len() {
            let text = std::fs::read_to_string(self.log_path(i)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            for line in &lines[lines.len().saturating_sub(10)..] {
                out.push_str(&format!("{}: {line}\n", self.members[i].name));
            }
        }
        out
    }
}

/// GET /health on a member's metrics port: `{"health":"true"}` once it has
/// joined a cluster with a leader.
fn health(port: u16) -> io::Result<bool> {
    let mut s = TcpStream::connect_timeout(
        &(Ipv4Addr::LOCALHOST, port).into(),
        Duration::from_millis(500),
    )?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut body = String::new();
    s.read_to_string(&mut body)?;
    Ok(body.contains("\"health\":\"true\""))
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_three_member_cluster_survives_losing_one_member_and_takes_it_back() {
        let mut c = EtcdCluster::start(3).expect("start");
        assert_eq!(c.endpoints().len(), 3);
        c.kill(0);
        assert!(!c.healthy(0), "a killed member answers");
        // If member 0 led, the other two elect a leader first (longer on a
        // loaded machine); until then /health says false.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let mut quorum = false;
        while !quorum && std::time::Instant::now() < deadline {
            quorum = c.healthy(1) || c.healthy(2);
            if !quorum {
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
        }
        assert!(quorum, "the quorum was lost");
        c.restart(0).expect("restart");
        assert!(c.healthy(0));
    }
}
