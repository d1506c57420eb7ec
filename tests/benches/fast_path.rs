//! The fast path, measured: kcred's real controller and driver processes
//! (Kerberos, TLS, audit, tmpfs mounts) beside floors and peers measured
//! in the same run on the same machine. Prints one table; asserts nothing
//! about time.
//!
//! `cargo build --release --bins && cargo bench -p kcred-tests --bench fast_path`
//! (as root: it mounts tmpfs). `-- --quick` (or `KCRED_BENCH_QUICK=1`)
//! runs a small version in well under a minute: CI's smoke test.
//! `KCRED_BENCH_VOLUMES=N` publishes N volumes on the node instead (the
//! rotation fan-out row with 1,000); `KCRED_BENCH_CALLS=N` makes each of
//! the 64 clients fetch N times in the throughput run (40; more to profile).
//!
//! The process re-executes itself for two helpers: the TLS echo server
//! (`--echo-server DIR`), so its CPU is measured alone, and node load
//! (`--node-load SPEC`), which needs the realm's `KRB5_CONFIG` in its
//! environment from the start.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use kcred_csi_driver::controller_client::{ControllerClient, NodeIdentity};
use kcred_proto::kcred::v1::node_credentials_client::NodeCredentialsClient;
use kcred_proto::kcred::v1::{HeartbeatRequest, PodRef};
use kcred_tests::bench::node_fs::NodeFs;
use kcred_tests::bench::stats::{Table, ms, pct, ratio, us};
use kcred_tests::bench::{echo, floor, load, procstat};
use kcred_tests::procs::{CONTROLLER_HOST, NODE_A, ProcStack};
use kcred_tests::{Kubelet, TestPod};
use serde_json::{Value, json};
use tonic::transport::Channel;

/// How much of everything: `--quick` for CI's smoke run.
#[derive(Clone, Copy)]
struct Size {
    volumes: usize,
    floor: usize,
    rtts: usize,
    clients: usize,
    calls: usize,
    issued: usize,
    heartbeats: usize,
}

const QUICK: Size = Size {
    volumes: 10,
    floor: 10,
    rtts: 50,
    clients: 64,
    calls: 3,
    issued: 64,
    heartbeats: 50,
};

const FULL: Size = Size {
    volumes: 100,
    floor: 100,
    rtts: 1000,
    clients: 64,
    calls: 200,
    issued: 2560,
    heartbeats: 500,
};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let after = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let rt = tokio::runtime::Runtime::new()?;
    if let Some(dir) = after("--echo-server") {
        return rt.block_on(echo_server(Path::new(&dir)));
    }
    if let Some(spec) = after("--node-load") {
        return rt.block_on(node_load(Path::new(&spec)));
    }
    if !nix::unistd::geteuid().is_root() {
        println!("SKIP fast_path: needs root for tmpfs mounts");
        return Ok(());
    }
    let quick = args.iter().any(|a| a == "--quick")
        || std::env::var_os("KCRED_BENCH_QUICK").is_some_and(|v| v != "0");
    let mut size = if quick { QUICK } else { FULL };
    let env_count = |name: &str| std::env::var(name).ok().and_then(|v| v.parse().ok());
    // `KCRED_BENCH_VOLUMES=1000`: the rotation fan-out over more volumes.
    if let Some(n) = env_count("KCRED_BENCH_VOLUMES") {
        size.volumes = n;
    }
    // `KCRED_BENCH_CALLS=N`: fetches per client in the throughput run
    // (longer runs are steadier and long enough to profile).
    if let Some(n) = env_count("KCRED_BENCH_CALLS") {
        size.calls = n;
    }
    rt.block_on(bench(&size, quick))
}

/// A helper process killed on drop.
struct Helper(Child);

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Helper {
    fn pid(&self) -> i32 {
        i32::try_from(self.0.id()).unwrap_or(i32::MAX)
    }
}

fn me() -> anyhow::Result<PathBuf> {
    std::env::current_exe().context("current_exe")
}

async fn echo_server(dir: &Path) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    echo::serve_in(dir, listener).await
}

async fn start_echo(dir: &Path) -> anyhow::Result<(Helper, String, String)> {
    let child = Command::new(me()?)
        .arg("--echo-server")
        .arg(dir)
        .stdin(Stdio::null())
        .spawn()?;
    let helper = Helper(child);
    let (addr, cert) = echo::served_in(dir, Duration::from_secs(20)).await?;
    Ok((helper, addr, cert))
}

/// Runs in a child whose `KRB5_CONFIG` is the realm's: `clients`
/// connections to the controller as a node, `calls` calls each, and prints
/// one JSON line with the outcome.
async fn node_load(spec_path: &Path) -> anyhow::Result<()> {
    let spec: Value = serde_json::from_slice(&std::fs::read(spec_path)?)?;
    let s = |k: &str| spec[k].as_str().unwrap_or_default().to_string();
    let n = |k: &str| spec[k].as_u64().unwrap_or(0) as usize;
    let initiator = std::sync::Arc::new(kcred_auth::Initiator::new(
        Path::new(&s("keytab")),
        &s("principal"),
        &s("service"),
    )?);
    let ca = std::fs::read(s("ca"))?;
    let mut clients = Vec::new();
    for _ in 0..n("clients") {
        let tls = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(&ca))
            .domain_name(s("tls_name"));
        clients.push(ControllerClient::connect(
            &s("endpoint"),
            &s("node"),
            NodeIdentity::kerberos(std::sync::Arc::clone(&initiator)),
            Some(tls),
        )?);
    }
    let pods: Vec<PodRef> = spec["pods"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| PodRef {
            namespace: p["namespace"].as_str().unwrap_or_default().into(),
            name: p["name"].as_str().unwrap_or_default().into(),
            uid: p["uid"].as_str().unwrap_or_default().into(),
            service_account: "default".into(),
        })
        .collect();
    let held: Vec<String> = spec["held"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    let kind = s("kind");
    let prefix = s("prefix");
    let distinct = spec["distinct"].as_bool().unwrap_or(false);
    let call = move |client: ControllerClient, c, i| {
        let pod = pods.get(c % pods.len().max(1)).cloned();
        let held = held.clone();
        let kind = kind.clone();
        let volume = if distinct {
            format!("{prefix}-{c}-{i}")
        } else {
            format!("{prefix}-{c}")
        };
        async move {
            if kind == "heartbeat" {
                client.heartbeat(held).await?;
            } else {
                let pod = pod.context("no pods in the load spec")?;
                client.fetch_bundle(pod, &volume, false).await?;
            }
            anyhow::Ok(())
        }
    };
    // One call per client first, unmeasured here (its connection's
    // handshake and Kerberos token), as the echo's clients connect before
    // theirs are measured; a distinct volume per call makes none, so its
    // count stays exact.
    let warmup = if distinct {
        0
    } else {
        load::concurrent(clients.clone(), 1, call.clone())
            .await?
            .latencies
            .len()
    };
    let me = std::process::id() as i32;
    let cpu0 = procstat::cpu(me)?;
    let out = load::concurrent(clients, n("calls"), call).await?;
    let mut lat = out.latencies.clone();
    println!(
        "{}",
        json!({
            "calls": out.latencies.len(),
            "warmup": warmup,
            "elapsed_us": out.elapsed.as_micros() as u64,
            "p50_us": pct(&mut lat, 0.5).as_micros() as u64,
            "cpu_us": procstat::cpu(me)?.saturating_sub(cpu0).as_micros() as u64,
        })
    );
    Ok(())
}

/// What one node-load run did.
struct NodeLoad {
    /// The calls measured.
    calls: usize,
    /// The calls made before them, one per client, to connect.
    warmup: usize,
    elapsed: Duration,
    /// The load process's own CPU: the client's side of the calls
    /// measured.
    cpu: Duration,
}

impl NodeLoad {
    /// Every call the controller answered, warm-up included.
    fn made(&self) -> usize {
        self.calls + self.warmup
    }

    fn rate(&self) -> f64 {
        self.calls as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

async fn run_node_load(stack: &ProcStack, spec: Value) -> anyhow::Result<NodeLoad> {
    let r = kcred_testrealm::DEFAULT_REALM;
    let mut spec = spec;
    let d = stack.path();
    spec["endpoint"] = json!(format!("https://127.0.0.1:{}", stack.port));
    spec["ca"] = json!(d.join("ca.crt"));
    spec["tls_name"] = json!(CONTROLLER_HOST);
    spec["keytab"] = json!(d.join(format!("host_{NODE_A}.keytab")));
    spec["principal"] = json!(format!("host/{NODE_A}@{r}"));
    spec["service"] = json!(format!("kcred/{CONTROLLER_HOST}@{r}"));
    spec["node"] = json!(NODE_A);
    let path = d.join("load.json");
    std::fs::write(&path, serde_json::to_vec(&spec)?)?;
    let exe = me()?;
    let envs = stack.realm.env();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(exe)
            .arg("--node-load")
            .arg(&path)
            .envs(envs)
            .stderr(Stdio::inherit())
            .output()
    })
    .await??;
    if !out.status.success() {
        bail!("node load failed: {}", String::from_utf8_lossy(&out.stdout));
    }
    let v: Value = serde_json::from_slice(&out.stdout)?;
    Ok(NodeLoad {
        calls: v["calls"].as_u64().unwrap_or(0) as usize,
        warmup: v["warmup"].as_u64().unwrap_or(0) as usize,
        elapsed: Duration::from_micros(v["elapsed_us"].as_u64().unwrap_or(0)),
        cpu: Duration::from_micros(v["cpu_us"].as_u64().unwrap_or(0)),
    })
}

/// The controller's CPU per second of wall time while nothing calls it.
async fn idle_cpu_rate(pid: i32) -> anyhow::Result<f64> {
    let window = Duration::from_secs(2);
    let c0 = procstat::cpu(pid)?;
    tokio::time::sleep(window).await;
    Ok(procstat::cpu(pid)?.saturating_sub(c0).as_secs_f64() / window.as_secs_f64())
}

/// `total` CPU less what the process would have spent idle over `wall`.
fn busy(total: Duration, idle_rate: f64, wall: Duration) -> Duration {
    total.saturating_sub(Duration::from_secs_f64(idle_rate * wall.as_secs_f64()))
}

fn pods_json(pods: &[TestPod]) -> Value {
    pods.iter()
        .map(|p| json!({"namespace": p.namespace, "name": p.name, "uid": p.uid}))
        .collect()
}

/// Volumes in one `FetchBundles` call at most (the controller's limit).
const MAX_BATCH: usize = kcred_proto::limits::MAX_BATCH;

/// The controller's metrics `names` now, in order (0 for one it lacks).
async fn metrics<const N: usize>(metrics_port: u16, names: [&str; N]) -> [f64; N] {
    let body = kcred_tests::ha::scrape(metrics_port).await;
    names.map(|name| kcred_tests::ha::metric(&body, name, &[]).unwrap_or(0.0))
}

/// Kerberos tokens nodes' calls carried so far: (verified, unneeded: sent
/// on a connection already proven).
async fn node_tokens(metrics_port: u16) -> (f64, f64) {
    let body = kcred_tests::ha::scrape(metrics_port).await;
    let count = |used: &str| {
        kcred_tests::ha::metric(
            &body,
            "kcred_node_tokens_total",
            &[&format!("use=\"{used}\"")],
        )
        .unwrap_or(0.0)
    };
    (count("verified"), count("unneeded"))
}

/// The controller's node fetch calls so far: (FetchBundles, FetchBundle).
async fn node_calls(metrics_port: u16) -> (f64, f64) {
    let [batch, single] = metrics(
        metrics_port,
        [
            "kcred_fetch_bundles_seconds_count",
            "kcred_fetch_bundle_seconds_count",
        ],
    )
    .await;
    (batch, single)
}

/// The controller's time in `FetchBundle` calls so far, and their count.
async fn fetch_time(metrics_port: u16) -> (f64, f64) {
    let [sum, count] = metrics(
        metrics_port,
        [
            "kcred_fetch_bundle_seconds_sum",
            "kcred_fetch_bundle_seconds_count",
        ],
    )
    .await;
    (sum, count)
}

fn data_version(target: &Path) -> Option<PathBuf> {
    std::fs::read_link(target.join("..data")).ok()
}

/// `n` bare round trips to the TLS echo, each after `idle` without
/// traffic (none: back to back), each timed.
async fn round_trips(
    echo: &mut NodeCredentialsClient<Channel>,
    n: usize,
    idle: Duration,
) -> anyhow::Result<Vec<Duration>> {
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        if !idle.is_zero() {
            std::thread::sleep(idle);
        }
        let t = Instant::now();
        echo.heartbeat(HeartbeatRequest::default()).await?;
        times.push(t.elapsed());
    }
    Ok(times)
}

async fn bench(size: &Size, quick: bool) -> anyhow::Result<()> {
    let work = tempfile::tempdir()?;
    let w = work.path();
    println!(
        "kcred fast path ({}): {} volumes on one node, {} clients",
        if quick { "quick smoke run" } else { "full run" },
        size.volumes,
        size.clients
    );

    // The node's side (the floor's and kcred's publishes) on a tmpfs of its
    // own; the audit log's floor and the controller on the disk (see
    // `kcred_tests::bench::node_fs`).
    let node_fs = NodeFs::mount()?;

    // Floors and the peer.
    let floor_dir = node_fs.path().join("floor");
    std::fs::create_dir(&floor_dir)?;
    let mut publish_floor = floor::publish(&floor_dir, size.floor)?;
    let mut sync_floor = floor::append_sync(&w.join("append.log"), size.floor)?;
    let (echo_proc, echo_addr, echo_cert) = start_echo(w).await?;
    let mut echo_client = echo::client(&echo_addr, &echo_cert).await?;
    let mut rtt = round_trips(&mut echo_client, size.rtts, Duration::ZERO).await?;
    // A round trip after the processes were idle for a while, as every
    // hop of a publish is: waking idle threads (and, in a virtual machine,
    // idle CPUs) costs what a round trip back to back does not pay.
    let mut rtt_idle = round_trips(&mut echo_client, size.floor, Duration::from_millis(1)).await?;
    // The same three parts as one chain, each after the others as a
    // publish meets them (a round trip, the controller's append, the
    // node's files), rather than each after itself: a step whose threads
    // were just idle for the others' time pays that wake-up, which a
    // publish pays too and the sum of the parts leaves out.
    let chain_dir = floor_dir.join("chain");
    std::fs::create_dir(&chain_dir)?;
    let mut chain = Vec::with_capacity(size.floor);
    {
        let mut publisher = floor::Publisher::new(&chain_dir);
        let mut appender = floor::Appender::open(&w.join("chain.log"))?;
        for _ in 0..size.floor {
            let t = Instant::now();
            echo_client.heartbeat(HeartbeatRequest::default()).await?;
            appender.append_one()?;
            publisher.publish_one()?;
            chain.push(t.elapsed());
        }
    }
    let mut echo_clients = Vec::new();
    for _ in 0..size.clients {
        echo_clients.push(echo::client(&echo_addr, &echo_cert).await?);
    }
    let echo_cpu0 = procstat::cpu(echo_proc.pid())?;
    // Nothing else runs in this process meanwhile: its CPU is the clients'.
    let own = std::process::id() as i32;
    let echo_client_cpu0 = procstat::cpu(own)?;
    let echo_load = load::concurrent(echo_clients, size.calls * 4, |mut c, _, _| async move {
        c.heartbeat(HeartbeatRequest::default()).await?;
        anyhow::Ok(())
    })
    .await?;
    let echo_cpu = procstat::cpu(echo_proc.pid())?.saturating_sub(echo_cpu0);
    let echo_cpu_per_call = echo_cpu / echo_load.latencies.len().max(1) as u32;
    let echo_client_cpu_per_call = procstat::cpu(own)?.saturating_sub(echo_client_cpu0)
        / echo_load.latencies.len().max(1) as u32;
    drop(echo_proc);

    // kcred: the real processes.
    let node_dir = node_fs.path().join("node");
    std::fs::create_dir(&node_dir)?;
    let mut stack = ProcStack::start_with_metrics_and_node_dir("", &node_dir).await?;
    let metrics_port = stack.metrics_port.context("controller metrics port")?;
    let ctrl_pid = stack
        .controller
        .as_ref()
        .and_then(|p| p.pid())
        .map(|p| p.as_raw())
        .context("controller pid")?;
    let driver_pid = stack
        .driver
        .as_ref()
        .and_then(|p| p.pid())
        .map(|p| p.as_raw())
        .context("driver pid")?;
    let pods = TestPod::web_replicas(size.volumes + 1, NODE_A);
    stack.set_pod_list(&pods).await?;
    // The first publish extracts the keytab; the rest are warm.
    stack.kubelet().publish(&pods[0], "kcred").await?;
    let mut warm = Vec::with_capacity(size.volumes);
    let mut targets = Vec::with_capacity(size.volumes);
    let in_controller0 = fetch_time(metrics_port).await;
    let (ctrl_cpu0, driver_cpu0) = (
        procstat::cpu_fine(ctrl_pid)?,
        procstat::cpu_fine(driver_pid)?,
    );
    for p in &pods[1..] {
        let t = Instant::now();
        targets.push(stack.kubelet().publish(p, "kcred").await?);
        warm.push(t.elapsed());
    }
    // What a warm publish cost each process, and how much of it the
    // controller's side of its fetch took.
    let per_publish =
        |cpu: Duration, cpu0: Duration| cpu.saturating_sub(cpu0) / (pods.len() - 1).max(1) as u32;
    let (ctrl_publish_cpu, driver_publish_cpu) = (
        per_publish(procstat::cpu_fine(ctrl_pid)?, ctrl_cpu0),
        per_publish(procstat::cpu_fine(driver_pid)?, driver_cpu0),
    );
    let in_controller = {
        let (sum, count) = fetch_time(metrics_port).await;
        let (n, secs) = (count - in_controller0.1, sum - in_controller0.0);
        Duration::from_secs_f64(if n > 0.0 { secs / n } else { 0.0 })
    };
    let mut republish = Vec::with_capacity(size.volumes);
    for p in &pods[1..] {
        let t = Instant::now();
        stack.kubelet().publish(p, "kcred").await?;
        republish.push(t.elapsed());
    }
    let mut stat = floor::stat(&targets)?;
    // The bare CSI round trip on the same socket: a call the driver
    // answers without looking at anything.
    let mut csi_call = Vec::with_capacity(size.volumes);
    for _ in 0..size.volumes {
        let t = Instant::now();
        stack
            .kubelet()
            .identity()
            .get_plugin_info(kcred_proto::csi::v1::GetPluginInfoRequest {})
            .await?;
        csi_call.push(t.elapsed());
    }
    let driver_rss = procstat::rss(driver_pid)?;
    let (driver_anon, driver_file) = procstat::rss_parts(driver_pid)?;
    let driver_threads = procstat::threads(driver_pid)?;

    // Fetch throughput and CPU: warm fetches of one volume per client.
    let fetch_spec = |calls: usize, prefix: &str, distinct: bool| {
        json!({"kind": "fetch", "clients": size.clients, "calls": calls,
               "pods": pods_json(&pods[1..]), "prefix": prefix, "distinct": distinct})
    };
    run_node_load(&stack, fetch_spec(1, "bench", false)).await?;
    // What the controller spends with no calls (reloads, lease checks, the
    // driver's heartbeats) is not charged to the calls measured.
    let idle = idle_cpu_rate(ctrl_pid).await?;
    let tokens0 = node_tokens(metrics_port).await;
    let (cpu0, t0) = (procstat::cpu(ctrl_pid)?, Instant::now());
    let fetches = run_node_load(&stack, fetch_spec(size.calls, "bench", false)).await?;
    let fetch_cpu = busy(
        procstat::cpu(ctrl_pid)?.saturating_sub(cpu0),
        idle,
        t0.elapsed(),
    ) / fetches.made().max(1) as u32;
    let tokens1 = node_tokens(metrics_port).await;
    let (verified, unneeded) = (tokens1.0 - tokens0.0, tokens1.1 - tokens0.1);

    // Issued records: memory per record, then heartbeat CPU with them.
    let rss0 = procstat::rss(ctrl_pid)?;
    let per_client = size.issued.div_ceil(size.clients);
    let issued = run_node_load(&stack, fetch_spec(per_client, "issued", true)).await?;
    let rss1 = procstat::rss(ctrl_pid)?;
    let total_issued = issued.calls + size.volumes + 1 + size.clients;
    let held: Vec<String> = pods[1..]
        .iter()
        .map(|p| Kubelet::volume_id(p, "kcred"))
        .collect();
    let (cpu0, t0) = (procstat::cpu(ctrl_pid)?, Instant::now());
    let hb = run_node_load(
        &stack,
        json!({"kind": "heartbeat", "clients": 1, "calls": size.heartbeats, "held": held}),
    )
    .await?;
    let hb_cpu = busy(
        procstat::cpu(ctrl_pid)?.saturating_sub(cpu0),
        idle,
        t0.elapsed(),
    ) / hb.made().max(1) as u32;

    // Rotation: every volume on the node rewritten with the new kvno.
    let before: Vec<Option<PathBuf>> = targets.iter().map(|t| data_version(t)).collect();
    let calls0 = node_calls(metrics_port).await;
    let (rot_ctrl0, rot_driver0) = (procstat::cpu(ctrl_pid)?, procstat::cpu(driver_pid)?);
    let t = Instant::now();
    let out = stack.kcredctl(
        kcred_tests::procs::OPERATOR,
        &["rotate", "keytab", "HTTP/web.example.com", "--wait", "0"],
    );
    if !out.status.success() {
        bail!("rotate: {}", String::from_utf8_lossy(&out.stderr));
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    let reached = loop {
        let done = targets
            .iter()
            .zip(&before)
            .filter(|(t, b)| data_version(t) != **b)
            .count();
        if done == targets.len() {
            break Some(t.elapsed());
        }
        if Instant::now() > deadline {
            println!(
                "rotation reached only {done} of {} volumes in 120 s",
                targets.len()
            );
            break None;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let driver_rss_rotated = procstat::rss(driver_pid)?;
    let rotated_threads = procstat::threads(driver_pid)?;
    let calls1 = node_calls(metrics_port).await;
    let (batch_calls, single_calls) = (calls1.0 - calls0.0, calls1.1 - calls0.1);
    let rot_ctrl_cpu = procstat::cpu(ctrl_pid)?.saturating_sub(rot_ctrl0);
    let rot_driver_cpu = procstat::cpu(driver_pid)?.saturating_sub(rot_driver0);
    // The rotation's writes ran on the driver's blocking threads, which
    // stay for its keep-alive and then exit: the node's steady state is
    // once it runs the threads it ran before the rotation again.
    let settle_start = Instant::now();
    while procstat::threads(driver_pid)? > driver_threads
        && settle_start.elapsed() < Duration::from_secs(10)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let settled_after = settle_start.elapsed();
    let driver_rss_settled = procstat::rss(driver_pid)?;
    let settled_threads = procstat::threads(driver_pid)?;

    // The table.
    let (pf50, pf99) = (pct(&mut publish_floor, 0.5), pct(&mut publish_floor, 0.99));
    let (sf50, sf99) = (pct(&mut sync_floor, 0.5), pct(&mut sync_floor, 0.99));
    let (r50, r99) = (pct(&mut rtt, 0.5), pct(&mut rtt, 0.99));
    let (audited50, audited99) = (pf50 + sf50 + r50, pf99 + sf99 + r99);
    let (chain50, chain99) = (pct(&mut chain, 0.5), pct(&mut chain, 0.99));
    let idle50 = pct(&mut rtt_idle, 0.5);
    let (w50, w99) = (pct(&mut warm, 0.5), pct(&mut warm, 0.99));
    let rp50 = pct(&mut republish, 0.5);
    let st50 = pct(&mut stat, 0.5);
    let csi50 = pct(&mut csi_call, 0.5);
    println!();
    let table = Table::start();
    table.row(
        "warm publish p50 / p99",
        &format!("{} / {}", ms(w50), ms(w99)),
        &format!("{} / {} audited floor", ms(audited50), ms(audited99)),
        &format!(
            "{} / {}",
            ratio(w50.as_secs_f64(), audited50.as_secs_f64()),
            ratio(w99.as_secs_f64(), audited99.as_secs_f64())
        ),
    );
    // Kubelet reaches any CSI driver through one gRPC call: the floor
    // with it, beside the floor (which leaves it out).
    let with_csi50 = audited50 + csi50;
    table.row(
        "  the same p50 beside that floor plus a bare CSI call (GetPluginInfo)",
        &ms(w50),
        &format!("{} + {}", ms(audited50), ms(csi50)),
        &ratio(w50.as_secs_f64(), with_csi50.as_secs_f64()),
    );
    table.row(
        "  the same p50 / p99 beside the floor's parts done as one chain",
        &format!("{} / {}", ms(w50), ms(w99)),
        &format!("{} / {} chained floor", ms(chain50), ms(chain99)),
        &format!(
            "{} / {}",
            ratio(w50.as_secs_f64(), chain50.as_secs_f64()),
            ratio(w99.as_secs_f64(), chain99.as_secs_f64())
        ),
    );
    table.row(
        "  floor parts p50: mount+write+rename / fdatasync / TLS echo",
        "",
        &format!("{} / {} / {}", ms(pf50), ms(sf50), ms(r50)),
        "",
    );
    table.row(
        "  TLS echo p50: back to back / after 1 ms idle",
        "",
        &format!("{} / {}", ms(r50), ms(idle50)),
        &ratio(idle50.as_secs_f64(), r50.as_secs_f64()),
    );
    table.row(
        "  of which in the controller (its mean FetchBundle time)",
        &ms(in_controller),
        &format!("{} fdatasync p50", ms(sf50)),
        &ratio(in_controller.as_secs_f64(), sf50.as_secs_f64()),
    );
    table.row(
        "  CPU per warm publish: controller / driver",
        &format!("{} / {}", ms(ctrl_publish_cpu), ms(driver_publish_cpu)),
        "",
        "",
    );
    table.row(
        "kubelet republish of an unchanged volume, p50",
        &ms(rp50),
        &format!("{} stat", ms(st50)),
        &ratio(rp50.as_secs_f64(), st50.as_secs_f64()),
    );
    table.row(
        "  the same beside a bare CSI call (GetPluginInfo) + stat",
        &ms(rp50),
        &format!("{} + {}", ms(csi50), ms(st50)),
        &ratio(rp50.as_secs_f64(), (csi50 + st50).as_secs_f64()),
    );
    table.row(
        &format!("authenticated fetches/s, {} clients", size.clients),
        &format!("{:.0}", fetches.rate()),
        &format!("{:.0} echo", echo_load.rate()),
        &ratio(fetches.rate(), echo_load.rate()),
    );
    table.row(
        "  Kerberos tokens they carried: verified / unneeded",
        &format!("{verified:.0} / {unneeded:.0}"),
        &format!("{} connections, {} fetches", size.clients, fetches.calls),
        &ratio(verified + unneeded, size.clients as f64),
    );
    table.row(
        "controller CPU per warm fetch",
        &us(fetch_cpu),
        &format!("{} echo", us(echo_cpu_per_call)),
        &ratio(fetch_cpu.as_secs_f64(), echo_cpu_per_call.as_secs_f64()),
    );
    let client_cpu = fetches.cpu / fetches.calls.max(1) as u32;
    table.row(
        "  the node client's CPU per fetch (the driver's client)",
        &us(client_cpu),
        &format!("{} echo client", us(echo_client_cpu_per_call)),
        &ratio(
            client_cpu.as_secs_f64(),
            echo_client_cpu_per_call.as_secs_f64(),
        ),
    );
    table.row(
        &format!(
            "heartbeat CPU ({} held) with {total_issued} issued records",
            held.len()
        ),
        &us(hb_cpu),
        &format!("{} echo", us(echo_cpu_per_call)),
        &ratio(hb_cpu.as_secs_f64(), echo_cpu_per_call.as_secs_f64()),
    );
    table.row(
        &format!("rotation reaching {} volumes on a node", targets.len()),
        &reached.map(ms).unwrap_or_else(|| "not reached".into()),
        &format!(
            "{} publish floor × {}",
            ms(pf50 * targets.len() as u32),
            targets.len()
        ),
        &reached
            .map(|d| ratio(d.as_secs_f64(), (pf50 * targets.len() as u32).as_secs_f64()))
            .unwrap_or_default(),
    );
    // One credential (HTTP/web.example.com for every volume, the first
    // pod's included): the fewest calls are one per MAX_BATCH volumes.
    let holders = targets.len() + 1;
    let fewest = holders.div_ceil(MAX_BATCH);
    table.row(
        "  node calls it took: FetchBundles / FetchBundle",
        &format!("{batch_calls:.0} / {single_calls:.0}"),
        &format!("1 distinct credential, {holders} volumes: {fewest} × ≤{MAX_BATCH}"),
        &ratio(batch_calls + single_calls, fewest as f64),
    );
    table.row(
        "  CPU while it ran: controller / driver",
        &format!("{} / {}", ms(rot_ctrl_cpu), ms(rot_driver_cpu)),
        "-",
        "-",
    );
    table.row(
        &format!(
            "controller memory per issued volume ({} more)",
            issued.calls
        ),
        &format!(
            "{:.1} KiB",
            rss1.saturating_sub(rss0) as f64 / 1024.0 / issued.calls.max(1) as f64
        ),
        "-",
        "-",
    );
    table.row(
        &format!("driver RSS with {} volumes", size.volumes),
        &format!("{:.1} MiB", driver_rss as f64 / 1048576.0),
        "-",
        "-",
    );
    table.row(
        "  of which heap and stacks / mapped files (binary, libraries)",
        &format!(
            "{:.1} / {:.1} MiB",
            driver_anon as f64 / 1048576.0,
            driver_file as f64 / 1048576.0
        ),
        &format!("{driver_threads} threads"),
        "-",
    );
    table.row(
        "  as the rotation's last volume is written",
        &format!("{:.1} MiB", driver_rss_rotated as f64 / 1048576.0),
        &format!("{rotated_threads} threads"),
        "-",
    );
    table.row(
        &format!(
            "  {:.1} s later, its idle blocking threads gone",
            settled_after.as_secs_f64()
        ),
        &format!("{:.1} MiB", driver_rss_settled as f64 / 1048576.0),
        &format!("{settled_threads} threads"),
        "-",
    );
    println!(
        "\nThe node's side (the floor's publishes and the driver's kubelet and \
         state directories) on a tmpfs of its own; the controller's store and \
         audit log and the fdatasync floor on {}.",
        w.display()
    );
    kcred_tests::unmount_volumes(&node_dir.join("kubelet"));
    Ok(())
}
