//! A process's CPU time and resident memory, read from `/proc`.

use std::time::Duration;

/// Clock ticks per second in `/proc/PID/stat` (`USER_HZ`, 100 on every
/// Linux architecture the kernel exports to user space).
const USER_HZ: u64 = 100;

/// User plus system CPU time `pid` has used so far.
pub fn cpu(pid: i32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) may hold spaces: count from its ')'.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| anyhow::anyhow!("/proc/{pid}/stat: no ')'"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line; `rest`
    // starts at field 3.
    let tick = |i: usize| -> anyhow::Result<u64> {
        Ok(fields
            .get(i - 3)
            .ok_or_else(|| anyhow::anyhow!("/proc/{pid}/stat: short"))?
            .parse()?)
    };
    let ticks = tick(14)? + tick(15)?;
    Ok(Duration::from_millis(ticks * 1000 / USER_HZ))
}

/// CPU time the live threads of `pid` have used so far, to the
/// nanosecond (`/proc/PID/task/*/schedstat`; a thread that ended is not
/// counted): for spans too short for [`cpu`]'s 10 ms ticks.
pub fn cpu_fine(pid: i32) -> anyhow::Result<Duration> {
    let mut ns = 0u64;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let Ok(text) = std::fs::read_to_string(task?.path().join("schedstat")) else {
            continue; // the thread ended meanwhile
        };
        ns += text
            .split_whitespace()
            .next()
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0);
    }
    Ok(Duration::from_nanos(ns))
}

/// Resident set size of `pid`, in bytes.
pub fn rss(pid: i32) -> anyhow::Result<u64> {
    status_number(pid, "VmRSS").map(|kib| kib * 1024)
}

/// The resident memory of `pid` that is its own (heap, stacks: `RssAnon`)
/// and what is mapped from files (its binary and libraries, shared with
/// other processes: `RssFile`), in bytes.
pub fn rss_parts(pid: i32) -> anyhow::Result<(u64, u64)> {
    Ok((
        status_number(pid, "RssAnon")? * 1024,
        status_number(pid, "RssFile")? * 1024,
    ))
}

/// How many threads `pid` runs.
pub fn threads(pid: i32) -> anyhow::Result<u64> {
    status_number(pid, "Threads")
}

/// A number field of `/proc/PID/status` (memory fields are in KiB).
fn status_number(pid: i32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    Ok(status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next())
        .ok_or_else(|| anyhow::anyhow!("/proc/{pid}/status: no {field}"))?
        .parse::<u64>()?)
}
