//! `grants`: what authorization through grants costs when a key has many grants. Two keys whose
//! policy gives the account root its admin actions but no cryptographic ones, so the root's
//! GenerateDataKey is allowed only by a grant: "few" holds just that grant, "many" holds it behind
//! N-1 grants to other principals (N is AWS's per-key quota by default). GenerateDataKey over each,
//! in alternating rounds on one server; the figure to look at is the ratio many/few.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tonic::Status;

use crate::client::{self, Conn};
use crate::hsm::HsmKind;
use crate::load;
use crate::ops::{self, describe, error_type, Op, Workload};
use crate::report::{self, num, Report};
use crate::server::{KmsServer, ServerSpec};
use crate::stats::ratio;
use crate::Common;
use kms::proto as pb;

#[derive(clap::Args, Debug, Clone)]
pub struct GrantsArgs {
    #[command(flatten)]
    pub common: Common,
    #[arg(long, value_enum, default_value = "sim")]
    pub hsm: HsmKind,
    /// Grants on the "many" key, the root's last (default: AWS's quota of grants per key).
    #[arg(long, default_value_t = 50_000)]
    pub grants: usize,
    /// few/many pairs to measure.
    #[arg(long, default_value_t = 4)]
    pub rounds: usize,
}

/// What the grants give: enough for GenerateDataKey and its Decrypt, nothing else.
const GRANT_OPERATIONS: [&str; 2] = ["GenerateDataKey", "Decrypt"];

/// CreateGrant failures after which the bulk creation gives up.
const MAX_GRANT_ERRORS: u64 = 100;

/// The root may administer the key (this list passes the lockout check: it has PutKeyPolicy) but
/// not use it: no Encrypt, Decrypt or GenerateDataKey*, so only a grant can allow those.
fn admin_only_policy(account: &str) -> String {
    json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "RootAdministersButDoesNotUse",
            "Effect": "Allow",
            "Principal": {"AWS": root(account)},
            "Action": [
                "kms:Describe*", "kms:List*", "kms:Get*",
                "kms:CreateGrant", "kms:RetireGrant", "kms:RevokeGrant",
                "kms:PutKeyPolicy", "kms:EnableKey", "kms:DisableKey",
                "kms:ScheduleKeyDeletion", "kms:CancelKeyDeletion",
                "kms:TagResource", "kms:UntagResource", "kms:UpdateKeyDescription"
            ],
            "Resource": "*"
        }]
    })
    .to_string()
}

/// The principal `--dev` gives unauthenticated requests.
fn root(account: &str) -> String {
    format!("arn:aws:iam::{account}:root")
}

fn grantee(account: &str, i: usize) -> String {
    format!("arn:aws:iam::{account}:role/kms-bench-grantee-{i}")
}

/// Creates a key with the default policy and returns its id and the server's account (from the
/// key's metadata, so the policy and grantees name whatever account the server is configured with).
async fn create_key(conn: &Conn, description: &str) -> Result<(String, String), String> {
    let request = pb::CreateKeyRequest {
        description: description.into(),
        ..Default::default()
    };
    let r = conn
        .client
        .clone()
        .create_key(request)
        .await
        .map_err(|s| format!("CreateKey: {}", describe(&s)))?;
    let m = r.into_inner().key_metadata.ok_or("CreateKey without metadata")?;
    Ok((m.key_id, m.aws_account_id))
}

async fn put_policy(conn: &Conn, key: &str, policy: String) -> Result<(), String> {
    conn.client
        .clone()
        .put_key_policy(pb::PutKeyPolicyRequest {
            key_id: key.into(),
            policy,
            ..Default::default()
        })
        .await
        .map(|_| ())
        .map_err(|s| format!("PutKeyPolicy on {key}: {}", describe(&s)))
}

async fn gdk(conn: &Conn, key: &str) -> Result<(), Status> {
    let req = ops::gdk_request(key, ops::context());
    conn.client.clone().generate_data_key(req).await.map(|_| ())
}

async fn create_grant(conn: &mut Conn, key: &str, grantee: String) -> Result<(), Status> {
    let request = pb::CreateGrantRequest {
        key_id: key.into(),
        grantee_principal: grantee,
        operations: GRANT_OPERATIONS.iter().map(|o| o.to_string()).collect(),
        ..Default::default()
    };
    conn.client.create_grant(request).await.map(|_| ())
}

/// Before any grant the root must be refused: otherwise something other than a grant allows it and
/// the measurement would not be of grants.
async fn expect_denied(conn: &Conn, name: &str, key: &str) -> Result<(), String> {
    match gdk(conn, key).await {
        Err(s) if error_type(&s).as_deref() == Some("AccessDeniedException") => Ok(()),
        Err(s) => Err(format!(
            "GenerateDataKey on key {name:?} before any grant: expected AccessDeniedException, got {}",
            describe(&s)
        )),
        Ok(()) => Err(format!(
            "GenerateDataKey on key {name:?} succeeded before any grant although its policy does not allow \
             it to the root: grants would not be what authorizes the measured requests"
        )),
    }
}

/// How the bulk CreateGrant went. `done_at`: when each grant was created, sorted, so the rate at
/// the start and at the end can be told apart (the quota check counts the key's grants each time).
struct Bulk {
    created: usize,
    errors: u64,
    elapsed: Duration,
    done_at: Vec<Duration>,
}

impl Bulk {
    /// Grants/s over the `share` of grants created first (or last).
    fn rate(&self, share: f64, last: bool) -> Option<f64> {
        let n = ((self.done_at.len() as f64 * share) as usize).max(1);
        if self.done_at.len() < 2 * n {
            return None;
        }
        let (from, to) = if last {
            (
                self.done_at[self.done_at.len() - n - 1],
                self.done_at[self.done_at.len() - 1],
            )
        } else {
            (Duration::ZERO, self.done_at[n - 1])
        };
        ratio(n as f64, (to - from).as_secs_f64())
    }
}

/// Grants `count` other principals GenerateDataKey and Decrypt on `key`, `concurrency` requests in
/// flight. Prints progress every 10 s; gives up after MAX_GRANT_ERRORS failures.
async fn create_grants(conns: &[Conn], key: &str, account: &str, count: usize, concurrency: usize) -> Bulk {
    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let created = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let progress = {
        let created = created.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(10));
            tick.tick().await;
            let mut before = 0;
            loop {
                tick.tick().await;
                let n = created.load(Ordering::Relaxed);
                println!(
                    "  granting: {n}/{count} grants, {:.0} grants/s overall, {:.0} in the last 10 s",
                    n as f64 / started.elapsed().as_secs_f64(),
                    (n - before) as f64 / 10.0
                );
                before = n;
            }
        })
    };
    let mut tasks = vec![];
    for i in 0..concurrency.max(1) {
        let mut conn = conns[i % conns.len()].clone();
        let (next, created, errors) = (next.clone(), created.clone(), errors.clone());
        let (key, account) = (key.to_string(), account.to_string());
        tasks.push(tokio::spawn(async move {
            let mut done_at = vec![];
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count || errors.load(Ordering::Relaxed) >= MAX_GRANT_ERRORS {
                    break;
                }
                match create_grant(&mut conn, &key, grantee(&account, i)).await {
                    Ok(()) => {
                        done_at.push(started.elapsed());
                        created.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(s) => {
                        if errors.fetch_add(1, Ordering::Relaxed) < 3 {
                            eprintln!("!! CreateGrant: {}", describe(&s));
                        }
                    }
                }
            }
            done_at
        }));
    }
    let mut done_at = vec![];
    for t in tasks {
        done_at.extend(t.await.unwrap_or_default());
    }
    progress.abort();
    done_at.sort_unstable();
    Bulk {
        created: done_at.len(),
        errors: errors.load(Ordering::Relaxed),
        elapsed: started.elapsed(),
        done_at,
    }
}

/// The root's own grant, the one the measured requests go through.
async fn grant_root(conn: &Conn, name: &str, key: &str, account: &str) -> Result<(), String> {
    create_grant(&mut conn.clone(), key, root(account))
        .await
        .map_err(|s| format!("CreateGrant for the root on key {name:?}: {}", describe(&s)))
}

pub async fn main(args: &GrantsArgs, report: &mut Report) -> Result<(), String> {
    let spec = args.common.load();
    let n = args.grants.max(1);
    let server = KmsServer::start(&ServerSpec::fresh(args.hsm, true, &args.common.data_root()))?;
    let conns = client::connect(&server.url, args.common.connections).await?;
    let conn = &conns[0];

    // Two keys the root administers but may not use.
    let (few, account) = create_key(conn, "kms-bench grants: few").await?;
    let (many, _) = create_key(conn, "kms-bench grants: many").await?;
    for key in [&few, &many] {
        put_policy(conn, key, admin_only_policy(&account)).await?;
    }
    expect_denied(conn, "few", &few).await?;
    expect_denied(conn, "many", &many).await?;
    println!(
        "\n== grants on {}: kms pid {}; root {} may not GenerateDataKey on either key without a grant",
        args.hsm.name(),
        server.pid,
        root(&account)
    );

    // "many": N-1 grants to other principals, then the root's last, behind all of them.
    let bulk = create_grants(&conns, &many, &account, n - 1, spec.concurrency).await;
    let secs = bulk.elapsed.as_secs_f64();
    let per_s = ratio(bulk.created as f64, secs).unwrap_or(0.0);
    let (first, last) = (bulk.rate(0.1, false), bulk.rate(0.1, true));
    println!(
        "CreateGrant: {} grants in {secs:.1} s, {} grants/s at {} in flight over {} connections \
         (first 10%: {} grants/s, last 10%: {} grants/s)",
        bulk.created,
        num(per_s),
        spec.concurrency,
        conns.len(),
        first.map_or("-".into(), num),
        last.map_or("-".into(), num)
    );
    if bulk.errors > 0 {
        report.fail(&format!("CreateGrant: {} requests failed", bulk.errors), bulk.errors);
        return Err(format!(
            "{} of {} CreateGrant requests failed: key \"many\" lacks grants",
            bulk.errors,
            n - 1
        ));
    }
    grant_root(conn, "many", &many, &account).await?;
    grant_root(conn, "few", &few, &account).await?;
    for (name, key) in [("few", &few), ("many", &many)] {
        gdk(conn, key).await.map_err(|s| {
            format!(
                "GenerateDataKey on key {name:?} after the root's grant: {}",
                describe(&s)
            )
        })?;
    }

    let workloads = [
        (
            "few (1 grant)".to_string(),
            Workload::new(Op::GenerateDataKey, Arc::new(vec![few]), Arc::new(vec![])),
        ),
        (
            format!("many ({n} grants)"),
            Workload::new(Op::GenerateDataKey, Arc::new(vec![many]), Arc::new(vec![])),
        ),
    ];
    let (rows, sums) = load::alternating_rounds(&conns, &spec, &workloads, args.rounds, "grants", report).await;
    server.stop();
    report::table(
        &format!(
            "GenerateDataKey allowed by a grant, key with 1 vs {n} grants, {} cache on: {} in flight over {} \
             connections, {:.1} s per round",
            args.hsm.name(),
            spec.concurrency,
            args.common.connections,
            spec.duration.as_secs_f64()
        ),
        &["round", "key", "ops/s", "p50 ms", "p99 ms", "errors"],
        &rows,
    );
    let (few_mean, many_mean) = (load::mean_ops(&sums[0]), load::mean_ops(&sums[1]));
    let many_vs_few = many_mean / few_mean.max(1e-9);
    println!(
        "mean ops/s: many ({n} grants) {} / few (1 grant) {} = {many_vs_few:.3}",
        num(many_mean),
        num(few_mean)
    );
    report.push(
        "grants",
        json!({
            "hsm": args.hsm.name(),
            "grants_on_many": n,
            "create_grant": {
                "created": bulk.created,
                "seconds": secs,
                "grants_per_s": per_s,
                "first_tenth_grants_per_s": first,
                "last_tenth_grants_per_s": last,
                "concurrency": spec.concurrency,
            },
            "few_ops_per_s": few_mean,
            "many_ops_per_s": many_mean,
            "ratio": many_vs_few,
            "few_runs": sums[0],
            "many_runs": sums[1],
            "concurrency": spec.concurrency,
            "connections": conns.len(),
        }),
    );
    Ok(())
}
