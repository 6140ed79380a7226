//! The closed-loop load generator: N workers, each with one request in flight, spread round-robin over
//! K connections, for a warm-up then a measured period. Each worker records its own latencies.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::client::Conn;
use crate::machine;
use crate::ops::{self, Workload};
use crate::report::{ms, num, Report};
use crate::stats::{Sample, Summary};

#[derive(Debug, Clone)]
pub struct LoadSpec {
    pub concurrency: usize,
    pub duration: Duration,
    pub warmup: Duration,
    /// The server process whose CPU time the measured period is charged with (CPU per request
    /// is steadier than ops/s on a shared machine). This process's own CPU time and the
    /// machine's idle time are measured either way.
    pub cpu_of: Option<u32>,
}

/// CPU seconds used during the measured period: by the server, its audit writer, this client
/// process, and left idle by the whole machine.
#[derive(Default)]
struct Cpu {
    server_s: Option<f64>,
    audit_writer_s: Option<f64>,
    client_s: Option<f64>,
    idle_s: Option<f64>,
}

/// At most this many error messages are kept per measurement.
const ERROR_EXAMPLES: usize = 3;

struct WorkerResult {
    latencies_us: Vec<u32>,
    errors: u64,
    examples: Vec<String>,
    unsupported: Option<String>,
    last_done: Option<Instant>,
}

/// Runs `w` with `spec.concurrency` workers over `conns` and measures the period after the warm-up.
/// With `max_calls`, stops after that many calls in all (counting warm-up calls).
pub async fn drive(conns: &[Conn], spec: &LoadSpec, w: &Workload, max_calls: Option<u64>) -> Sample {
    let start = Instant::now();
    let measured_from = start + spec.warmup;
    let end = measured_from + spec.duration;
    let started = Arc::new(AtomicU64::new(0));
    let server = spec.cpu_of;
    let cpu = tokio::spawn(async move {
        let read = || {
            (
                server.and_then(machine::cpu_seconds),
                server.and_then(|pid| machine::thread_cpu_seconds(pid, "audit-writer")),
                machine::cpu_seconds(std::process::id()),
                machine::idle_seconds(),
            )
        };
        tokio::time::sleep_until(measured_from.into()).await;
        let before = read();
        tokio::time::sleep_until(end.into()).await;
        let after = read();
        let used = |a: Option<f64>, b: Option<f64>| a.zip(b).map(|(a, b)| b - a);
        Cpu {
            server_s: used(before.0, after.0),
            audit_writer_s: used(before.1, after.1),
            client_s: used(before.2, after.2),
            idle_s: used(before.3, after.3),
        }
    });
    let mut tasks = Vec::with_capacity(spec.concurrency);
    for i in 0..spec.concurrency {
        let mut conn = conns[i % conns.len()].clone();
        let w = w.clone();
        let started = started.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng::new(0x9e37_79b9 ^ (i as u64) << 20 ^ start.elapsed().as_nanos() as u64);
            let mut r = WorkerResult {
                latencies_us: Vec::with_capacity(4096),
                errors: 0,
                examples: Vec::new(),
                unsupported: None,
                last_done: None,
            };
            let mut answered = false;
            loop {
                let t0 = Instant::now();
                if t0 >= end || max_calls.is_some_and(|m| started.fetch_add(1, Ordering::Relaxed) >= m) {
                    break;
                }
                let outcome = ops::call(&w, &mut conn, &mut rng).await;
                let t1 = Instant::now();
                let measured = t0 >= measured_from;
                match outcome {
                    // Only as the worker's first answer: once the server has served the operation,
                    // "unsupported" is an error like any other.
                    Err(s) if ops::is_unsupported(&s) && !answered => {
                        r.unsupported = Some(ops::describe(&s));
                        break;
                    }
                    Ok(()) if measured => {
                        r.latencies_us
                            .push(t1.duration_since(t0).as_micros().min(u32::MAX as u128) as u32);
                        r.last_done = Some(t1);
                    }
                    Ok(()) => {}
                    // Counted in the warm-up too: a failure of the cold path (a first unwrap, a
                    // burst on one key) must not go unseen because it came early.
                    Err(s) => {
                        r.errors += 1;
                        if r.examples.len() < ERROR_EXAMPLES {
                            r.examples.push(ops::describe(&s));
                        }
                        if measured {
                            r.last_done = Some(t1);
                        }
                    }
                }
                answered = true;
            }
            r
        }));
    }
    let mut sample = Sample::default();
    let mut last = None;
    for t in tasks {
        let r = match t.await {
            Ok(r) => r,
            Err(e) => {
                sample.errors += 1;
                sample.error_examples.push(format!("a worker panicked: {e}"));
                continue;
            }
        };
        sample.latencies_us.extend_from_slice(&r.latencies_us);
        sample.errors += r.errors;
        for e in r.examples {
            if sample.error_examples.len() < ERROR_EXAMPLES {
                sample.error_examples.push(e);
            }
        }
        if sample.unsupported.is_none() {
            sample.unsupported = r.unsupported;
        }
        last = last.max(r.last_done);
    }
    sample.elapsed = match last {
        Some(t) if t > measured_from => t.duration_since(measured_from),
        _ => spec.duration,
    };
    // Workers that stopped early (an operation the server lacks) leave no full period to charge.
    let used = if Instant::now() < end {
        cpu.abort();
        Cpu::default()
    } else {
        cpu.await.unwrap_or_default()
    };
    sample.server_cpu_s = used.server_s;
    sample.audit_writer_cpu_s = used.audit_writer_s;
    sample.client_cpu_s = used.client_s;
    sample.idle_s = used.idle_s;
    sample.finish();
    sample
}

/// splitmix64: cheap, and good enough to pick keys.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform enough in 0..n (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }
}

/// A/B rounds on one server: each round measures every workload once, in `round_order`. Returns
/// one table row per measurement (round, label, ops/s, p50 ms, p99 ms, errors) and each workload's
/// summaries. `mode` names the failures `report` records.
pub async fn alternating_rounds(
    conns: &[Conn],
    spec: &LoadSpec,
    workloads: &[(String, Workload)],
    rounds: usize,
    mode: &str,
    report: &mut Report,
) -> (Vec<Vec<String>>, Vec<Vec<Summary>>) {
    let mut rows = vec![];
    let mut sums = vec![vec![]; workloads.len()];
    for round in 1..=rounds.max(1) {
        for i in round_order(round, workloads.len()) {
            let (label, w) = &workloads[i];
            let sample = drive(conns, spec, w, None).await;
            report.check(&format!("{mode} {label}"), &sample);
            let s = sample.summary();
            rows.push(vec![
                round.to_string(),
                label.clone(),
                num(s.ops_per_s),
                ms(s.p50_ms),
                ms(s.p99_ms),
                s.errors.to_string(),
            ]);
            sums[i].push(s);
        }
    }
    (rows, sums)
}

/// The mean ops/s of a workload's rounds.
pub fn mean_ops(rounds: &[Summary]) -> f64 {
    rounds.iter().map(|s| s.ops_per_s).sum::<f64>() / rounds.len().max(1) as f64
}

/// The order in which round `round` (from 1) measures `n` alternatives: as given on odd rounds,
/// reversed on even ones (A B, B A, A B, ...), so that a machine that speeds up or slows down
/// during the run doesn't always favour the alternative measured first.
pub fn round_order(round: usize, n: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    if round.is_multiple_of(2) {
        order.reverse();
    }
    order
}

#[cfg(test)]
mod tests {
    use super::round_order;

    #[test]
    fn rounds_alternate_which_alternative_goes_first() {
        assert_eq!(round_order(1, 2), vec![0, 1]);
        assert_eq!(round_order(2, 2), vec![1, 0]);
        assert_eq!(round_order(3, 2), vec![0, 1]);
        assert_eq!(round_order(4, 3), vec![2, 1, 0]);
    }
}
