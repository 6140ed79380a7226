//! `kms-bench`: service benchmarks of `kms`.
//!
//! It starts the server itself (the `kms` binary beside this one) on a chosen HSM, or drives a running
//! one (`--target`), and measures in the same run a bare tonic service that does no work (the
//! baseline, a child process) and the raw PKCS#11 rate of the HSM. Modes: the crypto operations (the
//! default), `create-keys`, `scale`, `audit`, `policy`, `grants`, and `--smoke`, which runs every mode
//! briefly and fails if any request fails. See BENCHMARKS.md for the method and figures.

mod audit;
mod baseline;
mod client;
mod create_keys;
mod grants;
mod hsm;
mod load;
mod machine;
mod ops;
mod policy;
mod raw;
mod report;
mod run;
mod scale;
mod server;
mod smoke;
mod stats;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use report::Report;

/// The same allocator as the `kms` binary, so the no-work baseline (served by this binary) is not
/// handicapped by glibc malloc where the server is not.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "kms-bench",
    about = "Service benchmarks of kms: crypto operations against a no-work baseline and the raw HSM rate",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: run::RunArgs,
    /// Run every mode briefly (0.3 s per measurement, 4 in flight); exit non-zero if any request fails.
    #[arg(long)]
    smoke: bool,
}

#[derive(Subcommand)]
enum Command {
    /// CreateKey throughput with durable writes (keys/s).
    CreateKeys(create_keys::CreateKeysArgs),
    /// Populate a store with many keys, then GenerateDataKey over many vs few keys, start-up time, RSS.
    Scale(scale::ScaleArgs),
    /// Audit cost proxy: GenerateDataKey with the data directory on tmpfs vs on disk.
    Audit(audit::AuditArgs),
    /// Key-policy cost: GenerateDataKey with the default policy vs a 10-statement policy.
    Policy(policy::PolicyArgs),
    /// Grant cost: GenerateDataKey allowed by a grant, on a key with 1 grant vs one with N (default 50,000).
    Grants(grants::GrantsArgs),
    /// Serve the no-work baseline service; prints `baseline listening on ADDR`.
    BaselineServer {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: std::net::SocketAddr,
    },
    /// Internal: raw PKCS#11 AES-GCM rate of one module (run as a child process).
    #[command(hide = true)]
    RawHsm(raw::RawArgs),
}

/// Options every load-generating mode shares.
#[derive(Args, Clone, Debug)]
pub struct Common {
    /// Requests in flight at once.
    #[arg(short = 'n', long, default_value_t = 64)]
    pub concurrency: usize,
    /// HTTP/2 connections (tonic Channels) the requests are spread over.
    #[arg(short = 'k', long, default_value_t = 2)]
    pub connections: usize,
    /// Measured seconds per operation.
    #[arg(short = 'd', long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Unmeasured warm-up seconds before each measurement.
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Write the results as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Where data directories of started servers go (default: the system temp dir, on disk here).
    #[arg(long)]
    pub data_root: Option<PathBuf>,
}

impl Common {
    pub fn load(&self) -> load::LoadSpec {
        load::LoadSpec {
            concurrency: self.concurrency.max(1),
            duration: Duration::from_secs_f64(self.seconds.max(0.05)),
            warmup: Duration::from_secs_f64(self.warmup.max(0.0)),
            cpu_of: None,
        }
    }

    pub fn data_root(&self) -> PathBuf {
        self.data_root.clone().unwrap_or_else(std::env::temp_dir)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::BaselineServer { listen }) = &cli.command {
        return match baseline::serve_blocking(*listen) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(&e),
        };
    }
    if let Some(Command::RawHsm(args)) = &cli.command {
        return match raw::child_main(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(&e),
        };
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => return fail(&format!("cannot start the runtime: {e}")),
    };
    let mut report = Report::new();
    let json = match &cli.command {
        Some(Command::CreateKeys(a)) => a.common.json.clone(),
        Some(Command::Scale(a)) => a.common.json.clone(),
        Some(Command::Audit(a)) => a.common.json.clone(),
        Some(Command::Policy(a)) => a.common.json.clone(),
        Some(Command::Grants(a)) => a.common.json.clone(),
        _ => cli.run.common.json.clone(),
    };
    let outcome = runtime.block_on(async {
        match cli.command {
            Some(Command::CreateKeys(a)) => create_keys::main(&a, &mut report).await,
            Some(Command::Scale(a)) => scale::main(&a, &mut report).await,
            Some(Command::Audit(a)) => audit::main(&a, &mut report).await,
            Some(Command::Policy(a)) => policy::main(&a, &mut report).await,
            Some(Command::Grants(a)) => grants::main(&a, &mut report).await,
            Some(Command::BaselineServer { .. }) | Some(Command::RawHsm(_)) => unreachable!("handled above"),
            None if cli.smoke => smoke::main(&cli.run.common, &mut report).await,
            None => run::main(&cli.run, &mut report).await,
        }
    });
    report.finish();
    if let Some(path) = json {
        if let Err(e) = report.write_json(&path) {
            eprintln!("kms-bench: {e}");
            return ExitCode::FAILURE;
        }
        println!("JSON written to {}", path.display());
    }
    if let Err(e) = outcome {
        return fail(&e);
    }
    if report.errors() > 0 {
        return fail(&format!("{} requests failed (see above)", report.errors()));
    }
    ExitCode::SUCCESS
}

fn fail(message: &str) -> ExitCode {
    eprintln!("kms-bench: {message}");
    ExitCode::FAILURE
}
