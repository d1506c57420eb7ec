//! The scale simulation: 10,000 nodes, 100,000 pods, 1,000 distinct
//! credentials behind a KDC budget of 100/s, on one real controller
//! process (MIT KDC and kadmind, TLS, audit, store). Simulated nodes speak
//! the real node API on loopback, each over its own TLS connection with
//! its own client certificate (see `kcred_tests::scale`); they mount
//! nothing (a fetch is the controller's side of a publish). Prints each
//! phase beside its floor or goal; asserts nothing about time.
//!
//! `cargo bench -p kcred-tests --bench scale` (release build; no root
//! needed). `-- --quick` (or `KCRED_BENCH_QUICK=1`) runs a small version
//! in well under a minute: CI's smoke run. `--nodes N --pods N
//! --credentials N --rate N --window SECS` change the shape.
//!
//! CPU is read from `/proc` in 10 ms ticks: the quick run's per-call
//! figures are coarse (it checks the bench runs, not how fast).
//!
//! The process re-executes itself as the TLS echo server
//! (`--echo-server DIR`), so the floor's CPU is measured alone.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use kcred_csi_driver::controller_client::{ControllerClient, HeartbeatStream};
use kcred_proto::kcred::v1::HeartbeatRequest;
use kcred_tests::bench::stats::{Table, ms, pct, ratio, us};
use kcred_tests::bench::{echo, load, procstat};
use kcred_tests::scale::{ScaleConfig, ScaleStack, SimNode};
use kcred_tests::storm::kadmind_budget;
use tokio::sync::Semaphore;

const FULL: ScaleConfig = ScaleConfig {
    nodes: 10_000,
    pods: 100_000,
    credentials: 1_000,
    rate: 100,
    burst: 10,
    heartbeat_every: Duration::from_secs(10),
};

const QUICK: ScaleConfig = ScaleConfig {
    nodes: 100,
    pods: 1_000,
    credentials: 20,
    rate: 10,
    burst: 5,
    heartbeat_every: Duration::from_secs(10),
};

/// Nodes connecting (and making their first, authenticating call) at once.
const JOINING_AT_ONCE: usize = 32;
/// Fetches in flight at once (every node's pods start together, bounded).
const FETCHES_AT_ONCE: usize = 2_000;
/// Tries of a fetch refused for a transient reason (the driver retries).
const FETCH_TRIES: usize = 40;
/// The controller's RSS goal.
const RSS_GOAL: u64 = 300 * 1024 * 1024;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let after = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let rt = tokio::runtime::Runtime::new()?;
    raise_fd_limit();
    if let Some(dir) = after("--echo-server") {
        return rt.block_on(echo_server(Path::new(&dir)));
    }
    let quick = args.iter().any(|a| a == "--quick")
        || std::env::var_os("KCRED_BENCH_QUICK").is_some_and(|v| v != "0");
    let mut cfg = if quick { QUICK } else { FULL };
    let num = |flag: &str| -> anyhow::Result<Option<usize>> {
        after(flag)
            .map(|v| v.parse().with_context(|| format!("{flag} {v}")))
            .transpose()
    };
    cfg.nodes = num("--nodes")?.unwrap_or(cfg.nodes).max(1);
    cfg.pods = num("--pods")?.unwrap_or(cfg.pods).max(1);
    cfg.credentials = num("--credentials")?.unwrap_or(cfg.credentials).max(1);
    cfg.rate = num("--rate")?.map_or(cfg.rate, |r| r.max(1) as u32);
    let window =
        Duration::from_secs(num("--window")?.unwrap_or(if quick { 10 } else { 30 }) as u64);
    rt.block_on(bench(&cfg, window, quick))
}

/// Each simulated node holds a socket here: lift the soft limit to the
/// hard one.
fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

/// A helper process killed on drop.
struct Helper(Child);

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn echo_server(dir: &Path) -> anyhow::Result<()> {
    // Queued as the controller's are: the same 10,000 connections join.
    let listener = kcred_controller::listener::bind(([127, 0, 0, 1], 0).into())?;
    echo::serve_in(dir, listener).await
}

/// The peer: the TLS echo in its own process, so its CPU is measured
/// alone.
struct EchoPeer {
    _process: Helper,
    pid: i32,
    addr: String,
    cert: String,
}

impl EchoPeer {
    async fn start(dir: &Path) -> anyhow::Result<Self> {
        let exe: PathBuf = std::env::current_exe().context("current_exe")?;
        let child = Command::new(exe)
            .arg("--echo-server")
            .arg(dir)
            .stdin(Stdio::null())
            .spawn()?;
        let process = Helper(child);
        let pid = i32::try_from(process.0.id()).unwrap_or(i32::MAX);
        let (addr, cert) = echo::served_in(dir, Duration::from_secs(20)).await?;
        Ok(EchoPeer {
            _process: process,
            pid,
            addr,
            cert,
        })
    }

    /// CPU per empty unary call, `calls` calls back to back over 16
    /// connections: the cheapest a call gets.
    async fn cpu_per_call(&self, calls: usize) -> anyhow::Result<Duration> {
        let mut clients = Vec::new();
        for _ in 0..16 {
            let mut c = echo::client(&self.addr, &self.cert).await?;
            c.heartbeat(HeartbeatRequest::default()).await?;
            clients.push(c);
        }
        let cpu0 = procstat::cpu(self.pid)?;
        let out = load::concurrent(clients, calls.div_ceil(16), |mut c, _, _| async move {
            c.heartbeat(HeartbeatRequest::default()).await?;
            anyhow::Ok(())
        })
        .await?;
        let cpu = procstat::cpu(self.pid)?.saturating_sub(cpu0);
        Ok(cpu / out.latencies.len().max(1) as u32)
    }

    /// The echo's memory under the controller's connection and call
    /// pattern, the transport's share of the controller's growth: RSS
    /// before, after one connection per node made its first call
    /// (`JOINING_AT_ONCE` at a time), and after each connection carried
    /// that node's calls (`FETCHES_AT_ONCE` in flight, a node's calls
    /// together as the fetch phase sends them).
    async fn memory(&self, calls_per_node: &[usize]) -> anyhow::Result<EchoMemory> {
        let before = procstat::rss(self.pid)?;
        let gate = Arc::new(Semaphore::new(JOINING_AT_ONCE));
        let mut set = tokio::task::JoinSet::new();
        for _ in calls_per_node {
            let (gate, addr, cert) = (Arc::clone(&gate), self.addr.clone(), self.cert.clone());
            set.spawn(async move {
                let _permit = gate.acquire_owned().await;
                let mut c = echo::client(&addr, &cert).await?;
                c.heartbeat(HeartbeatRequest::default()).await?;
                anyhow::Ok(c)
            });
        }
        let mut clients = Vec::new();
        while let Some(c) = set.join_next().await {
            clients.push(c??);
        }
        let joined = procstat::rss(self.pid)?;
        let gate = Arc::new(Semaphore::new(FETCHES_AT_ONCE));
        let mut set = tokio::task::JoinSet::new();
        for (c, &calls) in clients.iter().zip(calls_per_node) {
            for i in 0..calls {
                let (gate, mut c) = (Arc::clone(&gate), c.clone());
                let req = HeartbeatRequest {
                    node_name: format!("volume-{i}"),
                    volume_ids: vec![],
                };
                set.spawn(async move {
                    let _permit = gate.acquire_owned().await;
                    c.heartbeat(req).await.map(drop)
                });
            }
        }
        while let Some(done) = set.join_next().await {
            done??;
        }
        Ok(EchoMemory {
            before,
            joined,
            called: procstat::rss(self.pid)?,
        })
    }

    /// The heartbeat phase's pattern answered by the echo: one connection
    /// per node, each sending that node's request every `every` over
    /// `window`, as unary calls or as messages on one stream per node.
    /// Its CPU per call includes what idle connections woken one call at
    /// a time cost, which calls back to back hide.
    async fn paced(
        &self,
        requests: Vec<HeartbeatRequest>,
        every: Duration,
        window: Duration,
        how: Carried,
    ) -> anyhow::Result<Paced> {
        let mut unary = Vec::new();
        let mut streams = Vec::new();
        for req in requests {
            let mut c = echo::client(&self.addr, &self.cert).await?;
            match how {
                Carried::Unary => {
                    c.heartbeat(req.clone()).await?;
                    unary.push((c, req));
                }
                Carried::Stream => {
                    let stream = echo::EchoStream::open(&mut c, req.clone()).await?;
                    streams.push((Arc::new(tokio::sync::Mutex::new((c, stream))), req));
                }
            }
        }
        // What the open connections cost with no call, taken off as the
        // controller's idle rate is.
        let idle = cpu_rate(self.pid, Duration::from_secs(3)).await?;
        let cpu0 = procstat::cpu(self.pid)?;
        let t = Instant::now();
        let beats = match how {
            Carried::Unary => {
                paced(unary, every, window, |(mut c, req)| async move {
                    c.heartbeat(req).await?;
                    anyhow::Ok(0)
                })
                .await?
            }
            Carried::Stream => {
                paced(streams, every, window, |(open, req)| async move {
                    open.lock().await.1.beat(req).await?;
                    anyhow::Ok(0)
                })
                .await?
            }
        };
        let wall = t.elapsed();
        let cpu = procstat::cpu(self.pid)?.saturating_sub(cpu0);
        let busy = cpu.saturating_sub(Duration::from_secs_f64(idle * wall.as_secs_f64()));
        let share = busy.as_secs_f64() / wall.as_secs_f64().max(1e-9);
        Ok(Paced {
            per_call: busy / beats.sent.max(1) as u32,
            share,
            idle,
            beats,
        })
    }
}

/// The echo's RSS before its connections, with them joined, and after
/// they carried the calls.
struct EchoMemory {
    before: u64,
    joined: u64,
    called: u64,
}

/// The heartbeat phase of one way of carrying heartbeats.
struct BeatPhase {
    /// Controller RSS at the end of the phase, its streams still open.
    rss: u64,
    /// Controller CPU per heartbeat, the idle rate taken off.
    per_beat: Duration,
    /// Share of one core, the idle rate taken off.
    share: f64,
    beats: Beats,
}

fn carried(how: Carried) -> &'static str {
    match how {
        Carried::Unary => "unary calls",
        Carried::Stream => "one stream per node",
    }
}

/// How heartbeats travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Carried {
    /// One unary call each.
    Unary,
    /// One message each way on a stream per node, opened beforehand.
    Stream,
}

/// The echo answering the heartbeat pattern.
struct Paced {
    /// CPU per call, the idle rate taken off.
    per_call: Duration,
    /// Share of one core, the idle rate taken off.
    share: f64,
    /// Share of one core with the connections open and no call.
    idle: f64,
    beats: Beats,
}

/// The process's CPU share once it has gone quiet: 2 s windows until two in
/// a row differ by less than 1% of a core (at most 30 s), the last one.
async fn quiet_rate(pid: i32) -> anyhow::Result<f64> {
    let window = Duration::from_secs(2);
    let mut rate = cpu_rate(pid, window).await?;
    for _ in 0..14 {
        let next = cpu_rate(pid, window).await?;
        let settled = (next - rate).abs() < 0.01;
        rate = next;
        if settled {
            break;
        }
    }
    Ok(rate)
}

/// The controller's CPU per second of wall time over `window`.
async fn cpu_rate(pid: i32, window: Duration) -> anyhow::Result<f64> {
    let c0 = procstat::cpu(pid)?;
    tokio::time::sleep(window).await;
    Ok(procstat::cpu(pid)?.saturating_sub(c0).as_secs_f64() / window.as_secs_f64())
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / 1048576.0)
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

/// Every node's first call (a heartbeat holding nothing), `JOINING_AT_ONCE`
/// at a time: each opens its TLS connection and is first seen.
async fn join(nodes: &[SimNode]) -> anyhow::Result<(Duration, usize)> {
    let gate = Arc::new(Semaphore::new(JOINING_AT_ONCE));
    let t = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for n in nodes {
        let (gate, client) = (Arc::clone(&gate), n.client.clone());
        set.spawn(async move {
            let _permit = gate.acquire_owned().await;
            client.heartbeat(vec![]).await.is_ok()
        });
    }
    let mut failed = 0;
    while let Some(ok) = set.join_next().await {
        failed += usize::from(!ok?);
    }
    Ok((t.elapsed(), failed))
}

/// What fetching every volume took.
struct Fetched {
    all: Duration,
    failed: usize,
    retried: usize,
    latencies: Vec<Duration>,
}

/// Every node's pods start at once (at most `FETCHES_AT_ONCE` fetches in
/// flight); a fetch refused for a transient reason (the KDC queue full,
/// the budget) is tried again as the driver would.
async fn fetch_all(nodes: &[SimNode]) -> anyhow::Result<Fetched> {
    let gate = Arc::new(Semaphore::new(FETCHES_AT_ONCE));
    let retried = Arc::new(AtomicUsize::new(0));
    let t = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for n in nodes {
        for v in &n.volumes {
            let (gate, client, v) = (Arc::clone(&gate), n.client.clone(), v.clone());
            let retried = Arc::clone(&retried);
            set.spawn(async move {
                let _permit = gate.acquire_owned().await;
                let started = Instant::now();
                for _ in 0..FETCH_TRIES {
                    match client
                        .fetch_bundle(v.pod.clone(), &v.volume_id, false)
                        .await
                    {
                        Ok(_) => return (true, started.elapsed()),
                        Err(e) if e.is_transient() => {
                            retried.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(250)).await;
                        }
                        Err(e) => {
                            eprintln!("fetch {}: {e}", v.volume_id);
                            return (false, started.elapsed());
                        }
                    }
                }
                (false, started.elapsed())
            });
        }
    }
    let mut latencies = Vec::new();
    let mut failed = 0;
    while let Some(done) = set.join_next().await {
        let (ok, latency) = done?;
        failed += usize::from(!ok);
        latencies.push(latency);
    }
    Ok(Fetched {
        all: t.elapsed(),
        failed,
        retried: retried.load(Ordering::Relaxed),
        latencies,
    })
}

/// What a window of heartbeats did.
struct Beats {
    sent: usize,
    failed: usize,
    /// Answers telling a node to wipe a volume (none expected: every pod
    /// runs where it is).
    wipes: usize,
    latencies: Vec<Duration>,
}

/// The nodes ready to heartbeat: their clients, or their streams opened
/// (and so authenticated) beforehand.
enum Callers {
    Unary(Vec<(ControllerClient, Vec<String>)>),
    Stream(Vec<(Arc<tokio::sync::Mutex<HeartbeatStream>>, Vec<String>)>),
}

impl Callers {
    async fn prepare(nodes: &[SimNode], how: Carried) -> anyhow::Result<Callers> {
        let held = |n: &SimNode| -> Vec<String> {
            n.volumes.iter().map(|v| v.volume_id.clone()).collect()
        };
        Ok(match how {
            Carried::Unary => {
                Callers::Unary(nodes.iter().map(|n| (n.client.clone(), held(n))).collect())
            }
            Carried::Stream => {
                let mut callers = Vec::with_capacity(nodes.len());
                for n in nodes {
                    let (stream, _) = n.client.open_heartbeats(held(n)).await?;
                    callers.push((Arc::new(tokio::sync::Mutex::new(stream)), held(n)));
                }
                Callers::Stream(callers)
            }
        })
    }

    /// Every node heartbeats every `every` with the volumes it holds,
    /// spread evenly over the interval, until `window` ends.
    async fn heartbeats(&self, every: Duration, window: Duration) -> anyhow::Result<Beats> {
        match self {
            Callers::Unary(callers) => {
                paced(
                    callers.clone(),
                    every,
                    window,
                    |(client, held)| async move {
                        let a = client.heartbeat(held).await?;
                        anyhow::Ok(a.stale_volume_ids.len() + a.revoked_volume_ids.len())
                    },
                )
                .await
            }
            Callers::Stream(callers) => {
                paced(
                    callers.clone(),
                    every,
                    window,
                    |(stream, held)| async move {
                        let a =
                            stream.lock().await.beat(held).await?.ok_or_else(|| {
                                anyhow::anyhow!("the controller ended the stream")
                            })?;
                        anyhow::Ok(a.stale_volume_ids.len() + a.revoked_volume_ids.len())
                    },
                )
                .await
            }
        }
    }
}

/// Each caller calls `beat` every `every`, the callers spread evenly over
/// the interval, until `window` ends; `beat` answers the wipes asked.
async fn paced<C, F, Fut>(
    callers: Vec<C>,
    every: Duration,
    window: Duration,
    beat: F,
) -> anyhow::Result<Beats>
where
    C: Clone + Send + 'static,
    F: Fn(C) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<usize>> + Send,
{
    let start = tokio::time::Instant::now();
    let end = start + window;
    let count = callers.len().max(1) as u32;
    let mut set = tokio::task::JoinSet::new();
    for (i, caller) in callers.into_iter().enumerate() {
        let first = start + every * (i as u32) / count;
        let beat = beat.clone();
        set.spawn(async move {
            let mut out = Beats {
                sent: 0,
                failed: 0,
                wipes: 0,
                latencies: Vec::new(),
            };
            let mut next = first;
            while next < end {
                tokio::time::sleep_until(next).await;
                let t = Instant::now();
                match beat(caller.clone()).await {
                    Ok(wipes) => {
                        out.wipes += wipes;
                        out.latencies.push(t.elapsed());
                    }
                    Err(_) => out.failed += 1,
                }
                out.sent += 1;
                next += every;
            }
            out
        });
    }
    let mut all = Beats {
        sent: 0,
        failed: 0,
        wipes: 0,
        latencies: Vec::new(),
    };
    while let Some(done) = set.join_next().await {
        let b = done?;
        all.sent += b.sent;
        all.failed += b.failed;
        all.wipes += b.wipes;
        all.latencies.extend(b.latencies);
    }
    Ok(all)
}

async fn bench(cfg: &ScaleConfig, window: Duration, quick: bool) -> anyhow::Result<()> {
    println!(
        "kcred scale simulation ({}): {} nodes, {} pods, {} distinct credentials, KDC budget {}/s (burst {})",
        if quick { "quick smoke run" } else { "full run" },
        cfg.nodes,
        cfg.pods,
        cfg.credentials,
        cfg.rate,
        cfg.burst
    );
    println!(
        "simulated nodes speak the real node API (FetchBundle, Heartbeat, Heartbeats) over TLS, one connection and one client certificate each; they mount nothing: a fetch is the controller's side of a publish"
    );
    let work = tempfile::tempdir()?;
    let echo = EchoPeer::start(work.path()).await?;
    let echo_cpu = echo.cpu_per_call(if quick { 500 } else { 5_000 }).await?;

    let stack = ScaleStack::start(cfg).await?;
    let pid = stack.controller_pid()?;
    println!(
        "set-up: realm with {} principals {}, {} node certificates {}, controller start with {} pods {}",
        cfg.credentials + 1,
        secs(stack.setup.realm),
        cfg.nodes,
        secs(stack.setup.certificates),
        cfg.pods,
        secs(stack.setup.controller)
    );
    let rss_started = procstat::rss(pid)?;
    let nodes = stack.nodes();

    let (joined, join_failed) = join(nodes).await?;
    println!(
        "phase 1, nodes join: {} nodes made their first call in {} ({} failed)",
        nodes.len(),
        secs(joined),
        join_failed
    );
    let rss_joined = procstat::rss(pid)?;

    let cpu0 = procstat::cpu(pid)?;
    let mut fetched = fetch_all(nodes).await?;
    let fetch_cpu = procstat::cpu(pid)?.saturating_sub(cpu0);
    let extractions = stack.realm.kadmind_extractions(None)?;
    let budget = kadmind_budget(&extractions, cfg.rate, cfg.burst);
    println!(
        "phase 2, fetch all: {} volumes in {} ({} failed, {} transient refusals retried), controller CPU {}",
        cfg.pods,
        secs(fetched.all),
        fetched.failed,
        fetched.retried,
        secs(fetch_cpu)
    );
    // Let the write-behind of issued records settle before measuring.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_fetched = procstat::rss(pid)?;

    let phase = |how| async move {
        let callers = Callers::prepare(nodes, how).await?;
        // What the controller does with no call (the fetch phase's
        // write-behind may still run), measured before each phase.
        let idle = quiet_rate(pid).await?;
        let cpu0 = procstat::cpu(pid)?;
        let t = Instant::now();
        let beats = callers.heartbeats(cfg.heartbeat_every, window).await?;
        let wall = t.elapsed();
        let cpu = procstat::cpu(pid)?.saturating_sub(cpu0);
        let rss = procstat::rss(pid)?;
        let busy = cpu.saturating_sub(Duration::from_secs_f64(idle * wall.as_secs_f64()));
        println!(
            "phase 3, heartbeats ({}): {} heartbeats from {} nodes every {} over {} ({} failed, {} wipes asked); controller CPU {} (idle rate {:.1}% of a core)",
            carried(how),
            beats.sent,
            nodes.len(),
            secs(cfg.heartbeat_every),
            secs(wall),
            beats.failed,
            beats.wipes,
            secs(cpu),
            idle * 100.0
        );
        anyhow::Ok(BeatPhase {
            rss,
            per_beat: busy / beats.sent.max(1) as u32,
            share: busy.as_secs_f64() / wall.as_secs_f64().max(1e-9),
            beats,
        })
    };
    let mut unary_beats = phase(Carried::Unary).await?;
    let mut stream_beats = phase(Carried::Stream).await?;
    let rss_end = procstat::rss(pid)?;
    // The nodes' connections are closed first: both sets at once would
    // pass the file limit at full size.
    let requests: Vec<HeartbeatRequest> = nodes
        .iter()
        .map(|n| HeartbeatRequest {
            node_name: n.name.clone(),
            volume_ids: n.volumes.iter().map(|v| v.volume_id.clone()).collect(),
        })
        .collect();
    let node_count = nodes.len();
    let calls_per_node: Vec<usize> = nodes.iter().map(|n| n.volumes.len()).collect();
    drop(stack);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let echo_memory = echo.memory(&calls_per_node).await?;
    println!(
        "peer, the TLS echo's memory: {} nodes' connections and {} calls, RSS {} before / {} joined / {} called",
        node_count,
        cfg.pods,
        mib(echo_memory.before),
        mib(echo_memory.joined),
        mib(echo_memory.called)
    );
    // Its connections close before the next ones open (the file limit).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut peers = Vec::new();
    for how in [Carried::Unary, Carried::Stream] {
        let peer = echo
            .paced(requests.clone(), cfg.heartbeat_every, window, how)
            .await?;
        println!(
            "peer, the same pattern against the TLS echo ({}): {} calls over {} connections ({} failed), echo CPU {:.2}% of a core (idle rate {:.1}% taken off)",
            carried(how),
            peer.beats.sent,
            node_count,
            peer.beats.failed,
            peer.share * 100.0,
            peer.idle * 100.0
        );
        peers.push(peer);
    }
    let (echo_unary, echo_stream) = (&peers[0], &peers[1]);

    println!();
    let table = Table::start();
    // The burst is spent at once; the rest comes at the rate.
    let ideal = Duration::from_secs_f64(
        cfg.credentials.saturating_sub(cfg.burst as usize) as f64 / f64::from(cfg.rate),
    );
    table.row(
        &format!("time to fetch all {} volumes", cfg.pods),
        &secs(fetched.all),
        &format!("{} ideal ((distinct - burst) / rate)", secs(ideal)),
        &ratio(fetched.all.as_secs_f64(), ideal.as_secs_f64()),
    );
    table.row(
        "  fetch latency p50 / p99",
        &format!(
            "{} / {}",
            ms(pct(&mut fetched.latencies, 0.5)),
            ms(pct(&mut fetched.latencies, 0.99))
        ),
        "",
        "",
    );
    table.row(
        "KDC extractions",
        &extractions.len().to_string(),
        &format!("{} distinct credentials", cfg.credentials),
        &ratio(extractions.len() as f64, cfg.credentials as f64),
    );
    table.row(
        "peak extractions in one second / budget violations",
        &format!("{} / {}", budget.peak_per_second, budget.violations.len()),
        &format!("{} allowed / 0", cfg.rate + cfg.burst),
        "",
    );
    for (how, kcred, peer) in [
        (Carried::Stream, &mut stream_beats, echo_stream),
        (Carried::Unary, &mut unary_beats, echo_unary),
    ] {
        table.row(
            &format!(
                "heartbeat CPU ({}), {} nodes every {}, share of one core",
                carried(how),
                node_count,
                secs(cfg.heartbeat_every)
            ),
            &format!("{:.2}%", kcred.share * 100.0),
            &format!(
                "{:.2}% TLS echo ({}), same pattern; 10% goal",
                peer.share * 100.0,
                carried(how)
            ),
            &ratio(kcred.share, peer.share),
        );
        table.row(
            &format!(
                "  controller CPU per heartbeat ({}, {} issued records)",
                carried(how),
                cfg.pods
            ),
            &us(kcred.per_beat),
            &format!(
                "{} TLS echo ({}), same pattern ({} unary back to back); 50 µs goal",
                us(peer.per_call),
                carried(how),
                us(echo_cpu)
            ),
            &ratio(kcred.per_beat.as_secs_f64(), peer.per_call.as_secs_f64()),
        );
        table.row(
            "  heartbeat latency p50 / p99",
            &format!(
                "{} / {}",
                ms(pct(&mut kcred.beats.latencies, 0.5)),
                ms(pct(&mut kcred.beats.latencies, 0.99))
            ),
            "",
            "",
        );
    }
    table.row(
        "controller RSS at the end",
        &mib(rss_end),
        &format!(
            "{} goal; the TLS echo {} with the same connections and calls",
            mib(RSS_GOAL),
            mib(echo_memory.called)
        ),
        &ratio(rss_end as f64, RSS_GOAL as f64),
    );
    table.row(
        "  RSS: started with the pods / nodes joined / all fetched / unary heartbeats / heartbeat streams open",
        &format!(
            "{} / {} / {} / {} / {}",
            mib(rss_started),
            mib(rss_joined),
            mib(rss_fetched),
            mib(unary_beats.rss),
            mib(stream_beats.rss)
        ),
        "",
        "",
    );
    let kib_each = |from: u64, to: u64, count: usize| {
        to.saturating_sub(from) as f64 / 1024.0 / count.max(1) as f64
    };
    let (kcred_conn, echo_conn) = (
        kib_each(rss_started, rss_joined, node_count),
        kib_each(echo_memory.before, echo_memory.joined, node_count),
    );
    table.row(
        "controller memory per connected node (RSS growth while joining)",
        &format!("{kcred_conn:.1} KiB"),
        &format!("{echo_conn:.1} KiB TLS echo, same connections and first calls"),
        &ratio(kcred_conn, echo_conn),
    );
    let (kcred_vol, echo_call) = (
        kib_each(rss_joined, rss_fetched, cfg.pods),
        kib_each(echo_memory.joined, echo_memory.called, cfg.pods),
    );
    table.row(
        "controller memory per issued volume (RSS growth while fetching)",
        &format!("{kcred_vol:.2} KiB"),
        &format!("2 KiB goal; the TLS echo grows {echo_call:.2} KiB a call under the same calls"),
        &ratio(kcred_vol, 2.0),
    );
    table.row(
        "  the same less the echo's growth: what the controller keeps per volume",
        &format!("{:.2} KiB", kcred_vol - echo_call),
        "2 KiB goal",
        &ratio(kcred_vol - echo_call, 2.0),
    );
    let beats_failed = unary_beats.beats.failed + stream_beats.beats.failed;
    if fetched.failed > 0 || join_failed > 0 || beats_failed > 0 {
        println!(
            "\n{} joins, {} fetches and {} heartbeats failed (see the controller log)",
            join_failed, fetched.failed, beats_failed
        );
    }
    Ok(())
}
