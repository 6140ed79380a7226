//! `create-keys`: CreateKey throughput with durable writes (keys/s) at concurrency N, against the
//! baseline's CreateKey, with the fdatasync latency of the data directory's disk for reference (each
//! CreateKey commits one SQLite transaction with synchronous=FULL and appends one audit record).

use serde_json::json;

use crate::client;
use crate::hsm::HsmKind;
use crate::load;
use crate::machine;
use crate::ops::{self, Op, Prepared};
use crate::report::{self, ms, num, times, Report};
use crate::run::BaselineSide;
use crate::server::{KmsServer, ServerSpec};
use crate::stats::ratio;
use crate::Common;

#[derive(clap::Args, Debug, Clone)]
pub struct CreateKeysArgs {
    #[command(flatten)]
    pub common: Common,
    /// HSM of the started server: sim or softhsm.
    #[arg(long, value_enum, default_value = "sim")]
    pub hsm: HsmKind,
    /// Drive a running server instead of starting one.
    #[arg(long)]
    pub target: Option<String>,
    /// Skip the no-work baseline.
    #[arg(long)]
    pub no_baseline: bool,
}

pub async fn main(args: &CreateKeysArgs, report: &mut Report) -> Result<(), String> {
    let spec = args.common.load();
    let root = args.common.data_root();
    let fs = machine::fs_type(&root);
    let fsync = machine::fsync_probe(&root, 200);
    if let Some((p50, p99)) = fsync {
        println!(
            "fdatasync of 200 bytes in {} ({fs}): p50 {p50:.3} ms, p99 {p99:.3} ms",
            root.display()
        );
    }
    let baseline = if args.no_baseline {
        None
    } else {
        Some(BaselineSide::start(&args.common, 1).await?)
    };
    let base = match &baseline {
        Some(b) => b.measure(Op::CreateKey, &spec, report).await?,
        None => None,
    };
    let server = match &args.target {
        Some(_) => None,
        None => Some(KmsServer::start(&ServerSpec::fresh(args.hsm, true, &root))?),
    };
    let (label, url) = match (&server, &args.target) {
        (Some(s), _) => (s.label(), s.url.clone()),
        (None, Some(t)) => (format!("target {t}"), t.clone()),
        (None, None) => unreachable!("a server or a target"),
    };
    if let Some(s) = &server {
        println!("\n== create-keys on {label}: kms pid {} at {}", s.pid, s.url);
    }
    let conns = client::connect(&url, args.common.connections).await?;
    let fixture = ops::Fixture {
        keys: Default::default(),
        blobs: Default::default(),
    };
    let Prepared::Ready(w) = ops::prepare(Op::CreateKey, &conns[0], &fixture).await? else {
        return Err("CreateKey cannot be prepared".into());
    };
    let spec = load::LoadSpec {
        cpu_of: server.as_ref().map(|s| s.pid),
        ..spec
    };
    let sample = load::drive(&conns, &spec, &w, None).await;
    if let Some(s) = server {
        s.stop();
    }
    report.check(&format!("{label} CreateKey"), &sample);
    let s = sample.summary();
    let x_base = base.and_then(|b| ratio(s.ops_per_s, b.ops_per_s));
    report::table(
        &format!(
            "CreateKey, durable: {} in flight over {} connections, {:.1} s after {:.1} s warm-up, data dir on {fs}",
            spec.concurrency,
            conns.len(),
            spec.duration.as_secs_f64(),
            spec.warmup.as_secs_f64()
        ),
        &[
            "server",
            "keys/s",
            "p50 ms",
            "p99 ms",
            "max ms",
            "base keys/s",
            "x base",
            "fsync p50 ms",
            "cpu us/key",
            "errors",
        ],
        &[vec![
            label.clone(),
            num(s.ops_per_s),
            ms(s.p50_ms),
            ms(s.p99_ms),
            ms(s.max_ms),
            base.map_or("-".into(), |b| num(b.ops_per_s)),
            times(x_base),
            fsync.map_or("-".into(), |(p50, _)| format!("{p50:.3}")),
            s.server_cpu_us_per_op.map_or("-".into(), |v| format!("{v:.1}")),
            s.errors.to_string(),
        ]],
    );
    report.push(
        "create_keys",
        json!({
            "label": label,
            "concurrency": spec.concurrency,
            "connections": conns.len(),
            "data_fs": fs,
            "fsync_p50_ms": fsync.map(|f| f.0),
            "fsync_p99_ms": fsync.map(|f| f.1),
            "server": s,
            "baseline": base,
            "ratio_ops_per_s": x_base,
        }),
    );
    Ok(())
}
