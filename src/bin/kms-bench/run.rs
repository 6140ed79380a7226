//! The default mode: each crypto operation against the server (started here on each chosen HSM and
//! cache mode, or a running `--target`) and against the no-work baseline, interleaved per operation
//! so that both see the same machine load; plus the raw PKCS#11 rate of each HSM.

use std::collections::HashMap;

use serde_json::json;

use crate::baseline::Baseline;
use crate::client::{self, Conn};
use crate::hsm::HsmKind;
use crate::load::{self, LoadSpec};
use crate::ops::{self, Fixture, Op, Prepared, CRYPTO_OPS};
use crate::raw;
use crate::report::{self, ms, num, times, Report};
use crate::server::{KmsServer, ServerSpec};
use crate::stats::{ratio, Summary};
use crate::Common;

#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    #[command(flatten)]
    pub common: Common,
    /// HSMs to start the server on, comma-separated: sim (the embedded hsm-sim), softhsm. Default sim
    /// (with --target: only the raw rate of the HSMs named here is measured).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub hsm: Vec<HsmKind>,
    /// The key-material cache of the started servers.
    #[arg(long, value_enum, default_value = "on")]
    pub cache: CacheMode,
    /// Operations, comma-separated (default: all of gdk,decrypt,encrypt,reencrypt,sign,mac).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub ops: Vec<Op>,
    /// Symmetric keys the requests are spread over (created first).
    #[arg(short = 'm', long, default_value_t = 16)]
    pub keys: usize,
    /// Drive a running server (e.g. http://127.0.0.1:7300) instead of starting one.
    #[arg(long)]
    pub target: Option<String>,
    /// With --target: the process id of that server, so its CPU time per request is reported.
    #[arg(long, requires = "target")]
    pub target_pid: Option<u32>,
    /// Skip the no-work baseline.
    #[arg(long)]
    pub no_baseline: bool,
    /// Skip the raw PKCS#11 measurement.
    #[arg(long)]
    pub no_raw: bool,
    /// Seconds per thread count of the raw PKCS#11 measurement.
    #[arg(long, default_value_t = 3.0)]
    pub raw_seconds: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CacheMode {
    On,
    Off,
    Both,
}

impl CacheMode {
    pub fn modes(self) -> Vec<bool> {
        match self {
            CacheMode::On => vec![true],
            CacheMode::Off => vec![false],
            CacheMode::Both => vec![true, false],
        }
    }
}

pub async fn main(args: &RunArgs, report: &mut Report) -> Result<(), String> {
    let hsms = match (&args.target, args.hsm.is_empty()) {
        (_, false) => args.hsm.clone(),
        (None, true) => vec![HsmKind::Sim],
        (Some(_), true) => vec![],
    };
    let ops = if args.ops.is_empty() {
        CRYPTO_OPS.to_vec()
    } else {
        args.ops.clone()
    };
    let raw_rates = if args.no_raw {
        HashMap::new()
    } else {
        raw_rates(&hsms, &args.common, args.raw_seconds, report)?
    };
    let baseline = if args.no_baseline {
        None
    } else {
        Some(BaselineSide::start(&args.common, args.keys).await?)
    };
    let spec = args.common.load();
    if let Some(url) = &args.target {
        let side = Side {
            label: format!("target {url}"),
            hsm: None,
            cache: None,
            raw: None,
            pid: args.target_pid,
        };
        return measure_ops(&side, url, &ops, args, &spec, baseline.as_ref(), report).await;
    }
    for &hsm in &hsms {
        for cache in args.cache.modes() {
            let server = KmsServer::start(&ServerSpec::fresh(hsm, cache, &args.common.data_root()))?;
            println!(
                "\n== {}: kms pid {} at {} (started in {:.3} s)",
                server.label(),
                server.pid,
                server.url,
                server.startup.as_secs_f64()
            );
            let side = Side {
                label: server.label(),
                hsm: Some(hsm),
                cache: Some(cache),
                raw: raw_rates.get(&hsm).copied(),
                pid: Some(server.pid),
            };
            let result = measure_ops(&side, &server.url, &ops, args, &spec, baseline.as_ref(), report).await;
            server.stop();
            result?;
        }
    }
    Ok(())
}

/// The best raw PKCS#11 rate of each HSM over 1 thread and one per core.
pub fn raw_rates(
    hsms: &[HsmKind],
    common: &Common,
    seconds: f64,
    report: &mut Report,
) -> Result<HashMap<HsmKind, f64>, String> {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let threads: Vec<usize> = if cores > 1 { vec![1, cores] } else { vec![1] };
    let mut best = HashMap::new();
    let mut rows = vec![];
    for &hsm in hsms {
        let rates = raw::measure(hsm, &common.data_root(), &threads, seconds)?;
        for r in &rates {
            rows.push(vec![
                hsm.name().to_string(),
                r.key.clone(),
                r.threads.to_string(),
                num(r.ops_per_s),
            ]);
            report.push(
                "raw_hsm",
                json!({"hsm": hsm.name(), "key": r.key, "threads": r.threads, "ops_per_s": r.ops_per_s}),
            );
        }
        // The target is defined against the token key.
        let top = rates
            .iter()
            .filter(|r| r.key == "token")
            .map(|r| r.ops_per_s)
            .fold(0.0, f64::max);
        best.insert(hsm, top);
    }
    if !rows.is_empty() {
        report::table(
            &format!(
                "Raw PKCS#11: AES-256-GCM encrypt of 32 bytes, one session per thread ({seconds} s per row); \
                 `x raw HSM` is against the token key's best row"
            ),
            &["module", "key", "threads", "ops/s"],
            &rows,
        );
    }
    Ok(best)
}

/// The baseline child with its connections and (fake) keys and blobs.
pub struct BaselineSide {
    _process: Baseline,
    pub conns: Vec<Conn>,
    pub fixture: Fixture,
}

impl BaselineSide {
    pub async fn start(common: &Common, keys: usize) -> Result<BaselineSide, String> {
        let process = Baseline::start()?;
        let conns = client::connect(&process.url, common.connections).await?;
        let fixture = ops::fixture(&conns[0], keys).await?;
        Ok(BaselineSide {
            _process: process,
            conns,
            fixture,
        })
    }

    /// Measures `op` on the baseline; None if the baseline lacks it.
    pub async fn measure(&self, op: Op, spec: &LoadSpec, report: &mut Report) -> Result<Option<Summary>, String> {
        let Prepared::Ready(w) = ops::prepare(op, &self.conns[0], &self.fixture).await? else {
            return Ok(None);
        };
        let spec = LoadSpec {
            cpu_of: self._process.pid(),
            ..spec.clone()
        };
        let sample = load::drive(&self.conns, &spec, &w, None).await;
        report.check(&format!("baseline {}", op.name()), &sample);
        Ok(sample.unsupported.is_none().then(|| sample.summary()))
    }
}

/// The server side of a measurement.
struct Side {
    label: String,
    hsm: Option<HsmKind>,
    cache: Option<bool>,
    /// The HSM's raw rate, when it bounds this server (cache off).
    raw: Option<f64>,
    /// The server's process, when this run started it.
    pid: Option<u32>,
}

async fn measure_ops(
    side: &Side,
    url: &str,
    ops: &[Op],
    args: &RunArgs,
    spec: &LoadSpec,
    baseline: Option<&BaselineSide>,
    report: &mut Report,
) -> Result<(), String> {
    let conns = client::connect(url, args.common.connections).await?;
    let fixture = ops::fixture(&conns[0], args.keys).await?;
    let spec = &LoadSpec {
        cpu_of: side.pid,
        ..spec.clone()
    };
    let raw = if side.cache == Some(false) { side.raw } else { None };
    let mut rows = vec![];
    let mut unsupported = vec![];
    for &op in ops {
        let w = match ops::prepare(op, &conns[0], &fixture).await? {
            Prepared::Ready(w) => w,
            Prepared::Unsupported(why) => {
                println!("{}: not supported by the server ({why})", op.name());
                unsupported.push(op.name());
                report.push(
                    "ops",
                    json!({"label": side.label, "op": op.name(), "supported": false, "why": why}),
                );
                continue;
            }
        };
        let base = match baseline {
            Some(b) => b.measure(op, spec, report).await?,
            None => None,
        };
        let sample = load::drive(&conns, spec, &w, None).await;
        report.check(&format!("{} {}", side.label, op.name()), &sample);
        if let Some(why) = &sample.unsupported {
            println!("{}: not supported by the server ({why})", op.name());
            unsupported.push(op.name());
            continue;
        }
        let s = sample.summary();
        let x_ops = base.and_then(|b| ratio(s.ops_per_s, b.ops_per_s));
        let x_p99 = base.and_then(|b| ratio(s.p99_ms, b.p99_ms));
        let x_raw = raw.and_then(|r| ratio(s.ops_per_s, r));
        rows.push(vec![
            op.name().to_string(),
            num(s.ops_per_s),
            ms(s.p50_ms),
            ms(s.p99_ms),
            ms(s.max_ms),
            base.map_or("-".into(), |b| num(b.ops_per_s)),
            base.map_or("-".into(), |b| ms(b.p99_ms)),
            times(x_ops),
            times(x_p99),
            times(x_raw),
            cpu(s.server_cpu_us_per_op),
            base.map_or("-".into(), |b| cpu(b.server_cpu_us_per_op)),
            cpu(s.client_cpu_us_per_op),
            base.map_or("-".into(), |b| cpu(b.client_cpu_us_per_op)),
            idle(s.idle_share),
            base.map_or("-".into(), |b| idle(b.idle_share)),
            s.errors.to_string(),
        ]);
        report.push(
            "ops",
            json!({
                "label": side.label,
                "hsm": side.hsm.map(|h| h.name()),
                "cache": side.cache,
                "op": op.name(),
                "supported": true,
                "concurrency": spec.concurrency,
                "connections": args.common.connections,
                "keys": args.keys,
                "server": s,
                "baseline": base,
                "ratio_ops_per_s": x_ops,
                "ratio_p99": x_p99,
                "raw_hsm_ops_per_s": raw,
                "ratio_raw_hsm": x_raw,
            }),
        );
    }
    report::table(
        &format!(
            "{}: {} in flight over {} connections, {} keys, {:.1} s per op after {:.1} s warm-up; ms = latency",
            side.label,
            spec.concurrency,
            conns.len(),
            args.keys,
            spec.duration.as_secs_f64(),
            spec.warmup.as_secs_f64()
        ),
        &[
            "op",
            "ops/s",
            "p50 ms",
            "p99 ms",
            "max ms",
            "base ops/s",
            "base p99",
            "x base ops/s",
            "x base p99",
            "x raw HSM",
            "cpu us/op",
            "base cpu us/op",
            "client us/op",
            "base client us/op",
            "idle",
            "base idle",
            "errors",
        ],
        &rows,
    );
    if !unsupported.is_empty() {
        println!("{}: not supported by the server", unsupported.join(", "));
    }
    Ok(())
}

/// The machine's idle share as a percentage, or "-" when not watched.
fn idle(share: Option<f64>) -> String {
    share.map_or("-".into(), |v| format!("{:.0}%", v * 100.0))
}

/// Server CPU microseconds per request, or "-" when not watched.
fn cpu(us: Option<f64>) -> String {
    us.map_or("-".into(), |v| format!("{v:.1}"))
}
