//! Loading a PKCS#11 module. C_Initialize may run once per process per module, so loaded modules
//! are kept in one process-wide table: the only global state of the crate, forced by PKCS#11.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error, RvError};

static MODULES: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();

/// Returns the initialized module at `path`, loading it on first use.
pub fn load(path: &Path) -> Result<Pkcs11, String> {
    let table = MODULES.get_or_init(|| Mutex::new(HashMap::new()));
    let mut table = table.lock().map_err(|_| "PKCS#11 module table poisoned".to_string())?;
    if let Some(m) = table.get(path) {
        return Ok(m.clone());
    }
    let module = Pkcs11::new(path).map_err(|e| format!("cannot load PKCS#11 module {}: {e}", path.display()))?;
    match module.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(Error::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => {
            return Err(format!(
                "C_Initialize of {} failed: {}",
                path.display(),
                super::errors::code_name(&e)
            ))
        }
    }
    table.insert(path.to_path_buf(), module.clone());
    Ok(module)
}
