//! What one measurement produced: throughput and latency percentiles.

use std::time::Duration;

use serde::Serialize;

/// The raw outcome of one measured period.
#[derive(Debug, Default)]
pub struct Sample {
    /// Latencies of the successful calls in the measured period, sorted after `finish`.
    pub latencies_us: Vec<u32>,
    pub errors: u64,
    pub error_examples: Vec<String>,
    /// Set when the server answered that it does not support the operation.
    pub unsupported: Option<String>,
    pub elapsed: Duration,
    /// CPU seconds the server used during the measured period, when its process was watched.
    pub server_cpu_s: Option<f64>,
    /// Of which the server's audit-writer thread.
    pub audit_writer_cpu_s: Option<f64>,
    /// CPU seconds this load generator used.
    pub client_cpu_s: Option<f64>,
    /// Core-seconds the machine spent idle or in I/O wait.
    pub idle_s: Option<f64>,
}

impl Sample {
    pub fn finish(&mut self) {
        self.latencies_us.sort_unstable();
    }

    pub fn summary(&self) -> Summary {
        let n = self.latencies_us.len();
        let at = |q: f64| -> f64 {
            if n == 0 {
                return 0.0;
            }
            let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
            self.latencies_us[rank - 1] as f64 / 1000.0
        };
        Summary {
            ops: n as u64,
            errors: self.errors,
            seconds: self.elapsed.as_secs_f64(),
            ops_per_s: n as f64 / self.elapsed.as_secs_f64().max(1e-9),
            p50_ms: at(0.50),
            p99_ms: at(0.99),
            max_ms: self.latencies_us.last().map_or(0.0, |&m| m as f64 / 1000.0),
            server_cpu_us_per_op: self
                .server_cpu_s
                .filter(|_| n > 0)
                .map(|s| s * 1e6 / (n as u64 + self.errors) as f64),
            client_cpu_us_per_op: self
                .client_cpu_s
                .filter(|_| n > 0)
                .map(|s| s * 1e6 / (n as u64 + self.errors) as f64),
            idle_share: self
                .idle_s
                .zip(crate::machine::host_cpus())
                .map(|(s, cpus)| s / (self.elapsed.as_secs_f64().max(1e-9) * cpus as f64)),
        }
    }
}

/// Throughput and latency of one measurement.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Summary {
    pub ops: u64,
    pub errors: u64,
    pub seconds: f64,
    pub ops_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Server CPU time per request (all threads, user + system), in microseconds.
    pub server_cpu_us_per_op: Option<f64>,
    /// The load generator's CPU time per request.
    pub client_cpu_us_per_op: Option<f64>,
    /// The share of the machine's cores left idle (or waiting on I/O) during the measurement.
    pub idle_share: Option<f64>,
}

/// `a / b`, or None when `b` is zero.
pub fn ratio(a: f64, b: f64) -> Option<f64> {
    (b > 0.0).then(|| a / b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_rank() {
        let mut s = Sample {
            latencies_us: (1..=100).rev().map(|i| i * 1000).collect(),
            elapsed: Duration::from_secs(2),
            ..Default::default()
        };
        s.finish();
        let m = s.summary();
        assert_eq!(m.ops, 100);
        assert_eq!(m.ops_per_s, 50.0);
        assert_eq!(m.p50_ms, 50.0);
        assert_eq!(m.p99_ms, 99.0);
        assert_eq!(m.max_ms, 100.0);
        assert_eq!(ratio(1.0, 0.0), None);
    }
}
