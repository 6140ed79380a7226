//! Test harness: a throwaway HSM token and a real `kms serve` process on an ephemeral port.
//!
//! The HSM is chosen by `KMS_TEST_HSM`: `softhsm` (default) or `hsm-sim`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use kms::proto::key_management_service_client::KeyManagementServiceClient;
use kms::proto::{self as pb};
use tempfile::TempDir;
use tonic::transport::Channel;

pub const PIN: &str = "test-user-pin-1234";
const SO_PIN: &str = "test-so-pin-5678";
pub const TOKEN: &str = "kms-test";

pub type Client = KeyManagementServiceClient<Channel>;

/// A token directory of its own, initialised with a fresh token.
pub struct TestHsm {
    /// Keeps the token directory alive for the test.
    #[allow(dead_code)]
    pub dir: TempDir,
    pub module: PathBuf,
    /// Environment that points the module at this token directory.
    pub env: Vec<(String, String)>,
}

impl TestHsm {
    pub fn new() -> TestHsm {
        match std::env::var("KMS_TEST_HSM").as_deref() {
            Ok("hsm-sim") => Self::hsm_sim(),
            Ok("softhsm") | Err(_) => Self::softhsm(),
            Ok(other) => panic!("KMS_TEST_HSM must be softhsm or hsm-sim, got {other}"),
        }
    }

    pub fn softhsm() -> TestHsm {
        let dir = tempfile::tempdir().unwrap();
        let tokens = dir.path().join("tokens");
        std::fs::create_dir(&tokens).unwrap();
        let conf = dir.path().join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                tokens.display()
            ),
        )
        .unwrap();
        let env = vec![("SOFTHSM2_CONF".to_string(), conf.display().to_string())];
        let out = Command::new("softhsm2-util")
            .args([
                "--init-token",
                "--free",
                "--label",
                TOKEN,
                "--pin",
                PIN,
                "--so-pin",
                SO_PIN,
            ])
            .envs(env.iter().cloned())
            .output()
            .expect("softhsm2-util must be installed (apt-get install softhsm2)");
        assert!(
            out.status.success(),
            "softhsm2-util failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        TestHsm {
            dir,
            module: PathBuf::from("/usr/lib/softhsm/libsofthsm2.so"),
            env,
        }
    }

    pub fn hsm_sim() -> TestHsm {
        let dir = tempfile::tempdir().unwrap();
        let tokens = dir.path().join("tokens");
        std::fs::create_dir(&tokens).unwrap();
        let conf = dir.path().join("hsm-sim.toml");
        // Few KDF iterations: logins are frequent in tests, and the PIN is a test PIN.
        let toml = format!(
            "token_dir = {:?}\npbkdf2_iterations = 1000\n",
            tokens.display().to_string()
        );
        std::fs::write(&conf, toml).unwrap();
        let env = vec![("HSM_SIM_CONF".to_string(), conf.display().to_string())];
        let module = hsm_sim_module();
        let out = Command::new("pkcs11-tool")
            .args([
                "--module",
                module.to_str().unwrap(),
                "--init-token",
                "--label",
                TOKEN,
                "--so-pin",
                SO_PIN,
            ])
            .envs(env.iter().cloned())
            .output()
            .expect("pkcs11-tool must be installed (apt-get install opensc)");
        assert!(
            out.status.success(),
            "init-token failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = Command::new("pkcs11-tool")
            .args([
                "--module",
                module.to_str().unwrap(),
                "--token-label",
                TOKEN,
                "--login",
                "--login-type",
                "so",
            ])
            .args(["--so-pin", SO_PIN, "--init-pin", "--new-pin", PIN])
            .envs(env.iter().cloned())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "init-pin failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        TestHsm { dir, module, env }
    }
}

/// target/<profile>/libhsm_sim.so, next to the test binary's parent directory.
fn hsm_sim_module() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap();
    let so = profile_dir.join("libhsm_sim.so");
    assert!(
        so.exists(),
        "{} is missing: run `cargo build -p hsm-sim` first",
        so.display()
    );
    so
}

/// A running `kms serve` with its own data directory and HSM token.
pub struct Server {
    pub hsm: TestHsm,
    pub data: TempDir,
    pub addr: String,
    pub extra_config: String,
    /// Extra lines inside the generated `[hsm]` section.
    pub extra_hsm: String,
    child: Option<Child>,
}

impl Server {
    pub async fn start() -> Server {
        Self::start_with("").await
    }

    /// Starts with extra TOML lines appended to the generated config.
    pub async fn start_with(extra_config: &str) -> Server {
        Self::start_on(TestHsm::new(), extra_config, "").await
    }

    /// Starts on a given HSM, with extra config sections and extra `[hsm]` keys.
    pub async fn start_on(hsm: TestHsm, extra_config: &str, extra_hsm: &str) -> Server {
        let mut s = Server {
            hsm,
            data: tempfile::tempdir().unwrap(),
            addr: String::new(),
            extra_config: extra_config.to_string(),
            extra_hsm: extra_hsm.to_string(),
            child: None,
        };
        s.launch().await;
        s
    }

    /// Dev mode (unauthenticated callers act as the account root) unless the test sets
    /// `dev_mode` itself in its extra config.
    fn dev_flag(&self) -> &'static [&'static str] {
        if self.extra_config.contains("dev_mode") {
            &[]
        } else {
            &["--dev"]
        }
    }

    pub fn config_path(&self) -> PathBuf {
        self.data.path().join("kms.toml")
    }

    pub fn data_dir(&self) -> PathBuf {
        self.data.path().join("data")
    }

    async fn launch(&mut self) {
        // Top-level keys of the extra configuration (before its first [table]) go before [hsm].
        let tables_at = self
            .extra_config
            .find("\n[")
            .map(|i| i + 1)
            .unwrap_or(if self.extra_config.starts_with('[') {
                0
            } else {
                self.extra_config.len()
            });
        let (top, tables) = self.extra_config.split_at(tables_at);
        let config = format!(
            "listen = \"127.0.0.1:0\"\n{top}\n[hsm]\nmodule = {module:?}\ntoken_label = {TOKEN:?}\npin_env = \"KMS_TEST_PIN\"\n{hsm}\n{tables}\n",
            module = self.hsm.module.display().to_string(),
            hsm = self.extra_hsm,
        );
        std::fs::write(self.config_path(), config).unwrap();
        let child = self
            .serve_command()
            // Warnings, and the server's own notes (a SIGHUP reload's success).
            .env("RUST_LOG", "warn,kms::api::server=info")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        self.adopt(child).await;
    }

    /// Waits for the `kms serve` child's `kms listening on` line (stdout piped) and makes it this
    /// server.
    async fn adopt(&mut self, mut child: std::process::Child) {
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("kms listening on ") {
                    let _ = tx.send(addr.to_string());
                }
            }
        });
        let addr = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(60)))
            .await
            .unwrap()
            .unwrap_or_else(|_| panic!("kms did not start: {:?}", child.try_wait()));
        self.addr = addr;
        self.child = Some(child);
    }

    pub async fn client(&self) -> Client {
        let channel = Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .unwrap();
        KeyManagementServiceClient::new(channel)
    }

    /// Graceful stop (SIGTERM), waiting for the process to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits up to `limit` for the exit: its status, or None (the server is then
    /// killed).
    pub fn stop_within(&mut self, limit: std::time::Duration) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            if let Some(status) = child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    /// SIGTERM, without waiting for the server to exit (`stop` waits).
    pub fn sigterm(&self) {
        if let Some(child) = &self.child {
            let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        }
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub async fn restart(&mut self) {
        self.stop();
        self.launch().await;
    }

    /// Starts again after `stop` or `kill`.
    pub async fn start_again(&mut self) {
        assert!(self.child.is_none());
        self.launch().await;
    }

    /// `kms serve` on this server's config, data directory and HSM (with the test PIN); callers
    /// add what they need to watch it.
    pub fn serve_command(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_kms"));
        command
            .args(["serve", "--config"])
            .arg(self.config_path())
            .args(self.dev_flag())
            .arg("--data-dir")
            .arg(self.data_dir())
            .envs(self.hsm.env.iter().cloned())
            .env("KMS_TEST_PIN", PIN);
        command
    }

    pub fn exit_status_of_start(&mut self) -> std::process::Output {
        // Used by tests that expect the server to refuse to start.
        self.serve_command().output().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The AWS exception name a failed call carried.
pub fn error_type(status: &tonic::Status) -> String {
    status
        .metadata()
        .get("x-kms-error-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_else(|| format!("<no x-kms-error-type; code {:?}: {}>", status.code(), status.message()))
}

/// Asserts that `result` failed with the AWS exception `expected`, and returns its message.
#[track_caller]
pub fn expect_err<T: std::fmt::Debug>(result: Result<tonic::Response<T>, tonic::Status>, expected: &str) -> String {
    match result {
        Ok(r) => panic!("expected {expected}, got success: {:?}", r.into_inner()),
        Err(s) => {
            assert_eq!(error_type(&s), expected, "message: {}", s.message());
            s.message().to_string()
        }
    }
}

/// A GenerateDataKey request for a 256-bit data key under `key_id`.
pub fn gdk(key_id: &str) -> pb::GenerateDataKeyRequest {
    pb::GenerateDataKeyRequest {
        key_id: key_id.into(),
        key_spec: Some("AES_256".into()),
        ..Default::default()
    }
}

pub async fn create_key(c: &mut Client) -> pb::KeyMetadata {
    c.create_key(pb::CreateKeyRequest::default())
        .await
        .unwrap()
        .into_inner()
        .key_metadata
        .unwrap()
}

/// A key of `spec` and `usage`.
pub async fn create_key_of(c: &mut Client, spec: &str, usage: &str) -> pb::KeyMetadata {
    c.create_key(pb::CreateKeyRequest {
        key_spec: Some(spec.into()),
        key_usage: Some(usage.into()),
        ..Default::default()
    })
    .await
    .unwrap_or_else(|s| panic!("CreateKey {spec} {usage}: {} {}", error_type(&s), s.message()))
    .into_inner()
    .key_metadata
    .unwrap()
}

pub async fn create_key_with_policy(c: &mut Client, policy: String) -> pb::KeyMetadata {
    c.create_key(pb::CreateKeyRequest {
        policy: Some(policy),
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner()
    .key_metadata
    .unwrap()
}

/// The key's grants (one page: the tests make few).
pub async fn grants_of(c: &mut Client, key: &str) -> Vec<pb::GrantListEntry> {
    c.list_grants(pb::ListGrantsRequest {
        key_id: key.into(),
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner()
    .grants
}

/// Every file below `dir`, recursively.
pub fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

// ---- Authentication: signals, the audit log, TLS and bearer-token clients (auth.rs, policies.rs) ----

impl Server {
    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the server is running").id()
    }

    /// SIGHUP: the server reloads its identity policies, tokens and certificate rules.
    pub fn sighup(&self) {
        let status = Command::new("kill")
            .args(["-HUP", &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -HUP failed");
    }

    /// Rewrites hsm-sim's fault control file atomically and waits past its 50 ms re-read interval.
    pub async fn set_faults(&self, toml: &str) {
        let dir = self.hsm.dir.path().join("tokens");
        let tmp = dir.join("faults.toml.tmp");
        std::fs::write(&tmp, toml).unwrap();
        std::fs::rename(&tmp, dir.join("faults.toml")).unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;
    }

    /// The audit log's records as text, without the preallocated NUL padding after them.
    pub fn audit_text(&self) -> String {
        let text = std::fs::read_to_string(self.data_dir().join("audit.log")).unwrap_or_default();
        text.trim_end_matches('\0').to_string()
    }

    /// The audit log's text and its records.
    pub fn audit_records(&self) -> (String, Vec<serde_json::Value>) {
        let text = self.audit_text();
        let records = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("audit line {l:?}: {e}")))
            .collect();
        (text, records)
    }

    /// The audit record of the request `status` answered (by its `x-kms-request-id`).
    pub fn audit_record_of(&self, status: &tonic::Status) -> serde_json::Value {
        let id = request_id(status);
        let (_, records) = self.audit_records();
        records
            .into_iter()
            .find(|r| r["request_id"] == id)
            .unwrap_or_else(|| panic!("request {id} is not in the audit log"))
    }
}

/// The `x-kms-request-id` an error answer carries.
pub fn request_id(status: &tonic::Status) -> String {
    let id = status.metadata().get("x-kms-request-id").expect("a request id");
    id.to_str().unwrap().to_string()
}

/// Adds `authorization: Bearer <token>` to every request, when it has a token.
#[derive(Clone, Default)]
pub struct Bearer(Option<tonic::metadata::AsciiMetadataValue>);

impl Bearer {
    /// `header` is the whole metadata value, e.g. `Bearer abc` (or a malformed one).
    pub fn header(header: &str) -> Bearer {
        Bearer(Some(header.parse().unwrap()))
    }

    /// A metadata value of arbitrary bytes (e.g. not ASCII).
    pub fn bytes(value: &[u8]) -> Bearer {
        Bearer(Some(tonic::metadata::AsciiMetadataValue::try_from(value).unwrap()))
    }

    pub fn token(token: Option<&str>) -> Bearer {
        Bearer(token.map(|t| format!("Bearer {t}").parse().unwrap()))
    }
}

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            request.metadata_mut().insert("authorization", v.clone());
        }
        Ok(request)
    }
}

pub type AuthClient = KeyManagementServiceClient<tonic::service::interceptor::InterceptedService<Channel, Bearer>>;

/// A client over TLS that trusts `ca_pem` for the server name `localhost`, presents `identity`
/// (certificate and key PEM) when given, and sends `bearer` with every request.
pub async fn tls_client(
    server: &Server,
    ca_pem: &[u8],
    identity: Option<(&[u8], &[u8])>,
    bearer: Bearer,
) -> Result<AuthClient, tonic::transport::Error> {
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    let channel = Channel::from_shared(format!("https://{}", server.addr))
        .unwrap()
        .tls_config(tls)?
        .connect()
        .await?;
    Ok(KeyManagementServiceClient::with_interceptor(channel, bearer))
}

/// A plaintext connection to the server, for clients of any shape (raw gRPC included).
pub async fn plain_channel(server: &Server) -> Channel {
    Channel::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// A plaintext client that sends `bearer` with every request.
pub async fn plain_client(server: &Server, bearer: Bearer) -> AuthClient {
    KeyManagementServiceClient::with_interceptor(plain_channel(server).await, bearer)
}

/// An encryption context from string pairs.
pub fn ctx(pairs: &[(&str, &str)]) -> std::collections::HashMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

// ---- Start-up (auth.rs): the server process with extra arguments, unwaited ----

impl Server {
    /// `kms serve` on this server's config and data directory with extra arguments, run to its
    /// exit (for configurations it must refuse); killed after 30 s if it is still running (it
    /// accepted the configuration). The server itself must be stopped.
    pub fn output_of_start_with(&self, extra_args: &[&str]) -> std::process::Output {
        assert!(self.child.is_none(), "stop the server first");
        let mut child = self
            .serve_command()
            .args(extra_args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while child.try_wait().unwrap().is_none() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        child.wait_with_output().unwrap()
    }

    /// `kms serve` on this server's config and data directory, stdout piped, not waited for.
    /// The server itself must be stopped.
    pub fn spawn_process(&self) -> Child {
        assert!(self.child.is_none(), "stop the server first");
        self.serve_command()
            // Warnings, and the server's own notes (a SIGHUP reload's success).
            .env("RUST_LOG", "warn,kms::api::server=info")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap()
    }
}

/// Runs the futures concurrently (each on a task of its own) and returns their outputs in order.
pub async fn futures_join_all<F: std::future::Future + Send + 'static>(
    futures: impl Iterator<Item = F>,
) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

// ---- The server's log (faults.rs) ----

impl Server {
    /// Restarts the server with its stderr, the log, captured instead of inherited: the returned
    /// buffer collects every line (each also echoed to the test's stderr). `restart` and `stop`
    /// work as before; a later `restart` inherits stderr again.
    pub async fn restart_capturing_log(&mut self) -> std::sync::Arc<std::sync::Mutex<String>> {
        self.stop();
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let mut child = self
            .serve_command()
            // Warnings, and the server's own notes (a SIGHUP reload's success).
            .env("RUST_LOG", "warn,kms::api::server=info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("{line}");
                let mut log = sink.lock().unwrap_or_else(|e| e.into_inner());
                log.push_str(&line);
                log.push('\n');
            }
        });
        self.adopt(child).await;
        log
    }
}

/// A key's metadata (DescribeKey).
pub async fn describe(c: &mut Client, key_id: &str) -> pb::KeyMetadata {
    c.describe_key(pb::DescribeKeyRequest {
        key_id: key_id.into(),
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner()
    .key_metadata
    .unwrap()
}

/// How many keys ListKeys lists (up to 1000).
pub async fn key_count(c: &mut Client) -> usize {
    c.list_keys(pb::ListKeysRequest {
        limit: Some(1000),
        marker: None,
    })
    .await
    .unwrap()
    .into_inner()
    .keys
    .len()
}

/// How many calls to `func` hsm-sim's fault rule recorded in `file` (its `record` key).
pub fn recorded_calls(file: &std::path::Path, func: &str) -> usize {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    text.lines().filter(|l| *l == func).count()
}

/// Waits (up to 30 s) for hsm-sim to record a C_Login: a server starting with a slow login is
/// then past installing its signal handlers (they come before the HSM is opened).
pub async fn wait_for_a_login(record: &std::path::Path) {
    let waited = std::time::Instant::now();
    while recorded_calls(record, "C_Login") == 0 {
        assert!(
            waited.elapsed() < std::time::Duration::from_secs(30),
            "no C_Login in 30 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// A child process killed when the test ends, however it ends.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A health Watch stream of the whole server (service ""), its first update (SERVING) read.
pub async fn watch_health(server: &Server) -> tonic::Streaming<tonic_health::pb::HealthCheckResponse> {
    use tonic_health::pb::{health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest};
    let mut health = HealthClient::new(plain_channel(server).await);
    let request = HealthCheckRequest { service: String::new() };
    let mut updates = health.watch(request).await.unwrap().into_inner();
    let first = updates.message().await.unwrap().expect("no first update");
    assert_eq!(first.status(), ServingStatus::Serving);
    updates
}
