//! `--smoke`: every mode for about 0.3 s per measurement, 4 requests in flight, on hsm-sim and
//! (when installed) SoftHSM2, cache on and off. Asserts nothing about speed; any failed request makes
//! the run exit non-zero. Meant for CI, with the debug build.

use std::path::PathBuf;
use std::time::Instant;

use crate::audit::{self, AuditArgs};
use crate::create_keys::{self, CreateKeysArgs};
use crate::hsm::HsmKind;
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
    let mut hsms = vec![HsmKind::Sim];
    if HsmKind::SoftHsm.available() {
        hsms.push(HsmKind::SoftHsm);
    } else {
        println!("SoftHSM2 is not installed: smoke runs on hsm-sim only");
    }
    run::main(
        &RunArgs {
            common: small.clone(),
            hsm: hsms,
            cache: CacheMode::Both,
            ops: vec![],
            keys: 4,
            target: None,
            no_baseline: false,
            no_raw: false,
            raw_seconds: 0.2,
        },
        report,
    )
    .await?;
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
            common: small,
            hsm: HsmKind::Sim,
            tmpfs: if shm.is_dir() { shm } else { common.data_root() },
            rounds: 1,
            keys: 4,
            ops: vec![],
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
