//! `policy`: what key-policy evaluation costs. GenerateDataKey over keys with the default policy vs
//! keys with a 10-statement policy full of conditions (encryption context, IP ranges, dates, ARNs,
//! numbers; Allows and Denies that do not apply), in alternating rounds on one server so both see the
//! same load. Policies are compiled once per key; the figure to look at is the ratio.

use std::sync::Arc;

use serde_json::json;

use crate::client;
use crate::hsm::HsmKind;
use crate::load;
use crate::ops::{describe, Op, Workload};
use crate::report::{self, num, Report};
use crate::server::{KmsServer, ServerSpec};
use crate::Common;
use kms::proto as pb;

#[derive(clap::Args, Debug, Clone)]
pub struct PolicyArgs {
    #[command(flatten)]
    pub common: Common,
    #[arg(long, value_enum, default_value = "sim")]
    pub hsm: HsmKind,
    /// default/complex pairs to measure.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Keys of each kind the requests are spread over.
    #[arg(short = 'm', long, default_value_t = 16)]
    pub keys: usize,
}

/// Ten statements; the two Allows that apply to GenerateDataKey are conditional, and every Deny is
/// evaluated and does not apply.
pub fn complex_policy(account: &str) -> String {
    let root = format!("arn:aws:iam::{account}:root");
    json!({
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "RootInAccount", "Effect": "Allow", "Principal": {"AWS": root}, "Action": "kms:*", "Resource": "*",
             "Condition": {"StringEquals": {"kms:CallerAccount": account}}},
            {"Sid": "NoMallory", "Effect": "Deny", "Principal": "*", "Action": "kms:*", "Resource": "*",
             "Condition": {"ArnLike": {"aws:PrincipalArn": "arn:aws:iam::*:user/mallory*"}}},
            {"Sid": "ContextKeys", "Effect": "Allow", "Principal": {"AWS": root}, "Action": ["kms:Encrypt", "kms:Decrypt"],
             "Resource": "*", "Condition": {"ForAllValues:StringEquals": {"kms:EncryptionContextKeys": ["purpose", "tenant"]}}},
            {"Sid": "DataKeysForBench", "Effect": "Allow", "Principal": {"AWS": root}, "Action": "kms:GenerateDataKey*",
             "Resource": "*", "Condition": {"StringEquals": {"kms:EncryptionContext:purpose": "kms-bench"}}},
            {"Sid": "DecryptOnlyOwnContext", "Effect": "Deny", "Principal": "*", "Action": "kms:Decrypt", "Resource": "*",
             "Condition": {"StringNotEqualsIfExists": {"kms:EncryptionContext:purpose": ["kms-bench", "backup"]}}},
            {"Sid": "LocalDescribe", "Effect": "Allow", "Principal": {"AWS": root}, "Action": "kms:DescribeKey",
             "Resource": "*", "Condition": {"IpAddress": {"aws:SourceIp": ["127.0.0.0/8", "::1/128"]}}},
            {"Sid": "LongDeletionWindow", "Effect": "Deny", "Principal": "*", "Action": "kms:ScheduleKeyDeletion",
             "Resource": "*", "Condition": {"NumericLessThan": {"kms:ScheduleKeyDeletionPendingWindowInDays": "14"}}},
            {"Sid": "EcdsaOnly", "Effect": "Allow", "Principal": {"AWS": root}, "Action": "kms:Sign", "Resource": "*",
             "Condition": {"StringEquals": {"kms:SigningAlgorithm": "ECDSA_SHA_256"}}},
            {"Sid": "GrantsForServices", "Effect": "Allow", "Principal": {"AWS": root}, "Action": "kms:CreateGrant",
             "Resource": "*", "Condition": {"Bool": {"kms:GrantIsForAWSResource": "true"}}},
            {"Sid": "NothingBefore2020", "Effect": "Deny", "Principal": "*", "Action": "kms:*", "Resource": "*",
             "Condition": {"DateLessThan": {"aws:CurrentTime": "2020-01-01T00:00:00Z"}}}
        ]
    })
    .to_string()
}

async fn keys(conn: &client::Conn, m: usize, policy: Option<String>) -> Result<Arc<Vec<String>>, String> {
    let mut keys = Vec::with_capacity(m);
    for _ in 0..m.max(1) {
        let request = pb::CreateKeyRequest {
            policy: policy.clone(),
            ..Default::default()
        };
        let r = conn
            .client
            .clone()
            .create_key(request)
            .await
            .map_err(|s| format!("CreateKey: {}", describe(&s)))?;
        keys.push(
            r.into_inner()
                .key_metadata
                .map(|k| k.key_id)
                .ok_or("CreateKey without metadata")?,
        );
    }
    Ok(Arc::new(keys))
}

pub async fn main(args: &PolicyArgs, report: &mut Report) -> Result<(), String> {
    let spec = args.common.load();
    let server = KmsServer::start(&ServerSpec::fresh(args.hsm, true, &args.common.data_root()))?;
    let conns = client::connect(&server.url, args.common.connections).await?;
    let workloads = [
        (
            "default".to_string(),
            Workload::new(
                Op::GenerateDataKey,
                keys(&conns[0], args.keys, None).await?,
                Arc::new(vec![]),
            ),
        ),
        (
            "10 statements".to_string(),
            Workload::new(
                Op::GenerateDataKey,
                keys(&conns[0], args.keys, Some(complex_policy("111122223333"))).await?,
                Arc::new(vec![]),
            ),
        ),
    ];
    let (rows, sums) = load::alternating_rounds(&conns, &spec, &workloads, args.rounds, "policy", report).await;
    server.stop();
    report::table(
        &format!(
            "GenerateDataKey, key policy default vs 10 statements, {} cache on: {} in flight over {} connections, {:.1} s per round",
            args.hsm.name(),
            spec.concurrency,
            args.common.connections,
            spec.duration.as_secs_f64()
        ),
        &["round", "key policy", "ops/s", "p50 ms", "p99 ms", "errors"],
        &rows,
    );
    let (plain, complex) = (load::mean_ops(&sums[0]), load::mean_ops(&sums[1]));
    let ratio = complex / plain.max(1e-9);
    println!(
        "mean ops/s: default {} / 10 statements {} = {ratio:.3} (target: within 5%, i.e. >= 0.95) {}",
        num(plain),
        num(complex),
        if ratio >= 0.95 { "met" } else { "NOT met" }
    );
    report.push(
        "policy",
        json!({"default_ops_per_s": plain, "complex_ops_per_s": complex, "ratio": ratio}),
    );
    Ok(())
}
