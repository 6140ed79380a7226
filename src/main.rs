//! The `kms` binary.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use kms::config::Config;
use tokio::signal::unix::{signal, Signal, SignalKind};

/// mimalloc rather than glibc's malloc: allocation and free were ~10% of the server's CPU on
/// GenerateDataKey (BENCHMARKS.md, session 6). Secrets are still wiped by `Zeroizing` before free.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "kms",
    version,
    about = "Key-management service with AWS KMS semantics and an HSM-held root key"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gRPC server.
    Serve {
        /// TOML configuration file; flags override it.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Listen address (port 0 picks a free port).
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Directory of the store and the audit log.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Development mode: requests without credentials act as the account's root principal.
        #[arg(long)]
        dev: bool,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let Cli {
        command:
            Command::Serve {
                config,
                listen,
                data_dir,
                dev,
            },
    } = Cli::parse();
    let mut cfg = match config {
        Some(path) => match Config::from_file(&path) {
            Ok(c) => c,
            Err(e) => return fail(&e),
        },
        None => Config::default(),
    };
    if let Some(listen) = listen {
        cfg.listen = listen;
    }
    if let Some(dir) = data_dir {
        cfg.data_dir = dir;
    }
    if dev {
        cfg.auth.dev_mode = true;
    }
    // Configuration mistakes stop the server before the HSM is opened.
    if let Err(e) = cfg.validate() {
        return fail(&e);
    }
    // Before the PIN is read or any key material unwrapped (the TLS key is read next).
    if !cfg.core_dumps {
        if let Err(e) = kms::core_dumps::forbid() {
            return fail(&e);
        }
    }
    // So do mistakes in the files it names (credentials, TLS, revocation lists, identity
    // policies), before anything is created: a data directory, a token, a root key.
    if let Err(e) = kms::api::check_files(&cfg) {
        return fail(&e);
    }
    // Before the embedded HSM's token files are touched: a second server on this directory stops here.
    let _data_dir = match kms::ops::data_dir::lock(&cfg.data_dir) {
        Ok(lock) => lock,
        Err(e) => return fail(&e),
    };
    // While the process has one thread: this sets an environment variable.
    if let Err(e) = kms::hsm::embedded::prepare(&mut cfg) {
        return fail(&e);
    }
    // Then the runtime, and at once the signal handlers: SIGHUP's default action ends the process
    // (exit 129), and operators send it to reload, possibly while a slow HSM is still starting.
    // SIGTERM and SIGINT are caught from here too, so none is lost however soon after start-up
    // it comes: one during start-up stops the server before it serves, one after `kms listening
    // on` stops it gracefully. From here a SIGHUP is recorded, and `serve` reloads once it is up.
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => return fail(&format!("cannot start the runtime: {e}")),
    };
    let signals = {
        let _entered = runtime.enter();
        match Signals::register() {
            Ok(s) => s,
            Err(e) => return fail(&e),
        }
    };
    let pin = match kms::ops::read_pin(&cfg.hsm) {
        Ok(p) => p,
        Err(e) => return fail(&e),
    };
    let Signals { hup, term, int } = signals;
    let exit = match runtime.block_on(kms::api::serve(cfg, pin, hup, shutdown_signal(term, int))) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    };
    // `serve` has drained what it waits for; an HSM call stuck past that (or a start-up stopped
    // half way) must not keep the process alive, as dropping the runtime would.
    runtime.shutdown_timeout(EXIT_GRACE);
    exit
}

/// How long the process waits, once `serve` returns, for blocking work still running.
const EXIT_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

struct Signals {
    hup: Signal,
    term: Signal,
    int: Signal,
}

impl Signals {
    /// Inside the runtime.
    fn register() -> Result<Signals, String> {
        let catch = |kind: SignalKind, name: &str| signal(kind).map_err(|e| format!("cannot handle {name}: {e}"));
        Ok(Signals {
            hup: catch(SignalKind::hangup(), "SIGHUP")?,
            term: catch(SignalKind::terminate(), "SIGTERM")?,
            int: catch(SignalKind::interrupt(), "SIGINT")?,
        })
    }
}

fn fail(message: &str) -> ExitCode {
    eprintln!("kms: {message}");
    ExitCode::FAILURE
}

async fn shutdown_signal(mut term: Signal, mut int: Signal) {
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!("shutting down");
}
