//! One typed configuration: a TOML file plus command-line flags, with defaults that run with no file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// gRPC listen address; port 0 picks a free port (the bound address is printed at start).
    pub listen: SocketAddr,
    /// Directory of the SQLite store and the audit log.
    pub data_dir: PathBuf,
    /// The region and account that appear in key ARNs.
    pub region: String,
    pub account_id: String,
    pub partition: String,
    pub hsm: HsmConfig,
    pub cache: CacheConfig,
    pub deletion: DeletionConfig,
    pub limits: LimitsConfig,
    pub auth: crate::auth::AuthConfig,
    pub tls: Option<TlsConfig>,
    /// Serve gRPC reflection (grpcurl's `list`, `describe`). Off by default: it answers without
    /// credentials with ~40 KB descriptors, which a client that never reads them can pile up in
    /// the server's memory.
    pub reflection: bool,
    /// Allow core files and ptrace by the same user. Off by default: the process's memory holds
    /// unwrapped key material and the HSM PIN (`core_dumps.rs`).
    pub core_dumps: bool,
    /// The file this was read from (not a setting): SIGHUP reads its `auth` tokens and
    /// certificate rules again.
    #[serde(skip)]
    pub file: Option<PathBuf>,
    /// The settings SIGHUP doesn't reload, as the file gave them at start (before command-line
    /// flags): a reload names those edited since, which wait for a restart.
    #[serde(skip)]
    file_settings: Vec<(&'static str, String)>,
}

/// The config file's settings edited since the start, which SIGHUP doesn't reload.
#[derive(Debug)]
pub struct EditedSettings {
    pub names: Vec<&'static str>,
    /// Why the file as it is now would not start the server.
    pub invalid: Option<String>,
}

/// Server TLS. With `client_ca_file`, client certificates are verified (mTLS) and may
/// authenticate callers; requests without one may still use bearer tokens.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub client_ca_file: Option<PathBuf>,
    /// PEM certificate revocation lists of the client CAs: a revoked client certificate is refused
    /// at the handshake and, after a SIGHUP reload, on connections already open.
    pub client_crl_file: Option<PathBuf>,
    /// Refuse at the handshake a client without a certificate (tokens then need one too).
    #[serde(default)]
    pub require_client_certificate: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HsmConfig {
    /// Path of the PKCS#11 module (.so). Unset: the embedded hsm-sim, with a token in the data dir.
    pub module: Option<PathBuf>,
    /// Label of the token that holds the root key.
    pub token_label: String,
    /// File holding the user PIN (CloudHSM: `CU_user:password`). Takes precedence over `pin_env`.
    pub pin_file: Option<PathBuf>,
    /// Environment variable holding the user PIN.
    pub pin_env: String,
    /// CKA_ID of the root key, as hex.
    pub root_key_id: String,
    /// Create the root key when it is absent and the store holds no keys yet. With keys in the
    /// store a missing root key always stops the server: making a new one would orphan them.
    /// Unset: yes on software tokens (SoftHSM2, hsm-sim), no on CloudHSM and other hardware HSMs,
    /// where a production root key is created once, on purpose.
    pub create_root_key: Option<bool>,
    /// Upper bound on PKCS#11 sessions open at once.
    pub max_sessions: usize,
    /// Give up on one HSM call after this long (DependencyTimeoutException).
    pub timeout_ms: u64,
    /// Attempts for a call that fails with a device error (KeyUnavailableException after the last).
    pub retry_attempts: u32,
    /// Vendor quirks: "auto" (from C_GetInfo), "softhsm2", "cloudhsm", "hsm-sim", "generic".
    pub vendor: String,
    /// Software tokens: operations use a session copy of the root key, and the token object is
    /// looked up again this often; once it is gone the copy is destroyed. 0: no copy.
    pub root_check_seconds: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// How long unwrapped key material stays in memory; 0 unwraps in the HSM on every use.
    pub material_ttl_seconds: u64,
    /// At most this many unwrapped materials in memory.
    pub material_capacity: usize,
    /// At most this many key records and aliases in memory.
    pub metadata_capacity: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// A request, body and answer, must be over within this: a client that trickles its body
    /// can't hold a stream, and the memory behind it, for longer. Ample for the slowest call
    /// (HSM retries, RSA 4096 key generation).
    pub request_timeout_seconds: u64,
    /// Connections open at once; at the cap the server stops accepting until one closes. Lowered
    /// at start to fit under the open-files limit (`ulimit -n`) with room for the store and log.
    pub max_connections: usize,
    /// Connections open at once from one source address; more are closed when accepted. 0: no
    /// cap per address (behind a proxy that hides client addresses).
    pub max_connections_per_ip: usize,
    /// A connection older than this is asked to close (HTTP/2 GOAWAY): its client reconnects, so
    /// load spreads over new servers and slots held by long-lived clients come back. Requests in
    /// flight finish first. 0: connections live as long as their client keeps them.
    pub max_connection_age_seconds: u64,
    /// Request bytes the server holds at once, over all connections (each message counted at its
    /// declared length from the moment its header arrives). A request that would go past it is
    /// refused with ThrottlingException; without it one client could pin hundreds of MiB per
    /// connection with bodies it never finishes.
    pub max_request_bytes_in_flight: usize,
    /// The part of `max_request_bytes_in_flight` one principal may hold (callers without
    /// credentials, on the health and reflection services, share one), so that one client can't
    /// throttle the others. Above the total it is the total.
    pub max_request_bytes_per_principal: usize,
}

/// The largest connection cap accepted (each connection is a file descriptor).
const MAX_CONNECTIONS: usize = 1_000_000;
/// The bounds of `max_request_bytes_in_flight` and `max_request_bytes_per_principal`: room for
/// two requests of the largest size, and 1 TiB.
const MIN_REQUEST_BYTES_IN_FLIGHT: usize = 1 << 20;
const MAX_REQUEST_BYTES_IN_FLIGHT: usize = 1 << 40;
/// The longest connection age accepted: 30 days.
const MAX_CONNECTION_AGE_SECONDS: u64 = 30 * 24 * 3600;

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            request_timeout_seconds: 30,
            max_connections: 4096,
            max_connections_per_ip: 256,
            max_connection_age_seconds: 0,
            max_request_bytes_in_flight: 64 << 20,
            max_request_bytes_per_principal: 16 << 20,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeletionConfig {
    /// How often the scheduler looks for keys whose pending window has ended.
    pub check_interval_seconds: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:7300".parse().expect("static address"),
            data_dir: PathBuf::from("data"),
            region: "us-east-1".into(),
            account_id: "111122223333".into(),
            partition: "aws".into(),
            hsm: HsmConfig::default(),
            cache: CacheConfig::default(),
            deletion: DeletionConfig::default(),
            limits: LimitsConfig::default(),
            auth: crate::auth::AuthConfig::default(),
            tls: None,
            reflection: false,
            core_dumps: false,
            file: None,
            file_settings: Vec::new(),
        }
    }
}

/// The most PKCS#11 sessions (and so HSM worker threads, twice that while calls hang) a server
/// opens.
pub const MAX_HSM_SESSIONS: usize = 1024;

impl Default for HsmConfig {
    fn default() -> Self {
        HsmConfig {
            module: None,
            token_label: "kms".into(),
            pin_file: None,
            pin_env: "KMS_HSM_PIN".into(),
            root_key_id: "6b6d732d726f6f742d7631".into(), // "kms-root-v1"
            create_root_key: None,
            max_sessions: 32,
            timeout_ms: 5000,
            retry_attempts: 3,
            vendor: "auto".into(),
            root_check_seconds: 10,
        }
    }
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            material_ttl_seconds: 300,
            material_capacity: 10_000,
            metadata_capacity: 100_000,
        }
    }
}

impl Default for DeletionConfig {
    fn default() -> Self {
        DeletionConfig {
            check_interval_seconds: 60,
        }
    }
}

impl Config {
    /// Reads a TOML file; keys it does not name keep their defaults.
    pub fn from_file(path: &Path) -> Result<Config, String> {
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
        let mut config: Config = toml::from_str(&text).map_err(|e| format!("config file {}: {e}", path.display()))?;
        config.file = Some(path.to_path_buf());
        config.file_settings = config.restart_settings();
        Ok(config)
    }

    /// This configuration with the credentials (`auth.tokens`, `auth.certificates`) of its file as
    /// it is now, checked as at start-up, and the names of the file's other settings edited since
    /// the start: those need a restart.
    pub fn with_reread_credentials(&self) -> Result<(Config, EditedSettings), String> {
        let Some(path) = &self.file else {
            return Err("the server was started without a config file".into());
        };
        let reread = Config::from_file(path)?;
        let names: Vec<_> = reread
            .file_settings
            .iter()
            .zip(&self.file_settings)
            .filter(|(now, then)| now != then)
            .map(|((name, _), _)| *name)
            .collect();
        // The operator hears now, not at the next start, that an edit is wrong.
        let invalid = match names.is_empty() {
            true => None,
            false => reread.validate().err(),
        };
        let edited = EditedSettings { names, invalid };
        let mut next = self.clone();
        next.auth.tokens = reread.auth.tokens;
        next.auth.certificates = reread.auth.certificates;
        next.validate()?;
        Ok((next, edited))
    }

    /// Every setting but the reloaded ones (`auth.tokens`, `auth.certificates`; the files named
    /// are read again, but not their names), by name, with its value in a comparable form.
    fn restart_settings(&self) -> Vec<(&'static str, String)> {
        // Every field named: a new setting must be placed here, or among the reloaded ones.
        let Config {
            listen,
            data_dir,
            region,
            account_id,
            partition,
            hsm,
            cache,
            deletion,
            limits,
            auth,
            tls,
            reflection,
            core_dumps,
            file: _,
            file_settings: _,
        } = self;
        let crate::auth::AuthConfig {
            dev_mode,
            tokens: _,
            certificates: _,
            identity_policies_file,
            allow_tokens_without_tls,
        } = auth;
        let setting = |name, value: &dyn std::fmt::Debug| (name, format!("{value:?}"));
        vec![
            setting("listen", listen),
            setting("data_dir", data_dir),
            setting("region", region),
            setting("account_id", account_id),
            setting("partition", partition),
            setting("hsm", hsm),
            setting("cache", cache),
            setting("deletion", deletion),
            setting("limits", limits),
            setting("tls", tls),
            setting("reflection", reflection),
            setting("core_dumps", core_dumps),
            setting("auth.dev_mode", dev_mode),
            setting("auth.identity_policies_file", identity_policies_file),
            setting("auth.allow_tokens_without_tls", allow_tokens_without_tls),
        ]
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.account_id.len() != 12 || !self.account_id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("account_id must be 12 digits, got {:?}", self.account_id));
        }
        // They go into every ARN, which is split on ':' and '/': AWS's own names are lower-case
        // letters, digits and hyphens.
        for (name, value) in [("region", &self.region), ("partition", &self.partition)] {
            let ok = !value.is_empty()
                && value.len() <= 64
                && value
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !ok {
                return Err(format!(
                    "{name} must be 1-64 lower-case letters, digits and hyphens, got {value:?}"
                ));
            }
        }
        // PKCS#11 labels are 32 bytes padded with spaces: a longer label or one ending in a space
        // can never be found again.
        let label = &self.hsm.token_label;
        if label.is_empty() || label.len() > 32 || label.ends_with(' ') {
            return Err(format!(
                "hsm.token_label must be 1-32 bytes and not end in a space, got {label:?}"
            ));
        }
        // Checked here too, not only when the module is loaded: before any module is touched.
        if !crate::hsm::VENDORS.contains(&self.hsm.vendor.as_str()) {
            return Err(format!(
                "hsm.vendor must be one of {}; got {:?}",
                crate::hsm::VENDORS.join(", "),
                self.hsm.vendor
            ));
        }
        if hex_decode(&self.hsm.root_key_id).is_none_or(|id| id.is_empty()) {
            return Err(format!(
                "hsm.root_key_id must be non-empty hex, got {:?}",
                self.hsm.root_key_id
            ));
        }
        if self.hsm.max_sessions == 0 || self.hsm.retry_attempts == 0 {
            return Err("hsm.max_sessions and hsm.retry_attempts must be at least 1".into());
        }
        // Each session may get a worker thread, and up to twice as many while calls hang: a typo
        // (100000) must not become that many threads and sessions.
        if self.hsm.max_sessions > MAX_HSM_SESSIONS {
            return Err(format!(
                "hsm.max_sessions must be 1 to {MAX_HSM_SESSIONS}, got {}",
                self.hsm.max_sessions
            ));
        }
        if self.hsm.retry_attempts > 10 {
            return Err(format!(
                "hsm.retry_attempts must be 1 to 10, got {}",
                self.hsm.retry_attempts
            ));
        }
        if !(10..=600_000).contains(&self.hsm.timeout_ms) {
            return Err(format!(
                "hsm.timeout_ms must be 10 to 600000, got {}",
                self.hsm.timeout_ms
            ));
        }
        if !(1..=3600).contains(&self.limits.request_timeout_seconds) {
            return Err(format!(
                "limits.request_timeout_seconds must be 1 to 3600, got {}",
                self.limits.request_timeout_seconds
            ));
        }
        if !(1..=MAX_CONNECTIONS).contains(&self.limits.max_connections) {
            return Err(format!(
                "limits.max_connections must be 1 to {MAX_CONNECTIONS}, got {}",
                self.limits.max_connections
            ));
        }
        if self.limits.max_connections_per_ip > MAX_CONNECTIONS {
            return Err(format!(
                "limits.max_connections_per_ip must be 0 (no cap) to {MAX_CONNECTIONS}, got {}",
                self.limits.max_connections_per_ip
            ));
        }
        if self.limits.max_connection_age_seconds > MAX_CONNECTION_AGE_SECONDS {
            return Err(format!(
                "limits.max_connection_age_seconds must be 0 (no limit) to {MAX_CONNECTION_AGE_SECONDS}, got {}",
                self.limits.max_connection_age_seconds
            ));
        }
        let in_flight = self.limits.max_request_bytes_in_flight;
        if !(MIN_REQUEST_BYTES_IN_FLIGHT..=MAX_REQUEST_BYTES_IN_FLIGHT).contains(&in_flight) {
            return Err(format!(
                "limits.max_request_bytes_in_flight must be {MIN_REQUEST_BYTES_IN_FLIGHT} to {MAX_REQUEST_BYTES_IN_FLIGHT}, got {in_flight}"
            ));
        }
        let share = self.limits.max_request_bytes_per_principal;
        if !(MIN_REQUEST_BYTES_IN_FLIGHT..=MAX_REQUEST_BYTES_IN_FLIGHT).contains(&share) {
            return Err(format!(
                "limits.max_request_bytes_per_principal must be {MIN_REQUEST_BYTES_IN_FLIGHT} to {MAX_REQUEST_BYTES_IN_FLIGHT}, got {share}"
            ));
        }
        if !(1..=MAX_DELETION_CHECK_INTERVAL_SECONDS).contains(&self.deletion.check_interval_seconds) {
            return Err(format!(
                "deletion.check_interval_seconds must be 1 to {MAX_DELETION_CHECK_INTERVAL_SECONDS} (a day), got {}",
                self.deletion.check_interval_seconds
            ));
        }
        if self.auth.dev_mode && !self.listen.ip().is_loopback() {
            return Err(format!(
                "dev mode (auth.dev_mode or --dev) makes every caller without credentials the account \
                 root, so it only listens on a loopback address (127.0.0.1, ::1); listen is {}",
                self.listen
            ));
        }
        if !self.auth.tokens.is_empty()
            && self.tls.is_none()
            && !self.listen.ip().is_loopback()
            && !self.auth.allow_tokens_without_tls
        {
            return Err(format!(
                "auth.tokens without [tls] would send bearer tokens in the clear to {}: configure [tls], \
                 listen on a loopback address, or set auth.allow_tokens_without_tls = true (e.g. behind \
                 a TLS-terminating proxy on the same host)",
                self.listen
            ));
        }
        if !self.auth.certificates.is_empty() && self.tls.as_ref().is_none_or(|t| t.client_ca_file.is_none()) {
            return Err(
                "auth.certificates needs [tls] with client_ca_file: without a client CA no \
                        client certificate is ever verified, so no rule could match"
                    .into(),
            );
        }
        if let Some(tls) = self.tls.as_ref().filter(|t| t.client_ca_file.is_none()) {
            if tls.client_crl_file.is_some() {
                return Err(
                    "tls.client_crl_file needs tls.client_ca_file: the lists revoke client certificates".into(),
                );
            }
            if tls.require_client_certificate {
                return Err(
                    "tls.require_client_certificate needs tls.client_ca_file: without a client CA no \
                            certificate is accepted"
                        .into(),
                );
            }
        }
        // Tokens, certificate rules and revocation lists, checked before the HSM is opened.
        // The client CAs are read with the TLS files (`check_files`, and at each load).
        let trust = crate::auth::ClientTrust::lists_only(self.tls.as_ref())?;
        crate::auth::Authenticator::new(&self.auth, &trust, &self.partition, &self.account_id)?;
        Ok(())
    }
}

/// Keys due for deletion wait at most this long past their window (and tokio's timer overflows
/// on an interval near u64::MAX seconds).
const MAX_DELETION_CHECK_INTERVAL_SECONDS: u64 = 86_400;

pub fn hex_decode(s: &str) -> Option<Vec<u8>> {
    // Digits only: from_str_radix alone would take "+a" as a byte.
    if !s.len().is_multiple_of(2) || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_files_override() {
        assert!(Config::default().validate().is_ok());
        let c: Config = toml::from_str("region = \"eu-west-1\"\n[hsm]\ntoken_label = \"t\"\n").unwrap();
        assert_eq!(c.region, "eu-west-1");
        assert_eq!(c.hsm.token_label, "t");
        assert_eq!(c.hsm.max_sessions, 32);
        assert!(toml::from_str::<Config>("no_such_key = 1").is_err());
    }

    #[test]
    fn bad_values_are_refused() {
        let mut c = Config {
            account_id: "12".into(),
            ..Config::default()
        };
        assert!(c.validate().is_err());
        c.account_id = "111122223333".into();
        c.hsm.root_key_id = "xyz".into();
        assert!(c.validate().is_err());
        assert_eq!(hex_decode("6b6d"), Some(b"km".to_vec()));
    }

    #[test]
    fn dev_mode_listens_on_loopback_only() {
        let mut c = Config::default();
        c.auth.dev_mode = true;
        for ok in ["127.0.0.1:7300", "127.0.0.2:0", "[::1]:7300"] {
            c.listen = ok.parse().unwrap();
            assert!(c.validate().is_ok(), "{ok}");
        }
        for bad in ["0.0.0.0:7300", "[::]:7300", "10.1.2.3:7300"] {
            c.listen = bad.parse().unwrap();
            let err = c.validate().unwrap_err();
            assert!(err.contains("loopback"), "{bad}: {err}");
        }
        c.auth.dev_mode = false;
        assert!(c.validate().is_ok());
    }

    #[test]
    fn names_that_go_into_arns_and_token_labels_are_checked() {
        for (field, bad) in [
            ("region", "eu:west-1"),
            ("region", "EU-WEST-1"),
            ("region", ""),
            ("partition", "aws/x"),
        ] {
            let c: Config = toml::from_str(&format!("{field} = {bad:?}\n")).unwrap();
            let err = c.validate().unwrap_err();
            assert!(err.contains(field), "{bad}: {err}");
        }
        let c: Config = toml::from_str("region = \"eu-west-1\"\npartition = \"aws-cn\"\n").unwrap();
        assert!(c.validate().is_ok());
        for bad in ["", "label ", &"x".repeat(33)] {
            let c: Config = toml::from_str(&format!("[hsm]\ntoken_label = {bad:?}\n")).unwrap();
            assert!(c.validate().unwrap_err().contains("token_label"), "{bad:?}");
        }
        let c: Config = toml::from_str(&format!("[hsm]\ntoken_label = {:?}\n", "x".repeat(32))).unwrap();
        assert!(c.validate().is_ok());
        let c: Config = toml::from_str("[hsm]\nvendor = \"aws\"\n").unwrap();
        assert!(c.validate().unwrap_err().contains("hsm.vendor must be one of"));
        for vendor in crate::hsm::VENDORS {
            let c: Config = toml::from_str(&format!("[hsm]\nvendor = {vendor:?}\n")).unwrap();
            assert!(c.validate().is_ok(), "{vendor}");
        }
    }

    #[test]
    fn bearer_tokens_need_tls_off_loopback() {
        let token = format!(
            "[[auth.tokens]]\nsha256 = {:?}\nprincipal = \"arn:aws:iam::111122223333:user/svc\"\n",
            crate::auth::token_digest("t0123456789abcdef")
        );
        let at = |listen: &str, extra: &str| -> Config {
            toml::from_str(&format!("listen = {listen:?}\n{extra}{token}")).unwrap()
        };
        assert!(at("127.0.0.1:7300", "").validate().is_ok());
        let err = at("0.0.0.0:7300", "").validate().unwrap_err();
        assert!(
            err.contains("in the clear") && err.contains("allow_tokens_without_tls"),
            "{err}"
        );
        let mut c = at("0.0.0.0:7300", "");
        c.auth.allow_tokens_without_tls = true;
        assert!(c.validate().is_ok());
        let tls = "[tls]\ncert_file = \"s.pem\"\nkey_file = \"s.key\"\n";
        let c: Config = toml::from_str(&format!("listen = \"0.0.0.0:7300\"\n{tls}{token}")).unwrap();
        assert!(c.validate().is_ok());
    }

    #[test]
    fn revocation_lists_need_a_client_ca() {
        let tls = "[tls]\ncert_file = \"s.pem\"\nkey_file = \"s.key\"\nclient_crl_file = \"crl.pem\"\n";
        let c: Config = toml::from_str(tls).unwrap();
        let err = c.validate().unwrap_err();
        assert!(err.contains("tls.client_crl_file needs tls.client_ca_file"), "{err}");
        let tls = "[tls]\ncert_file = \"s.pem\"\nkey_file = \"s.key\"\nrequire_client_certificate = true\n";
        let c: Config = toml::from_str(tls).unwrap();
        let err = c.validate().unwrap_err();
        assert!(
            err.contains("tls.require_client_certificate needs tls.client_ca_file"),
            "{err}"
        );
    }

    /// SIGHUP takes the file's credentials and names its other settings edited since the start,
    /// which wait for a restart; a setting a command-line flag changed is no edit of the file.
    #[test]
    fn a_reload_names_the_edits_that_wait_for_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kms.toml");
        let token = |name: &str| {
            format!(
                "[[auth.tokens]]\nsha256 = {:?}\nprincipal = \"arn:aws:iam::111122223333:user/{name}\"\n",
                crate::auth::token_digest(name)
            )
        };
        std::fs::write(&path, format!("[limits]\nrequest_timeout_seconds = 30\n{}", token("a"))).unwrap();
        let mut running = Config::from_file(&path).unwrap();
        running.listen = "127.0.0.1:7999".parse().unwrap(); // as `--listen` does
        let (next, edited) = running.with_reread_credentials().unwrap();
        assert!(edited.names.is_empty(), "{edited:?}");
        assert_eq!(next.listen, running.listen);

        let edit = format!(
            "region = \"eu-west-1\"\n[limits]\nrequest_timeout_seconds = 9\n{}",
            token("b")
        );
        std::fs::write(&path, edit).unwrap();
        let (next, edited) = running.with_reread_credentials().unwrap();
        assert_eq!(
            (edited.names.as_slice(), &edited.invalid),
            (&["region", "limits"][..], &None)
        );
        assert!(
            next.auth.tokens[0].principal.ends_with("user/b"),
            "the tokens not reloaded"
        );
        assert_eq!(
            (next.region.as_str(), next.limits.request_timeout_seconds),
            ("us-east-1", 30)
        );

        // An edit the next start would refuse is named with the reason.
        std::fs::write(&path, format!("[limits]\nrequest_timeout_seconds = 0\n{}", token("b"))).unwrap();
        let (_, edited) = running.with_reread_credentials().unwrap();
        assert_eq!(edited.names, ["limits"]);
        let invalid = edited.invalid.expect("an invalid edit not reported");
        assert!(invalid.contains("request_timeout_seconds"), "{invalid}");
    }

    #[test]
    fn certificate_rules_need_a_client_ca() {
        let rule = "[[auth.certificates]]\nmatch = \"cn:dave\"\nprincipal = \"arn:aws:iam::111122223333:user/dave\"\n";
        let tls = "[tls]\ncert_file = \"s.pem\"\nkey_file = \"s.key\"\n";
        let c: Config = toml::from_str(rule).unwrap();
        assert!(c.validate().unwrap_err().contains("client_ca_file"));
        let c: Config = toml::from_str(&format!("{tls}{rule}")).unwrap();
        assert!(c.validate().unwrap_err().contains("client_ca_file"));
        let c: Config = toml::from_str(&format!("{tls}client_ca_file = \"ca.pem\"\n{rule}")).unwrap();
        assert!(c.validate().is_ok());
    }

    #[test]
    fn root_check_seconds_is_a_whole_number_of_seconds() {
        assert_eq!(Config::default().hsm.root_check_seconds, 10);
        let c: Config = toml::from_str("[hsm]\nroot_check_seconds = 0\n").unwrap();
        assert_eq!(c.hsm.root_check_seconds, 0);
        for bad in ["-1", "\"10\"", "1.5"] {
            let text = format!("[hsm]\nroot_check_seconds = {bad}\n");
            let err = toml::from_str::<Config>(&text).unwrap_err().to_string();
            assert!(err.contains("root_check_seconds"), "{bad}: {err}");
        }
    }

    #[test]
    fn hsm_retries_and_timeout_are_bounded() {
        for (attempts, timeout_ms, ok) in [
            (1, 10, true),
            (10, 600_000, true),
            (11, 5000, false),
            (3, 0, false),
            (3, 9, false),
            (3, 600_001, false),
        ] {
            let mut c = Config::default();
            c.hsm.retry_attempts = attempts;
            c.hsm.timeout_ms = timeout_ms;
            let result = c.validate();
            assert_eq!(result.is_ok(), ok, "{attempts} {timeout_ms}: {result:?}");
            if let Err(e) = result {
                assert!(e.contains("hsm.retry_attempts") || e.contains("hsm.timeout_ms"), "{e}");
            }
        }
    }

    #[test]
    fn hsm_sessions_are_1_to_1024() {
        for (sessions, ok) in [(0, false), (1, true), (1024, true), (1025, false), (100_000, false)] {
            let mut c = Config::default();
            c.hsm.max_sessions = sessions;
            let result = c.validate();
            assert_eq!(result.is_ok(), ok, "{sessions}: {result:?}");
            if let Err(e) = result {
                assert!(e.contains("hsm.max_sessions"), "{e}");
            }
        }
    }

    #[test]
    fn the_connection_age_is_off_or_at_most_30_days() {
        assert_eq!(Config::default().limits.max_connection_age_seconds, 0);
        for (value, ok) in [(0, true), (1, true), (2_592_000, true), (2_592_001, false)] {
            let mut c = Config::default();
            c.limits.max_connection_age_seconds = value;
            let result = c.validate();
            assert_eq!(result.is_ok(), ok, "{value}: {result:?}");
            if let Err(e) = result {
                assert!(e.contains("limits.max_connection_age_seconds"), "{e}");
            }
        }
    }

    #[test]
    fn the_deletion_check_interval_is_one_second_to_a_day() {
        for (value, ok) in [
            (0, false),
            (1, true),
            (86_400, true),
            (86_401, false),
            (u64::MAX, false),
        ] {
            let mut c = Config::default();
            c.deletion.check_interval_seconds = value;
            let result = c.validate();
            assert_eq!(result.is_ok(), ok, "{value}: {result:?}");
            if let Err(e) = result {
                assert!(e.contains("deletion.check_interval_seconds"), "{e}");
            }
        }
    }

    #[test]
    fn hex_is_digits_only() {
        assert_eq!(hex_decode("0aFf"), Some(vec![0x0a, 0xff]));
        for bad in ["+a", "-1", "0", "zz", " 1"] {
            assert_eq!(hex_decode(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn connection_caps_are_bounded() {
        let d = Config::default().limits;
        assert_eq!((d.max_connections, d.max_connections_per_ip), (4096, 256));
        for (max, per_ip, ok) in [
            (0, 0, false),
            (1, 0, true),
            (1_000_000, 1_000_000, true),
            (1_000_001, 0, false),
            (10, 1_000_001, false),
        ] {
            let mut c = Config::default();
            c.limits.max_connections = max;
            c.limits.max_connections_per_ip = per_ip;
            let result = c.validate();
            assert_eq!(result.is_ok(), ok, "{max} {per_ip}: {result:?}");
            if let Err(e) = result {
                assert!(e.contains("limits.max_connections"), "{e}");
            }
        }
    }

    #[test]
    fn the_request_bytes_in_flight_and_a_principals_share_are_1_mib_to_1_tib() {
        let defaults = Config::default().limits;
        assert_eq!(defaults.max_request_bytes_in_flight, 64 << 20);
        assert_eq!(defaults.max_request_bytes_per_principal, 16 << 20);
        type Field = fn(&mut LimitsConfig) -> &mut usize;
        let fields: [(&str, Field); 2] = [
            ("limits.max_request_bytes_in_flight", |l| {
                &mut l.max_request_bytes_in_flight
            }),
            ("limits.max_request_bytes_per_principal", |l| {
                &mut l.max_request_bytes_per_principal
            }),
        ];
        for (name, field) in fields {
            for (value, ok) in [
                (0, false),
                ((1 << 20) - 1, false),
                (1 << 20, true),
                (1 << 40, true),
                ((1 << 40) + 1, false),
            ] {
                let mut c = Config::default();
                *field(&mut c.limits) = value;
                let result = c.validate();
                assert_eq!(result.is_ok(), ok, "{name} {value}: {result:?}");
                if let Err(e) = result {
                    assert!(e.contains(name), "{e}");
                }
            }
        }
    }

    #[test]
    fn the_request_timeout_is_1_to_3600_seconds() {
        assert_eq!(Config::default().limits.request_timeout_seconds, 30);
        for (value, ok) in [(0, false), (1, true), (3600, true), (3601, false)] {
            let mut c = Config::default();
            c.limits.request_timeout_seconds = value;
            let result = c.validate();
            assert_eq!(result.is_ok(), ok, "{value}: {result:?}");
            if let Err(e) = result {
                assert!(e.contains("limits.request_timeout_seconds"), "{e}");
            }
        }
    }
}
