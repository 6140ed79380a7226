//! `scale`: a store with many keys. Populates it through the API (CreateKey at high concurrency;
//! resumable: with `--store DIR` the store, its token and its keys are kept, and a later run creates
//! only the keys still missing), restarts the server on it and measures the start-up time, then
//! GenerateDataKey spread over a random set of many keys against the same over a few keys, and the
//! server's resident memory (VmRSS, VmHWM).

use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kms::proto as pb;
use serde_json::json;

use crate::client::{self, Conn};
use crate::hsm::HsmKind;
use crate::load::{self, Rng};
use crate::machine;
use crate::ops::{self, Op, Workload};
use crate::report::{self, ms, num, Report};
use crate::server::{KmsServer, ServerSpec};
use crate::stats::{ratio, Summary};
use crate::Common;

#[derive(clap::Args, Debug, Clone)]
pub struct ScaleArgs {
    #[command(flatten)]
    pub common: Common,
    /// Keys the store should hold.
    #[arg(long, default_value_t = 1_000_000)]
    pub keys: usize,
    /// Keep the store here and resume filling it (default: a temporary store, removed at the end).
    #[arg(long)]
    pub store: Option<PathBuf>,
    /// CreateKey requests in flight while populating.
    #[arg(long, default_value_t = 256)]
    pub populate_concurrency: usize,
    /// Stop populating after this many seconds (the measurements then run on what is there).
    #[arg(long)]
    pub populate_seconds: Option<f64>,
    /// Size of the random key set of the spread-out GenerateDataKey measurement.
    #[arg(long, default_value_t = 10_000)]
    pub sample: usize,
    /// Size of the small key set it is compared with.
    #[arg(long, default_value_t = 10)]
    pub hot: usize,
    /// Measure few-keys then many-keys this many times, alternating (means are compared).
    #[arg(long, default_value_t = 2)]
    pub rounds: usize,
    #[arg(long, value_enum, default_value = "sim")]
    pub hsm: HsmKind,
}

pub async fn main(args: &ScaleArgs, report: &mut Report) -> Result<(), String> {
    let spec = match &args.store {
        Some(dir) => ServerSpec {
            hsm: args.hsm,
            cache: true,
            dir: dir.clone(),
            keep: true,
        },
        None => ServerSpec::fresh(args.hsm, true, &args.common.data_root()),
    };
    let mut server = KmsServer::start(&spec)?;
    println!(
        "\n== scale on {} (store {}): kms pid {}, started in {:.3} s",
        server.label(),
        spec.dir.display(),
        server.pid,
        server.startup.as_secs_f64()
    );

    // What is there already.
    let conns = client::connect(&server.url, args.common.connections).await?;
    let t = Instant::now();
    let mut keys = list_all(&conns[0]).await?;
    println!(
        "{} keys in the store (listed in {:.1} s)",
        keys.len(),
        t.elapsed().as_secs_f64()
    );

    // Populate.
    let need = args.keys.saturating_sub(keys.len());
    let mut populate = json!(null);
    if need > 0 {
        let budget = args.populate_seconds.map(Duration::from_secs_f64);
        let t = Instant::now();
        let (created, errors) = populate_keys(&conns, need, args.populate_concurrency, budget).await;
        let secs = t.elapsed().as_secs_f64();
        if errors > 0 {
            report.fail(&format!("populating: {errors} CreateKey requests failed"), errors);
        }
        println!(
            "created {} keys in {secs:.1} s ({:.0} keys/s at {} in flight); the store holds {}",
            created.len(),
            created.len() as f64 / secs,
            args.populate_concurrency,
            keys.len() + created.len()
        );
        populate = json!({
            "created": created.len(),
            "seconds": secs,
            "keys_per_s": created.len() as f64 / secs,
            "concurrency": args.populate_concurrency,
            "errors": errors,
        });
        keys.extend(created);
    }
    if keys.is_empty() {
        return Err("the store holds no keys".into());
    }
    let mem_before_restart = machine::mem(server.pid);
    drop(conns);

    // Start-up with this store.
    server.restart()?;
    let began = Instant::now();
    let conns = client::connect(&server.url, args.common.connections).await?;
    let mut c = conns[0].client.clone();
    c.describe_key(pb::DescribeKeyRequest {
        key_id: keys[0].clone(),
        ..Default::default()
    })
    .await
    .map_err(|s| format!("DescribeKey after restart: {}", ops::describe(&s)))?;
    let first_answer = server.startup + began.elapsed();
    let mem_started = machine::mem(server.pid);
    println!(
        "restart on {} keys: listening after {:.3} s, first answer after {:.3} s, RSS {} MiB",
        keys.len(),
        server.startup.as_secs_f64(),
        first_answer.as_secs_f64(),
        mem_started.map_or(0, |m| m.rss_kib / 1024)
    );

    // Key sets: a random sample, and a few keys.
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut rng = Rng::new(seed ^ 0x5eed);
    let sample = Arc::new(random_subset(&keys, args.sample, &mut rng));
    // The few keys are drawn from the sample: both sets then fit in a key-material cache the
    // sample's size (10,000 by default, as `cache.material_capacity`), and neither run evicts
    // the other's keys.
    let hot = Arc::new(random_subset(&sample, args.hot, &mut rng));
    let spec_load = args.common.load();

    // First touch of every key of the sample: record from the store, material unwrapped in the HSM.
    let t = Instant::now();
    let cold_errors = touch_all(&conns, &sample, spec_load.concurrency).await;
    let cold_secs = t.elapsed().as_secs_f64();
    if cold_errors > 0 {
        report.fail(
            &format!("first touch: {cold_errors} GenerateDataKey requests failed"),
            cold_errors,
        );
    }
    let cold_rate = sample.len() as f64 / cold_secs;
    println!(
        "first GenerateDataKey on each of {} keys (cold caches): {cold_rate:.0} ops/s",
        sample.len()
    );

    let run = |name: String, set: Arc<Vec<String>>| {
        let w = Workload::new(Op::GenerateDataKey, set, Arc::new(vec![]));
        let conns = conns.clone();
        let spec_load = spec_load.clone();
        async move {
            let sample = load::drive(&conns, &spec_load, &w, None).await;
            (name, sample)
        }
    };
    // Alternating rounds (A B, B A, ...), so that both sets see the same machine load.
    let mut results: Vec<(String, Summary)> = vec![];
    let sets = [
        (format!("{} keys", hot.len()), hot.clone()),
        (format!("random {} keys", sample.len()), sample.clone()),
    ];
    let mut runs: [Vec<Summary>; 2] = [vec![], vec![]];
    for round in 1..=args.rounds.max(1) {
        for i in load::round_order(round, sets.len()) {
            let (name, s) = run(sets[i].0.clone(), sets[i].1.clone()).await;
            report.check(&format!("scale GenerateDataKey over {name}"), &s);
            let s = s.summary();
            runs[i].push(s);
            results.push((format!("{name} (round {round})"), s));
        }
    }
    let [hot_runs, spread_runs] = runs;
    let mem_after = machine::mem(server.pid);
    let startup = server.startup;
    server.stop();

    let mean = |v: &[Summary]| v.iter().map(|s| s.ops_per_s).sum::<f64>() / v.len().max(1) as f64;
    let (hot_mean, spread_mean) = (mean(&hot_runs), mean(&spread_runs));
    let spread_vs_hot = ratio(spread_mean, hot_mean);
    let rows: Vec<Vec<String>> = results
        .iter()
        .map(|(name, s)| {
            vec![
                name.clone(),
                num(s.ops_per_s),
                ms(s.p50_ms),
                ms(s.p99_ms),
                ms(s.max_ms),
                s.errors.to_string(),
            ]
        })
        .collect();
    report::table(
        &format!(
            "GenerateDataKey on a store of {} keys: {} in flight over {} connections, {:.1} s each after {:.1} s warm-up",
            keys.len(),
            spec_load.concurrency,
            conns.len(),
            spec_load.duration.as_secs_f64(),
            spec_load.warmup.as_secs_f64()
        ),
        &["key set", "ops/s", "p50 ms", "p99 ms", "max ms", "errors"],
        &rows,
    );
    let mib =
        |m: Option<machine::Mem>, f: fn(&machine::Mem) -> u64| m.map_or("-".into(), |m| format!("{}", f(&m) / 1024));
    report::table(
        &format!("Store of {} keys", keys.len()),
        &["figure", "value"],
        &[
            vec![format!("GDK ops/s over {} keys (mean)", hot.len()), num(hot_mean)],
            vec![
                format!("GDK ops/s over random {} keys (mean)", sample.len()),
                num(spread_mean),
            ],
            vec![
                "random set / few keys GDK ops/s".into(),
                spread_vs_hot.map_or("-".into(), |r| format!("{r:.3}")),
            ],
            vec![
                "start-up to listening, s".into(),
                format!("{:.3}", startup.as_secs_f64()),
            ],
            vec![
                "start-up to first answer, s".into(),
                format!("{:.3}", first_answer.as_secs_f64()),
            ],
            vec!["cold first-touch GDK ops/s".into(), num(cold_rate)],
            vec![
                "RSS after populating, MiB".into(),
                mib(mem_before_restart, |m| m.rss_kib),
            ],
            vec!["RSS after restart, MiB".into(), mib(mem_started, |m| m.rss_kib)],
            vec!["RSS after the GDK runs, MiB".into(), mib(mem_after, |m| m.rss_kib)],
            vec![
                "peak RSS (VmHWM) since restart, MiB".into(),
                mib(mem_after, |m| m.hwm_kib),
            ],
        ],
    );
    report.push(
        "scale",
        json!({
            "hsm": args.hsm.name(),
            "keys_in_store": keys.len(),
            "populate": populate,
            "startup_listening_s": startup.as_secs_f64(),
            "startup_first_answer_s": first_answer.as_secs_f64(),
            "cold_first_touch_ops_per_s": cold_rate,
            "gdk_hot": {"keys": hot.len(), "mean_ops_per_s": hot_mean, "runs": hot_runs},
            "gdk_spread": {"keys": sample.len(), "mean_ops_per_s": spread_mean, "runs": spread_runs},
            "ratio_spread_vs_hot": spread_vs_hot,
            "mem_after_populate": mem_before_restart,
            "mem_after_restart": mem_started,
            "mem_after_runs": mem_after,
            "concurrency": spec_load.concurrency,
            "connections": conns.len(),
        }),
    );
    Ok(())
}

/// Every key id in the store, through ListKeys pages of 1000.
async fn list_all(conn: &Conn) -> Result<Vec<String>, String> {
    let mut c = conn.client.clone();
    let mut keys = vec![];
    let mut marker = None;
    loop {
        let page = c
            .list_keys(pb::ListKeysRequest {
                limit: Some(1000),
                marker: marker.take(),
            })
            .await
            .map_err(|s| format!("ListKeys: {}", ops::describe(&s)))?
            .into_inner();
        keys.extend(page.keys.into_iter().map(|k| k.key_id));
        match page.next_marker {
            Some(m) if page.truncated => marker = Some(m),
            _ => return Ok(keys),
        }
    }
}

/// Creates `need` keys with `concurrency` requests in flight (or fewer, if `budget` runs out first).
/// Returns the new key ids and the number of failed requests. Gives up after 1000 failures.
async fn populate_keys(
    conns: &[Conn],
    need: usize,
    concurrency: usize,
    budget: Option<Duration>,
) -> (Vec<String>, u64) {
    let started = Instant::now();
    let deadline = budget.map(|b| started + b);
    let remaining = Arc::new(AtomicI64::new(need as i64));
    let created = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let ids = Arc::new(Mutex::new(Vec::with_capacity(need)));
    let progress = {
        let created = created.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(10));
            tick.tick().await;
            loop {
                tick.tick().await;
                let n = created.load(Ordering::Relaxed);
                let secs = started.elapsed().as_secs_f64();
                println!("  populating: {n}/{need} keys, {:.0} keys/s", n as f64 / secs);
            }
        })
    };
    let mut tasks = vec![];
    for i in 0..concurrency.max(1) {
        let mut conn = conns[i % conns.len()].clone();
        let (remaining, created, errors, ids) = (remaining.clone(), created.clone(), errors.clone(), ids.clone());
        tasks.push(tokio::spawn(async move {
            let mut mine = vec![];
            loop {
                if deadline.is_some_and(|d| Instant::now() >= d) || errors.load(Ordering::Relaxed) >= 1000 {
                    break;
                }
                if remaining.fetch_sub(1, Ordering::Relaxed) <= 0 {
                    break;
                }
                match ops::create_one(&mut conn).await {
                    Ok(id) => {
                        mine.push(id);
                        created.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(s) => {
                        remaining.fetch_add(1, Ordering::Relaxed);
                        if errors.fetch_add(1, Ordering::Relaxed) < 3 {
                            eprintln!("!! CreateKey: {}", ops::describe(&s));
                        }
                    }
                }
            }
            if let Ok(mut all) = ids.lock() {
                all.extend(mine);
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    progress.abort();
    let ids = std::mem::take(&mut *ids.lock().unwrap_or_else(|p| p.into_inner()));
    (ids, errors.load(Ordering::Relaxed))
}

/// One GenerateDataKey per key of `keys`, `concurrency` at a time. Returns the failures.
async fn touch_all(conns: &[Conn], keys: &Arc<Vec<String>>, concurrency: usize) -> u64 {
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = vec![];
    for i in 0..concurrency.max(1) {
        let mut c = conns[i % conns.len()].client.clone();
        let (keys, next) = (keys.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut errors = 0u64;
            loop {
                let at = next.fetch_add(1, Ordering::Relaxed) as usize;
                let Some(key) = keys.get(at) else { break };
                let req = ops::gdk_request(key, ops::context());
                if let Err(s) = c.generate_data_key(req).await {
                    if errors == 0 {
                        eprintln!("!! GenerateDataKey: {}", ops::describe(&s));
                    }
                    errors += 1;
                }
            }
            errors
        }));
    }
    let mut errors = 0;
    for t in tasks {
        errors += t.await.unwrap_or(1);
    }
    errors
}

/// `n` distinct elements of `items` (all of them if there are fewer), in random order.
fn random_subset(items: &[String], n: usize, rng: &mut Rng) -> Vec<String> {
    let mut idx: Vec<usize> = (0..items.len()).collect();
    let n = n.min(idx.len());
    for i in 0..n {
        let j = i + rng.below(idx.len() - i);
        idx.swap(i, j);
    }
    idx[..n].iter().map(|&i| items[i].clone()).collect()
}
