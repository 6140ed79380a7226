//! What differs between HSMs, as capability flags, so operations never test for a vendor.

use cryptoki::context::Pkcs11;

use super::errors;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quirks {
    pub vendor: &'static str,
    /// The HSM generates the AES-GCM IV itself and writes it back (CloudHSM); otherwise the caller
    /// supplies a random one (SoftHSM2, hsm-sim).
    pub gcm_iv_from_hsm: bool,
    /// Unwraps use a per-session copy of the root key (`root.rs`): SoftHSM2 re-reads a token object
    /// from disk on every use. hsm-sim keeps objects in memory; the copy costs it nothing and keeps
    /// the fault-injection tests on the SoftHSM2 path. Hardware HSMs hold token keys in memory.
    pub root_session_copy: bool,
}

/// The names `hsm.vendor` takes.
pub const VENDORS: [&str; 5] = ["auto", "softhsm2", "cloudhsm", "hsm-sim", "generic"];

impl Quirks {
    /// A software token (SoftHSM2, hsm-sim): development and tests, where creating a missing root
    /// key at start is the convenient default.
    pub fn software_token(&self) -> bool {
        matches!(self.vendor, "softhsm2" | "hsm-sim")
    }

    /// Picks the quirks by name, or from the module's manufacturer id when `name` is "auto".
    pub fn select(name: &str, module: &Pkcs11) -> Result<Quirks, String> {
        let name = if name == "auto" {
            let info = module
                .get_library_info()
                .map_err(|e| format!("C_GetInfo failed: {}", errors::code_name(&e)))?;
            detect(info.manufacturer_id(), info.library_description())
        } else {
            name
        };
        Quirks::named(name)
    }

    /// The quirks of a vendor named in `VENDORS` (other than "auto").
    fn named(name: &str) -> Result<Quirks, String> {
        match name {
            "softhsm2" => Ok(Quirks {
                vendor: "softhsm2",
                gcm_iv_from_hsm: false,
                root_session_copy: true,
            }),
            "hsm-sim" => Ok(Quirks {
                vendor: "hsm-sim",
                gcm_iv_from_hsm: false,
                root_session_copy: true,
            }),
            "cloudhsm" => Ok(Quirks {
                vendor: "cloudhsm",
                gcm_iv_from_hsm: true,
                root_session_copy: false,
            }),
            "generic" => Ok(Quirks {
                vendor: "generic",
                gcm_iv_from_hsm: false,
                root_session_copy: false,
            }),
            other => Err(format!(
                "hsm.vendor must be one of {}; got {other:?}",
                VENDORS.join(", ")
            )),
        }
    }
}

fn detect(manufacturer: &str, description: &str) -> &'static str {
    let text = format!("{manufacturer} {description}").to_ascii_lowercase();
    if text.contains("softhsm") {
        "softhsm2"
    } else if text.contains("hsm-sim") || text.contains("hsm_sim") {
        "hsm-sim"
    } else if text.contains("cloudhsm") || text.contains("cavium") || text.contains("marvell") {
        "cloudhsm"
    } else {
        "generic"
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn detects_vendors() {
        assert_eq!(super::detect("SoftHSM", "Implementation of PKCS11"), "softhsm2");
        assert_eq!(super::detect("Marvell Semiconductors, Inc.", "CloudHSM"), "cloudhsm");
        assert_eq!(super::detect("kms project", "hsm-sim software token"), "hsm-sim");
        assert_eq!(super::detect("Acme", "token"), "generic");
    }

    /// The configuration's list of names and the quirks agree: every name but "auto" has its
    /// quirks, and what "auto" detects is a name on the list.
    #[test]
    fn every_vendor_name_has_its_quirks() {
        for name in super::VENDORS.iter().filter(|n| **n != "auto") {
            assert_eq!(super::Quirks::named(name).unwrap().vendor, *name);
        }
        assert!(super::Quirks::named("auto").is_err());
        for (manufacturer, description) in [("SoftHSM", ""), ("", "CloudHSM"), ("", "hsm-sim"), ("Acme", "")] {
            let detected = super::detect(manufacturer, description);
            assert!(super::Quirks::named(detected).is_ok(), "{detected}");
        }
    }
}
