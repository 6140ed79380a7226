//! `--smoke`: every mode for about 0.3 s per measurement, 4 requests in flight, on hsm-sim (cache on
//! and off) and, when installed, SoftHSM2 (cache on). Asserts nothing about speed; any failed request makes
//! the run exit non-zero. Meant for CI, with the debug build.

use std::path::PathBuf;
use std::time::Instant;

use crate::audit::{self, AuditArgs};
use crate::create_keys::{self, CreateKeysArgs};
use crate::grants::{self, GrantsArgs};
use crate::hsm::HsmKind;
use crate::policy::{self, PolicyArgs};
use crate::report::Report;
use crate::run::{self, CacheMode, RunArgs};
use crate::scale::{self, ScaleArgs};
use crate::Common;

pub async fn main(common: &Common, report: &mut Report) -> Result<(), String> {
    let began = Instant::now();
    let small = Common {
        concurrency: 4,
        connections: 2,
        seconds: 0.3,
        warmup: 0.1,
        json: common.json.clone(),
        data_root: common.data_root.clone(),
    };
    // hsm-sim with the cache on and off; SoftHSM2 (when installed) with the cache on.
    let mut runs = vec![(HsmKind::Sim, CacheMode::Both)];
    if HsmKind::SoftHsm.available() {
        runs.push((HsmKind::SoftHsm, CacheMode::On));
    } else {
        println!("SoftHSM2 is not installed: smoke runs on hsm-sim only");
    }
    for (hsm, cache) in runs {
        run::main(
            &RunArgs {
                common: small.clone(),
                hsm: vec![hsm],
                cache,
                ops: vec![],
                keys: 4,
                target: None,
                target_pid: None,
                no_baseline: false,
                no_raw: false,
                raw_seconds: 0.2,
            },
            report,
        )
        .await?;
    }
    create_keys::main(
        &CreateKeysArgs {
            common: small.clone(),
            hsm: HsmKind::Sim,
            target: None,
            no_baseline: false,
        },
        report,
    )
    .await?;
    scale::main(
        &ScaleArgs {
            common: small.clone(),
            keys: 300,
            store: None,
            populate_concurrency: 16,
            populate_seconds: None,
            sample: 100,
            hot: 10,
            rounds: 1,
            hsm: HsmKind::Sim,
        },
        report,
    )
    .await?;
    let shm = PathBuf::from("/dev/shm");
    audit::main(
        &AuditArgs {
            common: small.clone(),
            hsm: HsmKind::Sim,
            tmpfs: if shm.is_dir() { shm } else { common.data_root() },
            rounds: 1,
            keys: 4,
            ops: vec![],
        },
        report,
    )
    .await?;
    policy::main(
        &PolicyArgs {
            common: small.clone(),
            hsm: HsmKind::Sim,
            rounds: 1,
            keys: 4,
        },
        report,
    )
    .await?;
    grants::main(
        &GrantsArgs {
            common: small.clone(),
            hsm: HsmKind::Sim,
            grants: 50,
            rounds: 1,
        },
        report,
    )
    .await?;
    println!(
        "\nsmoke: every mode ran in {:.1} s; {} failed requests",
        began.elapsed().as_secs_f64(),
        report.errors()
    );
    Ok(())
}
