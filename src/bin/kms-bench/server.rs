//! Starts and stops `kms serve` child processes: the `kms` binary beside this one, on a chosen HSM,
//! with its own data directory and config, on an ephemeral port.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::hsm::{self, HsmKind};

const PIN_ENV: &str = "KMS_BENCH_PIN";
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// What to start.
#[derive(Debug, Clone)]
pub struct ServerSpec {
    pub hsm: HsmKind,
    /// false: `[cache] material_ttl_seconds = 0`, every use of a key unwraps its material in the HSM.
    pub cache: bool,
    /// Holds the config, the data directory and any SoftHSM2 token. Made if missing.
    pub dir: PathBuf,
    /// Keep `dir` when the server stops (a store to reuse), instead of removing it.
    pub keep: bool,
}

impl ServerSpec {
    /// A fresh directory under `root`, removed when the server stops.
    pub fn fresh(hsm: HsmKind, cache: bool, root: &Path) -> ServerSpec {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        ServerSpec {
            hsm,
            cache,
            dir: root.join(format!("kms-bench-{}-{n}", std::process::id())),
            keep: false,
        }
    }

    pub fn label(&self) -> String {
        format!("{} cache={}", self.hsm.name(), if self.cache { "on" } else { "off" })
    }
}

/// A running `kms serve`.
pub struct KmsServer {
    child: Option<Child>,
    pub url: String,
    pub pid: u32,
    /// From spawning the process to its `kms listening on` line.
    pub startup: Duration,
    spec: ServerSpec,
}

impl KmsServer {
    pub fn start(spec: &ServerSpec) -> Result<KmsServer, String> {
        let (child, url, startup) = launch(spec)?;
        Ok(KmsServer {
            pid: child.id(),
            child: Some(child),
            url,
            startup,
            spec: spec.clone(),
        })
    }

    pub fn label(&self) -> String {
        self.spec.label()
    }

    /// Stops the process and starts it again on the same directory (store, token, config).
    pub fn restart(&mut self) -> Result<(), String> {
        if let Some(child) = self.child.take() {
            stop_child(child);
        }
        let (child, url, startup) = launch(&self.spec)?;
        self.pid = child.id();
        self.child = Some(child);
        self.url = url;
        self.startup = startup;
        Ok(())
    }

    /// Graceful stop (SIGTERM), then SIGKILL after 5 s. Removes the directory unless kept.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(child) = self.child.take() {
            stop_child(child);
        }
        if !self.spec.keep {
            let _ = std::fs::remove_dir_all(&self.spec.dir);
        }
    }
}

impl Drop for KmsServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Writes the config and spawns `kms serve`; returns the child, its URL and its start-up time (from
/// spawning to the `kms listening on` line).
fn launch(spec: &ServerSpec) -> Result<(Child, String, Duration), String> {
    let kms = hsm::sibling("kms")?;
    std::fs::create_dir_all(&spec.dir).map_err(|e| format!("cannot create {}: {e}", spec.dir.display()))?;
    let mut config = String::from("listen = \"127.0.0.1:0\"\n");
    let mut env = vec![("RUST_LOG".to_string(), "error".to_string())];
    if spec.hsm == HsmKind::SoftHsm {
        let token = hsm::softhsm_token(&spec.dir)?;
        config += &format!(
            "[hsm]\nmodule = {:?}\ntoken_label = {:?}\npin_env = {PIN_ENV:?}\n",
            token.module.display().to_string(),
            hsm::TOKEN_LABEL
        );
        env.extend(token.env);
        env.push((PIN_ENV.to_string(), hsm::USER_PIN.to_string()));
    } // else: no module configured, the server uses its embedded hsm-sim in the data dir
    if !spec.cache {
        config += "[cache]\nmaterial_ttl_seconds = 0\n";
    }
    let config_path = spec.dir.join("kms.toml");
    std::fs::write(&config_path, config).map_err(|e| format!("cannot write {}: {e}", config_path.display()))?;
    let began = Instant::now();
    let mut child = Command::new(&kms)
        .args(["serve", "--dev", "--config"])
        .arg(&config_path)
        .arg("--data-dir")
        .arg(spec.dir.join("data"))
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", kms.display()))?;
    match wait_for_line(&mut child, "kms listening on ", START_TIMEOUT) {
        Ok(addr) => Ok((child, format!("http://{addr}"), began.elapsed())),
        Err(e) => {
            let status = child.try_wait().ok().flatten();
            let _ = child.kill();
            let _ = child.wait();
            Err(format!(
                "kms ({}) did not start: {e}; exit status {status:?}",
                spec.label()
            ))
        }
    }
}

/// SIGTERM through `kill` (no unsafe libc call here), then SIGKILL if it lingers.
pub fn stop_child(mut child: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .stderr(Stdio::null())
        .status();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Reads the child's stdout until a line starts with `prefix` and returns the rest of it. A thread
/// keeps draining stdout afterwards so the child never blocks on a full pipe.
pub fn wait_for_line(child: &mut Child, prefix: &'static str, timeout: Duration) -> Result<String, String> {
    let stdout = child.stdout.take().ok_or("child stdout is not piped")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(rest) = line.strip_prefix(prefix) {
                let _ = tx.send(rest.trim().to_string());
            }
        }
    });
    rx.recv_timeout(timeout)
        .map_err(|_| format!("no `{prefix}` line within {} s", timeout.as_secs()))
}
