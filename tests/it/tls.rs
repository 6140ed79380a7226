//! Real X.509 certificates for the TLS tests, made with the `openssl` command line: a CA, a server
//! certificate for localhost / 127.0.0.1, client certificates identified by a SAN URI, a SAN DNS
//! name or only a subject CN, one that maps to no principal, and one signed by another CA.

use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

/// A certificate and its private key, PEM.
pub struct Pem {
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
}

impl Pem {
    pub fn identity(&self) -> Option<(&[u8], &[u8])> {
        Some((&self.cert, &self.key))
    }
}

pub const ALICE_URI: &str = "spiffe://example.org/ns/prod/sa/alice";
pub const EVE_URI: &str = "spiffe://example.org/ns/prod/sa/eve";
pub const CAROL_DNS: &str = "carol.clients.example.org";
pub const DAVE_CN: &str = "dave";

pub struct Pki {
    pub dir: TempDir,
    /// The CA that signs the server's and the clients' certificates (the server's client CA).
    pub ca: Pem,
    /// SAN URI `ALICE_URI`.
    pub alice: Pem,
    /// SAN DNS `CAROL_DNS` (and an unrelated CN).
    pub carol: Pem,
    /// Subject CN `DAVE_CN`, no SAN.
    pub dave: Pem,
    /// SAN URI `EVE_URI`: a valid certificate that no rule maps.
    pub eve: Pem,
    /// Signed by a CA the server doesn't trust, with alice's SAN URI.
    pub mallory: Pem,
    /// Subject `CN=someone-else, CN=DAVE_CN`: two common names, dave's last.
    pub two_cns: Pem,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("the openssl command line must be installed");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn read(dir: &Path, name: &str) -> Vec<u8> {
    std::fs::read(dir.join(name)).unwrap()
}

fn ca(dir: &Path, name: &str) -> Pem {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
            "-days",
            "2",
            "-subj",
            &format!("/O=kms tests/CN={name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
    Pem {
        cert: read(dir, &format!("{name}.pem")),
        key: read(dir, &format!("{name}.key")),
    }
}

/// A leaf certificate signed by the CA `ca`, with `extensions` (openssl extension config lines).
pub fn leaf(dir: &Path, ca: &str, name: &str, subject: &str, extensions: &str, serial: u32) -> Pem {
    let ext = format!("{name}.ext");
    std::fs::write(
        dir.join(&ext),
        format!("basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n{extensions}\n"),
    )
    .unwrap();
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            subject,
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-set_serial",
            &serial.to_string(),
            "-days",
            "2",
            "-extfile",
            &ext,
            "-out",
            &format!("{name}.pem"),
        ],
    );
    Pem {
        cert: read(dir, &format!("{name}.pem")),
        key: read(dir, &format!("{name}.key")),
    }
}

impl Pki {
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let client = "extendedKeyUsage=clientAuth";
        ca(d, "rogue-ca");
        let ca = ca(d, "test-ca");
        // server.pem / server.key, named by `tls_config`.
        leaf(
            d,
            "test-ca",
            "server",
            "/CN=localhost",
            "extendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1",
            1001,
        );
        let alice = leaf(
            d,
            "test-ca",
            "alice",
            "/O=workloads/CN=alice-workload",
            &format!("{client}\nsubjectAltName=URI:{ALICE_URI}"),
            1002,
        );
        let carol = leaf(
            d,
            "test-ca",
            "carol",
            "/CN=carol-host",
            &format!("{client}\nsubjectAltName=DNS:{CAROL_DNS}"),
            1003,
        );
        let dave = leaf(d, "test-ca", "dave", &format!("/CN={DAVE_CN}"), client, 1004);
        let eve = leaf(
            d,
            "test-ca",
            "eve",
            "/CN=eve",
            &format!("{client}\nsubjectAltName=URI:{EVE_URI}"),
            1005,
        );
        let mallory = leaf(
            d,
            "rogue-ca",
            "mallory",
            "/O=workloads/CN=alice-workload",
            &format!("{client}\nsubjectAltName=URI:{ALICE_URI}"),
            1002,
        );
        let two_cns = leaf(
            d,
            "test-ca",
            "two-cns",
            &format!("/CN=someone-else/CN={DAVE_CN}"),
            client,
            1006,
        );
        Pki {
            dir,
            ca,
            alice,
            carol,
            dave,
            eve,
            mallory,
            two_cns,
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `crl.pem`: test-ca's certificate revocation list, revoking the certificates named
    /// (`alice` for alice.pem, ...), made by `openssl ca` from a fresh database each time.
    pub fn write_crl(&self, revoked: &[&str]) -> PathBuf {
        self.write_crl_of("test-ca", revoked)
    }

    /// The same, with CRL `ca`'s name and key (`rogue-ca`: a CA the server doesn't trust).
    pub fn write_crl_of(&self, ca: &str, revoked: &[&str]) -> PathBuf {
        self.write_crl_with(ca, revoked, &[])
    }

    /// test-ca's list, revoking nothing, that goes out of date `seconds` from now.
    pub fn write_crl_for_seconds(&self, seconds: u32) -> PathBuf {
        self.write_crl_with("test-ca", &[], &["-crlsec", &seconds.to_string()])
    }

    /// test-ca's list, revoking nothing, out of date since 2020.
    pub fn write_out_of_date_crl(&self) -> PathBuf {
        let dates = [
            "-crl_lastupdate",
            "20200101000000Z",
            "-crl_nextupdate",
            "20200102000000Z",
        ];
        self.write_crl_with("test-ca", &[], &dates)
    }

    /// `write_crl_of` with extra `openssl ca -gencrl` arguments.
    fn write_crl_with(&self, ca: &str, revoked: &[&str], gencrl: &[&str]) -> PathBuf {
        let d = self.dir.path();
        std::fs::write(
            d.join("ca.cnf"),
            "[ca]\ndefault_ca = test\n[test]\ndatabase = index.txt\ncrlnumber = crlnumber\n\
             default_md = sha256\ndefault_crl_days = 2\n",
        )
        .unwrap();
        std::fs::write(d.join("index.txt"), "").unwrap();
        std::fs::write(d.join("crlnumber"), "01\n").unwrap();
        let (key, cert) = (format!("{ca}.key"), format!("{ca}.pem"));
        let ca = ["-config", "ca.cnf", "-keyfile", &key, "-cert", &cert];
        for name in revoked {
            let cert = format!("{name}.pem");
            openssl(d, &[&["ca"][..], &ca, &["-revoke", &cert]].concat());
        }
        openssl(d, &[&["ca"][..], &ca, &["-gencrl", "-out", "crl.pem"], gencrl].concat());
        self.path("crl.pem")
    }

    /// Rewrites `crl.pem` with the last byte of its signature changed.
    pub fn forge_crl(&self) {
        let d = self.dir.path();
        openssl(d, &["crl", "-in", "crl.pem", "-outform", "DER", "-out", "crl.der"]);
        let mut der = read(d, "crl.der");
        *der.last_mut().unwrap() ^= 1;
        std::fs::write(d.join("forged.der"), der).unwrap();
        openssl(d, &["crl", "-inform", "DER", "-in", "forged.der", "-out", "crl.pem"]);
    }

    /// The `[tls]` section: server certificate, and client certificates verified against the CA.
    pub fn tls_config(&self) -> String {
        format!(
            "[tls]\ncert_file = {:?}\nkey_file = {:?}\nclient_ca_file = {:?}\n",
            self.path("server.pem").display().to_string(),
            self.path("server.key").display().to_string(),
            self.path("test-ca.pem").display().to_string(),
        )
    }
}
