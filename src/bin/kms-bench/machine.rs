//! Facts about the machine and processes: CPU, load, memory of a process, file-system type and the
//! latency of a durable write (fdatasync), which bounds every durable write path of the server.

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use serde_json::{json, Value};

pub fn info() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|r| r.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    json!({
        "nproc": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "cpu_model": model,
        "mem_total": meminfo.lines().next().unwrap_or("").trim_start_matches("MemTotal:").trim(),
        "loadavg": loadavg(),
    })
}

/// The 1-, 5- and 15-minute load averages.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// CPU time (user + system, all threads) a process has used so far, in seconds. /proc counts it in
/// USER_HZ ticks, which Linux fixes at 100 for user space.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    ticks_in_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Core-seconds the whole machine has spent idle or waiting on I/O so far (the `cpu` line of
/// /proc/stat, in USER_HZ ticks).
pub fn idle_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line.split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect();
    // user nice system idle iowait ...
    Some((fields.get(3)? + fields.get(4)?) as f64 / 100.0)
}

/// The host's CPUs as /proc/stat counts them (its idle time is theirs, whatever this process's
/// affinity or cgroup allows).
pub fn host_cpus() -> Option<usize> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let n = stat
        .lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .count();
    (n > 0).then_some(n)
}

/// utime + stime of a /proc/.../stat line, in seconds.
fn ticks_in_stat(stat: &str) -> Option<f64> {
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i)?.parse::<u64>().ok();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name and state.
    Some((ticks(11)? + ticks(12)?) as f64 / 100.0)
}

/// CPU seconds used so far by the threads of `pid` named `name` (e.g. "audit-writer").
pub fn thread_cpu_seconds(pid: u32, name: &str) -> Option<f64> {
    let mut total = None;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()?.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim_end() == name {
            let tid: u32 = task.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).ok()?;
            *total.get_or_insert(0.0) += ticks_in_stat(&stat)?;
        }
    }
    total
}

/// Resident memory of a process, in KiB: now (VmRSS) and peak (VmHWM).
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Mem {
    pub rss_kib: u64,
    pub hwm_kib: u64,
}

pub fn mem(pid: u32) -> Option<Mem> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status.lines().find_map(|l| {
            l.strip_prefix(name)?
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
    };
    Some(Mem {
        rss_kib: field("VmRSS:")?,
        hwm_kib: field("VmHWM:")?,
    })
}

/// The file-system type holding `path` (longest mount-point prefix in /proc/mounts).
pub fn fs_type(path: &Path) -> String {
    let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_, mount, kind) = (f.next()?, f.next()?, f.next()?);
            path.starts_with(mount).then(|| (mount.len(), kind.to_string()))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, kind)| kind)
        .unwrap_or_else(|| "unknown".into())
}

/// Median and 99th-percentile milliseconds of appending 200 bytes and fdatasync-ing, `n` times, in `dir`.
pub fn fsync_probe(dir: &Path, n: usize) -> Option<(f64, f64)> {
    std::fs::create_dir_all(dir).ok()?;
    let path = dir.join(format!("kms-bench-fsync-{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&path).ok()?;
    let mut times = Vec::with_capacity(n);
    for _ in 0..n.max(1) {
        let t = Instant::now();
        f.write_all(&[b'x'; 200]).ok()?;
        f.sync_data().ok()?;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let _ = std::fs::remove_file(&path);
    times.sort_by(f64::total_cmp);
    let at = |q: f64| times[((q * times.len() as f64).ceil() as usize).clamp(1, times.len()) - 1];
    Some((at(0.5), at(0.99)))
}
