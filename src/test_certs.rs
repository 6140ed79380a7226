//! Test certificates, made with the openssl command line (as the TLS integration tests make
//! theirs): the unit tests that need a real X.509 certificate share this one recipe.

use std::path::Path;

/// A self-signed P-256 certificate for `subject`, valid for a day, written to `cert.pem` with its
/// key in `key.pem` in `dir`; `extensions` are `-addext` values (a SAN, ...).
pub fn self_signed(dir: &Path, subject: &str, extensions: &[&str]) {
    let mut openssl = std::process::Command::new("openssl");
    openssl
        .current_dir(dir)
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ])
        .args(["-keyout", "key.pem", "-out", "cert.pem", "-days", "1", "-subj", subject]);
    for e in extensions {
        openssl.args(["-addext", e]);
    }
    let out = openssl.output().expect("the openssl command line must be installed");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}
