//! Test certificates, made with the openssl command line (as the TLS integration tests make
//! theirs): the unit tests that need a real X.509 certificate share this one recipe.

use std::path::Path;

/// A self-signed P-256 certificate for `subject`, valid for a day, written to `cert.pem` with its
/// key in `key.pem` in `dir`; `extensions` are `-addext` values (a SAN, ...).
pub fn self_signed(dir: &Path, subject: &str, extensions: &[&str]) {
    make(dir, subject, extensions, &[]);
}

/// The same without openssl's default CA extensions (basicConstraints CA:TRUE): an end-entity
/// certificate for client authentication that can be its own trust anchor.
pub fn self_signed_client(dir: &Path, subject: &str) {
    std::fs::write(dir.join("req.cnf"), "[req]\ndistinguished_name = dn\n[dn]\n").unwrap();
    make(dir, subject, &["extendedKeyUsage=clientAuth"], &["-config", "req.cnf"]);
}

fn make(dir: &Path, subject: &str, extensions: &[&str], options: &[&str]) {
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
    openssl.args(options);
    for e in extensions {
        openssl.args(["-addext", e]);
    }
    let out = openssl.output().expect("the openssl command line must be installed");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}
