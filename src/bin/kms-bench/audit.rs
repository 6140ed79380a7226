//! `audit`: the cost of the audit log, by proxy. The server cannot run without its audit log today, so
//! this compares GenerateDataKey (cache on: no store and no HSM on the hot path, so the audit
//! append + fdatasync per batch is the only disk work) with the data directory on tmpfs (fdatasync is
//! free) against the same on disk. The difference is what durable auditing costs on this disk; the
//! rest of the audit cost (building and encoding the record, the writer thread) is paid in both.
//! Rounds alternate tmpfs and disk (tmpfs first on odd rounds, disk first on even ones) so that both
//! see the same machine load.

use std::path::PathBuf;

use serde_json::json;

use crate::client;
use crate::hsm::HsmKind;
use crate::load;
use crate::machine;
use crate::ops::{self, Op, Prepared};
use crate::report::{self, ms, num, Report};
use crate::server::{KmsServer, ServerSpec};
use crate::stats::Summary;
use crate::Common;

#[derive(clap::Args, Debug, Clone)]
pub struct AuditArgs {
    #[command(flatten)]
    pub common: Common,
    #[arg(long, value_enum, default_value = "sim")]
    pub hsm: HsmKind,
    /// A tmpfs directory for the in-memory data directory.
    #[arg(long, default_value = "/dev/shm")]
    pub tmpfs: PathBuf,
    /// tmpfs/disk pairs to measure.
    #[arg(long, default_value_t = 2)]
    pub rounds: usize,
    /// Symmetric keys the requests are spread over.
    #[arg(short = 'm', long, default_value_t = 16)]
    pub keys: usize,
    /// Operations (default gdk).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub ops: Vec<Op>,
}

pub async fn main(args: &AuditArgs, report: &mut Report) -> Result<(), String> {
    let spec = args.common.load();
    let ops = if args.ops.is_empty() {
        vec![Op::GenerateDataKey]
    } else {
        args.ops.clone()
    };
    let places = [("tmpfs", args.tmpfs.clone()), ("disk", args.common.data_root())];
    for (name, dir) in &places {
        let fs = machine::fs_type(dir);
        let fsync = machine::fsync_probe(dir, 100).map_or("-".into(), |(p50, _)| format!("{p50:.3} ms"));
        println!("{name}: {} is {fs}, fdatasync p50 {fsync}", dir.display());
        if (*name == "tmpfs") != (fs == "tmpfs") {
            println!(
                "warning: {} is {fs}, so this comparison measures nothing",
                dir.display()
            );
        }
    }
    let mut rows = vec![];
    let mut totals: Vec<(Op, [Vec<Summary>; 2])> = ops.iter().map(|&op| (op, [vec![], vec![]])).collect();
    for round in 1..=args.rounds.max(1) {
        for i in load::round_order(round, places.len()) {
            let (name, dir) = &places[i];
            let server = KmsServer::start(&ServerSpec::fresh(args.hsm, true, dir))?;
            let conns = client::connect(&server.url, args.common.connections).await?;
            let fixture = ops::fixture(&conns[0], args.keys).await?;
            for (op, sums) in totals.iter_mut() {
                let Prepared::Ready(w) = ops::prepare(*op, &conns[0], &fixture).await? else {
                    println!("{}: not supported by the server", op.name());
                    continue;
                };
                let spec = load::LoadSpec {
                    cpu_of: Some(server.pid),
                    ..spec.clone()
                };
                let sample = load::drive(&conns, &spec, &w, None).await;
                report.check(&format!("audit {name} {}", op.name()), &sample);
                let s = sample.summary();
                // The share of the server's CPU that the audit writer (write + fdatasync) used.
                let writer_share = sample
                    .audit_writer_cpu_s
                    .zip(sample.server_cpu_s)
                    .map(|(w, all)| w / all.max(1e-9));
                rows.push(vec![
                    round.to_string(),
                    name.to_string(),
                    op.name().to_string(),
                    num(s.ops_per_s),
                    ms(s.p50_ms),
                    ms(s.p99_ms),
                    s.server_cpu_us_per_op.map_or("-".into(), |v| format!("{v:.1}")),
                    writer_share.map_or("-".into(), |v| format!("{:.1}%", v * 100.0)),
                    s.client_cpu_us_per_op.map_or("-".into(), |v| format!("{v:.1}")),
                    s.idle_share.map_or("-".into(), |v| format!("{:.0}%", v * 100.0)),
                    s.errors.to_string(),
                ]);
                report.push(
                    "audit_runs",
                    json!({"round": round, "place": name, "op": op.name(), "server": s, "audit_writer_cpu_share": writer_share}),
                );
                sums[i].push(s);
            }
            server.stop();
        }
    }
    report::table(
        &format!(
            "Data dir on tmpfs vs disk, {} cache on: {} in flight over {} connections, {:.1} s per op",
            args.hsm.name(),
            spec.concurrency,
            args.common.connections,
            spec.duration.as_secs_f64()
        ),
        &[
            "round",
            "data dir",
            "op",
            "ops/s",
            "p50 ms",
            "p99 ms",
            "cpu us/op",
            "audit-writer cpu",
            "client us/op",
            "idle",
            "errors",
        ],
        &rows,
    );
    let mean = |v: &[Summary], f: fn(&Summary) -> f64| v.iter().map(f).sum::<f64>() / v.len().max(1) as f64;
    let mut summary_rows = vec![];
    for (op, [tmpfs, disk]) in &totals {
        if tmpfs.is_empty() || disk.is_empty() {
            continue;
        }
        let (t_ops, d_ops) = (mean(tmpfs, |s| s.ops_per_s), mean(disk, |s| s.ops_per_s));
        let (t_p99, d_p99) = (mean(tmpfs, |s| s.p99_ms), mean(disk, |s| s.p99_ms));
        let cost = 1.0 - d_ops / t_ops.max(1e-9);
        summary_rows.push(vec![
            op.name().to_string(),
            num(t_ops),
            num(d_ops),
            format!("{:.1}%", cost * 100.0),
            ms(t_p99),
            ms(d_p99),
        ]);
        report.push(
            "audit",
            json!({
                "op": op.name(),
                "hsm": args.hsm.name(),
                "tmpfs_ops_per_s": t_ops,
                "disk_ops_per_s": d_ops,
                "cost_fraction": cost,
                "tmpfs_p99_ms": t_p99,
                "disk_p99_ms": d_p99,
                "note": "proxy: data dir on tmpfs vs disk; the audit log cannot be turned off",
            }),
        );
    }
    report::table(
        "Durable-audit cost proxy (mean over rounds): cost = 1 - disk/tmpfs ops/s",
        &["op", "tmpfs ops/s", "disk ops/s", "cost", "tmpfs p99 ms", "disk p99 ms"],
        &summary_rows,
    );
    Ok(())
}
