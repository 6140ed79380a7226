//! Module configuration: the TOML file named by `HSM_SIM_CONF`.
use serde::Deserialize;
use std::path::PathBuf;

/// Environment variable naming the configuration file.
pub const CONF_ENV: &str = "HSM_SIM_CONF";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    token_dir: Option<PathBuf>,
    slots: Option<usize>,
    fault_file: Option<PathBuf>,
    pbkdf2_iterations: Option<u32>,
    max_pin_attempts: Option<u32>,
}

#[derive(Debug, Clone)]
pub struct Config {
    /// Root directory; slot N lives in `<token_dir>/slot-N`.
    pub token_dir: PathBuf,
    pub slots: usize,
    /// Fault-injection control file, re-read when its mtime changes.
    pub fault_file: PathBuf,
    /// PBKDF2-HMAC-SHA256 iterations for PINs set from now on.
    pub pbkdf2_iterations: u32,
    /// Consecutive wrong PINs before the PIN is locked.
    pub max_pin_attempts: u32,
}

impl Config {
    /// Reads `$HSM_SIM_CONF`, or falls back to `$HOME/.hsm-sim/tokens`.
    pub fn load() -> Result<Config, String> {
        let raw = match std::env::var_os(CONF_ENV) {
            Some(path) => {
                let text =
                    std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", PathBuf::from(&path).display()))?;
                toml::from_str::<RawConfig>(&text).map_err(|e| e.to_string())?
            }
            None => RawConfig {
                token_dir: None,
                slots: None,
                fault_file: None,
                pbkdf2_iterations: None,
                max_pin_attempts: None,
            },
        };
        let token_dir = match raw.token_dir {
            Some(dir) => dir,
            None => {
                let home = std::env::var_os("HOME").ok_or("HOME is not set")?;
                PathBuf::from(home).join(".hsm-sim").join("tokens")
            }
        };
        let fault_file = raw.fault_file.unwrap_or_else(|| token_dir.join("faults.toml"));
        Ok(Config {
            token_dir,
            slots: raw.slots.unwrap_or(1).clamp(1, 64),
            fault_file,
            pbkdf2_iterations: raw.pbkdf2_iterations.unwrap_or(100_000).max(1),
            max_pin_attempts: raw.max_pin_attempts.unwrap_or(10).max(1),
        })
    }
}
