//! The HSMs a benchmark can run on, and throwaway tokens for them.

use std::path::{Path, PathBuf};
use std::process::Command;

pub const SOFTHSM_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
pub const HSM_SIM_MODULE: &str = "libhsm_sim.so";
pub const TOKEN_LABEL: &str = "kms-bench";
pub const USER_PIN: &str = "bench-user-pin-1234";
pub const SO_PIN: &str = "bench-so-pin-5678";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum HsmKind {
    /// hsm-sim, the server's embedded default (no `[hsm] module` configured).
    #[value(name = "sim", alias = "hsm-sim")]
    Sim,
    /// SoftHSM2 with a throwaway token.
    #[value(name = "softhsm", alias = "softhsm2")]
    SoftHsm,
}

impl HsmKind {
    pub fn name(self) -> &'static str {
        match self {
            HsmKind::Sim => "hsm-sim",
            HsmKind::SoftHsm => "SoftHSM2",
        }
    }

    pub fn available(self) -> bool {
        match self {
            HsmKind::Sim => sibling(HSM_SIM_MODULE).is_ok(),
            HsmKind::SoftHsm => Path::new(SOFTHSM_MODULE).exists(),
        }
    }
}

/// A file beside this executable (cargo puts `kms`, `kms-bench` and `libhsm_sim.so` in target/<profile>/).
pub fn sibling(name: &str) -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot locate kms-bench: {e}"))?;
    let dir = exe.parent().ok_or("kms-bench has no directory")?;
    let path = dir.join(name);
    if path.exists() {
        Ok(path)
    } else {
        Err(format!(
            "{} is missing: build the workspace first (`cargo build --release --workspace`, same profile)",
            path.display()
        ))
    }
}

/// A token that a module sees through the environment `env`: module path, label and user PIN.
pub struct Token {
    pub module: PathBuf,
    pub env: Vec<(String, String)>,
}

/// A SoftHSM2 token in `dir/softhsm-tokens`, made with softhsm2-util unless it is there already
/// (a resumed store keeps its token).
pub fn softhsm_token(dir: &Path) -> Result<Token, String> {
    let tokens = dir.join("softhsm-tokens");
    let conf = dir.join("softhsm2.conf");
    let env = vec![("SOFTHSM2_CONF".to_string(), conf.display().to_string())];
    let token = Token {
        module: PathBuf::from(SOFTHSM_MODULE),
        env,
    };
    let fresh = !tokens.exists();
    std::fs::create_dir_all(&tokens).map_err(|e| format!("cannot create {}: {e}", tokens.display()))?;
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        ),
    )
    .map_err(|e| format!("cannot write {}: {e}", conf.display()))?;
    if !fresh {
        return Ok(token);
    }
    let out = Command::new("softhsm2-util")
        .args(["--init-token", "--free", "--label", TOKEN_LABEL])
        .args(["--pin", USER_PIN, "--so-pin", SO_PIN])
        .envs(token.env.iter().cloned())
        .output()
        .map_err(|e| format!("cannot run softhsm2-util (apt-get install softhsm2): {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "softhsm2-util --init-token failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(token)
}

/// An hsm-sim configuration whose token directory is `dir/hsm-sim-tokens` (token not initialised:
/// the raw-rate child does that through C_InitToken).
pub fn hsm_sim_token(dir: &Path) -> Result<Token, String> {
    let tokens = dir.join("hsm-sim-tokens");
    std::fs::create_dir_all(&tokens).map_err(|e| format!("cannot create {}: {e}", tokens.display()))?;
    let conf = dir.join("hsm-sim.toml");
    // Few PIN-KDF iterations: the raw measurement logs in once per session and the PIN is a test PIN.
    std::fs::write(
        &conf,
        format!(
            "token_dir = {:?}\npbkdf2_iterations = 1000\n",
            tokens.display().to_string()
        ),
    )
    .map_err(|e| format!("cannot write {}: {e}", conf.display()))?;
    Ok(Token {
        module: sibling(HSM_SIM_MODULE)?,
        env: vec![("HSM_SIM_CONF".to_string(), conf.display().to_string())],
    })
}
