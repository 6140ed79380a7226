//! Asymmetric keys: every key spec x key usage, every signing / encryption / MAC algorithm on every
//! kind of key, Sign/Verify/GetPublicKey and RSAES-OAEP checked against an independent
//! implementation (the `openssl` command line), data key pairs, and every size limit at its edge.

use std::cell::Cell;
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Command, Output};

use kms::proto as pb;
use tempfile::TempDir;
use tonic::{Response, Status};

use crate::common::*;

/// The algorithms of our specs, then AWS algorithms that fit none of them (InvalidKeyUsage on every
/// key, never ValidationException).
const SIGNING_ALGORITHMS: [&str; 12] = [
    "RSASSA_PSS_SHA_256",
    "RSASSA_PSS_SHA_384",
    "RSASSA_PSS_SHA_512",
    "RSASSA_PKCS1_V1_5_SHA_256",
    "RSASSA_PKCS1_V1_5_SHA_384",
    "RSASSA_PKCS1_V1_5_SHA_512",
    "ECDSA_SHA_256",
    "ECDSA_SHA_384",
    "ECDSA_SHA_512",
    "ML_DSA_SHAKE_256",
    "ED25519_SHA_512",
    "ED25519_PH_SHA_512",
];
const ENCRYPTION_ALGORITHMS: [&str; 3] = ["SYMMETRIC_DEFAULT", "RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256"];
const MAC_ALGORITHMS: [&str; 4] = ["HMAC_SHA_224", "HMAC_SHA_256", "HMAC_SHA_384", "HMAC_SHA_512"];
const KEY_SPECS: [&str; 10] = [
    "SYMMETRIC_DEFAULT",
    "RSA_2048",
    "RSA_3072",
    "RSA_4096",
    "ECC_NIST_P256",
    "ECC_NIST_P384",
    "HMAC_224",
    "HMAC_256",
    "HMAC_384",
    "HMAC_512",
];
const KEY_USAGES: [&str; 3] = ["ENCRYPT_DECRYPT", "SIGN_VERIFY", "GENERATE_VERIFY_MAC"];
const KEY_PAIR_SPECS: [&str; 5] = ["RSA_2048", "RSA_3072", "RSA_4096", "ECC_NIST_P256", "ECC_NIST_P384"];

// ---------------------------------------------------------------------------------------------
// What AWS KMS documents for each key spec and usage.

/// The key usages AWS accepts for a key spec.
fn usage_allowed(spec: &str, usage: &str) -> bool {
    match spec {
        "SYMMETRIC_DEFAULT" => usage == "ENCRYPT_DECRYPT",
        s if s.starts_with("RSA_") => usage == "ENCRYPT_DECRYPT" || usage == "SIGN_VERIFY",
        s if s.starts_with("ECC_") => usage == "SIGN_VERIFY",
        s if s.starts_with("HMAC_") => usage == "GENERATE_VERIFY_MAC",
        _ => false,
    }
}

fn signing_algorithms_for(spec: &str, usage: &str) -> Vec<&'static str> {
    if usage != "SIGN_VERIFY" {
        return vec![];
    }
    match spec {
        s if s.starts_with("RSA_") => SIGNING_ALGORITHMS[..6].to_vec(),
        "ECC_NIST_P256" => vec!["ECDSA_SHA_256"],
        "ECC_NIST_P384" => vec!["ECDSA_SHA_384"],
        _ => vec![],
    }
}

fn encryption_algorithms_for(spec: &str, usage: &str) -> Vec<&'static str> {
    match (spec, usage) {
        ("SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT") => vec!["SYMMETRIC_DEFAULT"],
        (s, "ENCRYPT_DECRYPT") if s.starts_with("RSA_") => vec!["RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256"],
        _ => vec![],
    }
}

fn mac_algorithms_for(spec: &str) -> Vec<&'static str> {
    match spec {
        "HMAC_224" => vec!["HMAC_SHA_224"],
        "HMAC_256" => vec!["HMAC_SHA_256"],
        "HMAC_384" => vec!["HMAC_SHA_384"],
        "HMAC_512" => vec!["HMAC_SHA_512"],
        _ => vec![],
    }
}

/// The hash of a signing algorithm: openssl's name for it and its length in bytes.
fn hash_of(alg: &str) -> (&'static str, usize) {
    if alg.ends_with("_256") {
        ("sha256", 32)
    } else if alg.ends_with("_384") {
        ("sha384", 48)
    } else if alg.ends_with("_512") {
        ("sha512", 64)
    } else {
        panic!("no hash in {alg}")
    }
}

/// RSA modulus length in bytes.
fn modulus_bytes(spec: &str) -> usize {
    match spec {
        "RSA_2048" => 256,
        "RSA_3072" => 384,
        "RSA_4096" => 512,
        _ => panic!("{spec} is not RSA"),
    }
}

/// RSAES-OAEP's plaintext limit: k - 2 hLen - 2.
fn oaep_limit(spec: &str, alg: &str) -> usize {
    let h = match alg {
        "RSAES_OAEP_SHA_1" => 20,
        "RSAES_OAEP_SHA_256" => 32,
        _ => panic!("{alg}"),
    };
    modulus_bytes(spec) - 2 * h - 2
}

fn sorted(v: &[String]) -> Vec<String> {
    let mut v = v.to_vec();
    v.sort();
    v
}

fn strings(v: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = v.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

/// Deterministic, non-repeating test bytes.
fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
}

// ---------------------------------------------------------------------------------------------
// Request helpers.

async fn create(c: &mut Client, spec: &str, usage: &str) -> pb::KeyMetadata {
    create_key_of(c, spec, usage).await
}

fn sign_req(key: &str, alg: &str, msg: &[u8], message_type: Option<&str>) -> pb::SignRequest {
    pb::SignRequest {
        key_id: key.into(),
        message: msg.to_vec(),
        message_type: message_type.map(str::to_string),
        signing_algorithm: alg.into(),
        ..Default::default()
    }
}

fn verify_req(key: &str, alg: &str, msg: &[u8], message_type: Option<&str>, sig: &[u8]) -> pb::VerifyRequest {
    pb::VerifyRequest {
        key_id: key.into(),
        message: msg.to_vec(),
        message_type: message_type.map(str::to_string),
        signature: sig.to_vec(),
        signing_algorithm: alg.into(),
        ..Default::default()
    }
}

async fn sign(c: &mut Client, key: &str, alg: &str, msg: &[u8], message_type: Option<&str>) -> pb::SignResponse {
    c.sign(sign_req(key, alg, msg, message_type))
        .await
        .unwrap_or_else(|s| panic!("Sign {alg} {message_type:?}: {} {}", error_type(&s), s.message()))
        .into_inner()
}

/// Verify through the service, which must say valid.
async fn verify_ok(c: &mut Client, key: &str, alg: &str, msg: &[u8], message_type: Option<&str>, sig: &[u8]) {
    let v = c
        .verify(verify_req(key, alg, msg, message_type, sig))
        .await
        .unwrap_or_else(|s| panic!("Verify {alg} {message_type:?}: {} {}", error_type(&s), s.message()))
        .into_inner();
    assert!(v.signature_valid, "Verify {alg} answered signature_valid = false");
    assert_eq!(v.signing_algorithm, alg);
}

async fn public_key(c: &mut Client, key: &str) -> pb::GetPublicKeyResponse {
    c.get_public_key(pb::GetPublicKeyRequest {
        key_id: key.into(),
        ..Default::default()
    })
    .await
    .unwrap_or_else(|s| panic!("GetPublicKey {key}: {} {}", error_type(&s), s.message()))
    .into_inner()
}

fn encrypt_req(key: &str, alg: Option<&str>, plaintext: &[u8]) -> pb::EncryptRequest {
    pb::EncryptRequest {
        key_id: key.into(),
        plaintext: plaintext.to_vec(),
        encryption_algorithm: alg.map(str::to_string),
        ..Default::default()
    }
}

fn decrypt_req(key: Option<&str>, alg: Option<&str>, blob: &[u8]) -> pb::DecryptRequest {
    pb::DecryptRequest {
        ciphertext_blob: blob.to_vec(),
        key_id: key.map(str::to_string),
        encryption_algorithm: alg.map(str::to_string),
        ..Default::default()
    }
}

async fn rsa_decrypt(c: &mut Client, key: &str, alg: &str, blob: &[u8]) -> pb::DecryptResponse {
    c.decrypt(decrypt_req(Some(key), Some(alg), blob))
        .await
        .unwrap_or_else(|s| panic!("Decrypt {alg}: {} {}", error_type(&s), s.message()))
        .into_inner()
}

fn mac_req(key: &str, alg: &str, msg: &[u8]) -> pb::GenerateMacRequest {
    pb::GenerateMacRequest {
        key_id: key.into(),
        message: msg.to_vec(),
        mac_algorithm: alg.into(),
        ..Default::default()
    }
}

fn verify_mac_req(key: &str, alg: &str, msg: &[u8], mac: &[u8]) -> pb::VerifyMacRequest {
    pb::VerifyMacRequest {
        key_id: key.into(),
        message: msg.to_vec(),
        mac_algorithm: alg.into(),
        mac: mac.to_vec(),
        ..Default::default()
    }
}

fn pair_req(key: &str, spec: &str, context: &HashMap<String, String>) -> pb::GenerateDataKeyPairRequest {
    pb::GenerateDataKeyPairRequest {
        key_id: key.into(),
        encryption_context: context.clone(),
        key_pair_spec: spec.into(),
        ..Default::default()
    }
}

fn pair_wp_req(
    key: &str,
    spec: &str,
    context: &HashMap<String, String>,
) -> pb::GenerateDataKeyPairWithoutPlaintextRequest {
    pb::GenerateDataKeyPairWithoutPlaintextRequest {
        key_id: key.into(),
        encryption_context: context.clone(),
        key_pair_spec: spec.into(),
        ..Default::default()
    }
}

// ---------------------------------------------------------------------------------------------
// The independent implementation: the `openssl` command line, on files in a scratch directory.

struct Openssl {
    dir: TempDir,
    n: Cell<usize>,
}

impl Openssl {
    fn new() -> Openssl {
        Openssl {
            dir: tempfile::tempdir().unwrap(),
            n: Cell::new(0),
        }
    }

    /// Writes `bytes` to a fresh file and returns its path.
    fn file(&self, name: &str, bytes: &[u8]) -> String {
        let path = self.fresh(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    /// A fresh, not yet existing, path.
    fn fresh(&self, name: &str) -> String {
        self.n.set(self.n.get() + 1);
        let p: PathBuf = self.dir.path().join(format!("{}-{name}", self.n.get()));
        p.to_str().unwrap().to_string()
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new("/usr/bin/openssl").args(args).output().unwrap()
    }

    /// Runs openssl, which must succeed, and returns its stdout.
    #[track_caller]
    fn ok(&self, args: &[&str]) -> Vec<u8> {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "openssl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// A PEM file of a DER SubjectPublicKeyInfo.
    #[track_caller]
    fn pem(&self, spki: &[u8]) -> String {
        let der = self.file("pub.der", spki);
        let pem = self.fresh("pub.pem");
        self.ok(&[
            "pkey", "-pubin", "-inform", "DER", "-in", &der, "-outform", "PEM", "-out", &pem,
        ]);
        pem
    }

    /// `openssl pkey -text` of a DER SubjectPublicKeyInfo.
    fn public_text(&self, spki: &[u8]) -> String {
        let der = self.file("pub.der", spki);
        String::from_utf8(self.ok(&["pkey", "-pubin", "-inform", "DER", "-in", &der, "-text", "-noout"])).unwrap()
    }

    /// The SubjectPublicKeyInfo openssl re-encodes from a DER one.
    fn reencode_public(&self, spki: &[u8]) -> Vec<u8> {
        let der = self.file("pub.der", spki);
        self.ok(&["pkey", "-pubin", "-inform", "DER", "-in", &der, "-outform", "DER"])
    }

    /// The public half, as DER SubjectPublicKeyInfo, of a DER private key.
    fn public_of_private(&self, private: &[u8]) -> Vec<u8> {
        let der = self.file("priv.der", private);
        self.ok(&["pkey", "-inform", "DER", "-in", &der, "-pubout", "-outform", "DER"])
    }

    /// Whether `private` parses as an unencrypted PKCS#8 PrivateKeyInfo (not a traditional key).
    fn is_pkcs8(&self, private: &[u8]) -> bool {
        let der = self.file("priv.der", private);
        self.run(&["pkcs8", "-inform", "DER", "-nocrypt", "-in", &der, "-outform", "DER"])
            .status
            .success()
    }

    fn digest(&self, hash: &str, msg: &[u8]) -> Vec<u8> {
        let m = self.file("msg", msg);
        self.ok(&["dgst", &format!("-{hash}"), "-binary", &m])
    }

    fn pss_opts(flag: &str, alg: &str) -> Vec<String> {
        if alg.starts_with("RSASSA_PSS_") {
            vec![
                flag.to_string(),
                "rsa_padding_mode:pss".to_string(),
                flag.to_string(),
                "rsa_pss_saltlen:digest".to_string(),
            ]
        } else {
            vec![]
        }
    }

    /// `openssl dgst -verify` of a signature over a whole message.
    fn verify_message(&self, pem: &str, alg: &str, msg: &[u8], sig: &[u8]) -> bool {
        let (hash, _) = hash_of(alg);
        let m = self.file("msg", msg);
        let s = self.file("sig", sig);
        let hash = format!("-{hash}");
        let mut args = vec!["dgst", &hash, "-verify", pem, "-signature", &s];
        let opts = Self::pss_opts("-sigopt", alg);
        args.extend(opts.iter().map(String::as_str));
        args.push(&m);
        let out = self.run(&args);
        let ok = out.status.success();
        if ok {
            assert!(String::from_utf8_lossy(&out.stdout).contains("Verified OK"));
        }
        ok
    }

    /// `openssl pkeyutl -verify` of a signature over a precomputed digest.
    fn verify_digest(&self, pem: &str, alg: &str, digest: &[u8], sig: &[u8]) -> bool {
        let (hash, _) = hash_of(alg);
        let d = self.file("digest", digest);
        let s = self.file("sig", sig);
        let md = format!("digest:{hash}");
        let mut args = vec![
            "pkeyutl", "-verify", "-pubin", "-inkey", pem, "-in", &d, "-sigfile", &s, "-pkeyopt", &md,
        ];
        let opts = Self::pss_opts("-pkeyopt", alg);
        args.extend(opts.iter().map(String::as_str));
        self.run(&args).status.success()
    }

    /// Signs a message with a DER private key (the data key pair's private half).
    fn sign_with_private(&self, private: &[u8], alg: &str, msg: &[u8]) -> Vec<u8> {
        let (hash, _) = hash_of(alg);
        let k = self.file("priv.der", private);
        let m = self.file("msg", msg);
        let out = self.fresh("sig");
        let hash = format!("-{hash}");
        let mut args = vec!["dgst", &hash, "-sign", &k, "-keyform", "DER", "-out", &out];
        let opts = Self::pss_opts("-sigopt", alg);
        args.extend(opts.iter().map(String::as_str));
        args.push(&m);
        self.ok(&args);
        std::fs::read(&out).unwrap()
    }

    fn oaep_opts(alg: &str) -> [String; 6] {
        let md = match alg {
            "RSAES_OAEP_SHA_1" => "sha1",
            "RSAES_OAEP_SHA_256" => "sha256",
            _ => panic!("{alg}"),
        };
        [
            "-pkeyopt".into(),
            "rsa_padding_mode:oaep".into(),
            "-pkeyopt".into(),
            format!("rsa_oaep_md:{md}"),
            "-pkeyopt".into(),
            format!("rsa_mgf1_md:{md}"),
        ]
    }

    /// RSAES-OAEP encryption with a public key, or None when openssl refuses (too long).
    fn oaep_encrypt(&self, pem: &str, alg: &str, plaintext: &[u8]) -> Option<Vec<u8>> {
        let p = self.file("pt", plaintext);
        let out = self.fresh("ct");
        let mut args = vec!["pkeyutl", "-encrypt", "-pubin", "-inkey", pem, "-in", &p, "-out", &out];
        let opts = Self::oaep_opts(alg);
        args.extend(opts.iter().map(String::as_str));
        if self.run(&args).status.success() {
            Some(std::fs::read(&out).unwrap())
        } else {
            None
        }
    }
}

/// Checks a DER SubjectPublicKeyInfo with openssl: the key type and size the spec promises.
fn check_spki(os: &Openssl, spec: &str, spki: &[u8]) {
    let text = os.public_text(spki);
    match spec {
        s if s.starts_with("RSA_") => {
            let bits = modulus_bytes(s) * 8;
            assert!(text.contains(&format!("Public-Key: ({bits} bit)")), "{spec}: {text}");
            assert!(text.contains("Exponent: 65537"), "{spec}: {text}");
        }
        "ECC_NIST_P256" => {
            assert!(text.contains("Public-Key: (256 bit)"), "{spec}: {text}");
            assert!(text.contains("NIST CURVE: P-256"), "{spec}: {text}");
        }
        "ECC_NIST_P384" => {
            assert!(text.contains("Public-Key: (384 bit)"), "{spec}: {text}");
            assert!(text.contains("NIST CURVE: P-384"), "{spec}: {text}");
        }
        _ => panic!("{spec}"),
    }
    assert_eq!(
        os.reencode_public(spki),
        spki,
        "{spec}: the public key is not canonical DER SubjectPublicKeyInfo"
    );
}

/// The r INTEGER of a DER ECDSA-Sig-Value (short-form lengths: P-256 and P-384 signatures).
fn ecdsa_r(sig: &[u8]) -> Vec<u8> {
    assert_eq!(sig[0], 0x30, "not a DER SEQUENCE");
    assert_eq!(sig[2], 0x02, "not a DER INTEGER");
    let len = sig[3] as usize;
    sig[4..4 + len].to_vec()
}

// ---------------------------------------------------------------------------------------------
// Tests.

/// Collects mismatches instead of stopping at the first, so that one run shows all of them.
#[derive(Default)]
struct Tally(Vec<String>);

impl Tally {
    /// Records a mismatch unless `result` failed with the AWS exception `expected`.
    fn err<T>(&mut self, what: &str, result: Result<Response<T>, Status>, expected: &str) {
        match result {
            Ok(_) => self.0.push(format!("{what}: expected {expected}, got success")),
            Err(s) if error_type(&s) != expected => self.0.push(format!(
                "{what}: expected {expected}, got {}: {}",
                error_type(&s),
                s.message()
            )),
            Err(_) => {}
        }
    }

    /// The response, or None after recording the failure.
    fn ok<T>(&mut self, what: &str, result: Result<Response<T>, Status>) -> Option<T> {
        match result {
            Ok(r) => Some(r.into_inner()),
            Err(s) => {
                self.0.push(format!(
                    "{what}: expected success, got {}: {}",
                    error_type(&s),
                    s.message()
                ));
                None
            }
        }
    }

    fn check(&mut self, cond: bool, what: impl FnOnce() -> String) {
        if !cond {
            self.0.push(what());
        }
    }

    #[track_caller]
    fn finish(self) {
        assert!(self.0.is_empty(), "{} mismatches:\n{}", self.0.len(), self.0.join("\n"));
    }
}

/// Every key spec x key usage: CreateKey accepts exactly AWS's pairs, and each key it makes
/// accepts exactly the algorithms and operations of its spec and usage.
#[tokio::test]
async fn asym_every_key_spec_usage_and_algorithm_combination() {
    let server = Server::start().await;
    let mut c = server.client().await;
    let before = key_count(&mut c).await;
    let mut t = Tally::default();

    let mut keys = Vec::new();
    for spec in KEY_SPECS {
        for usage in KEY_USAGES {
            let what = format!("CreateKey {spec} {usage}");
            let r = c
                .create_key(pb::CreateKeyRequest {
                    key_spec: Some(spec.into()),
                    key_usage: Some(usage.into()),
                    ..Default::default()
                })
                .await;
            if !usage_allowed(spec, usage) {
                t.err(&what, r, "ValidationException");
                continue;
            }
            let Some(m) = t.ok(&what, r).and_then(|r| r.key_metadata) else {
                continue;
            };
            t.check(m.customer_master_key_spec == spec, || format!("{what}: {m:?}"));
            t.check(m.key_state == "Enabled" && m.enabled, || format!("{what}: {m:?}"));
            let described = describe(&mut c, &m.key_id).await;
            for (op, md) in [("CreateKey", &m), ("DescribeKey", &described)] {
                let what = format!("{op} {spec} {usage}");
                t.check(md.key_spec == spec && md.key_usage == usage, || {
                    format!("{what}: {md:?}")
                });
                let lists = [
                    (
                        "signing_algorithms",
                        &md.signing_algorithms,
                        signing_algorithms_for(spec, usage),
                    ),
                    (
                        "encryption_algorithms",
                        &md.encryption_algorithms,
                        encryption_algorithms_for(spec, usage),
                    ),
                    ("mac_algorithms", &md.mac_algorithms, mac_algorithms_for(spec)),
                ];
                for (field, got, want) in lists {
                    t.check(sorted(got) == strings(&want), || {
                        format!("{what}: {field} = {got:?}, expected {want:?}")
                    });
                }
            }
            keys.push((spec, usage, m));
        }
    }
    t.check(keys.len() == 13, || {
        format!(
            "{} keys; expected 1 symmetric + 3 RSA x 2 usages + 2 ECC + 4 HMAC",
            keys.len()
        )
    });

    // Without key_usage: only SYMMETRIC_DEFAULT has a default (ENCRYPT_DECRYPT).
    let mut created = keys.len();
    for spec in KEY_SPECS {
        let what = format!("CreateKey {spec} without key_usage");
        let r = c
            .create_key(pb::CreateKeyRequest {
                key_spec: Some(spec.into()),
                ..Default::default()
            })
            .await;
        if spec == "SYMMETRIC_DEFAULT" {
            if let Some(m) = t.ok(&what, r).and_then(|r| r.key_metadata) {
                t.check(m.key_usage == "ENCRYPT_DECRYPT", || format!("{what}: {m:?}"));
                created += 1;
            }
        } else {
            t.err(&what, r, "ValidationException");
        }
    }
    // Names that are not key specs or key usages (wrong case, unsupported sizes, made up).
    for spec in [
        "RSA_1024",
        "rsa_2048",
        "ECC_NIST_P256K1",
        "HMAC_128",
        "AES_256",
        " RSA_2048",
        "",
    ] {
        for usage in KEY_USAGES {
            let r = c
                .create_key(pb::CreateKeyRequest {
                    key_spec: Some(spec.into()),
                    key_usage: Some(usage.into()),
                    ..Default::default()
                })
                .await;
            t.err(&format!("CreateKey {spec:?} {usage}"), r, "ValidationException");
        }
    }
    for spec in ["SYMMETRIC_DEFAULT", "RSA_2048", "ECC_NIST_P256", "HMAC_256"] {
        for usage in ["sign_verify", "SIGN", "ENCRYPT", "GENERATE_MAC", ""] {
            let r = c
                .create_key(pb::CreateKeyRequest {
                    key_spec: Some(spec.into()),
                    key_usage: Some(usage.into()),
                    ..Default::default()
                })
                .await;
            t.err(&format!("CreateKey {spec} {usage:?}"), r, "ValidationException");
        }
    }
    // The deprecated customer_master_key_spec names the spec too; both given must agree.
    let r = c
        .create_key(pb::CreateKeyRequest {
            customer_master_key_spec: Some("ECC_NIST_P256".into()),
            key_usage: Some("SIGN_VERIFY".into()),
            ..Default::default()
        })
        .await;
    if let Some(m) = t
        .ok("CreateKey customer_master_key_spec ECC_NIST_P256", r)
        .and_then(|r| r.key_metadata)
    {
        t.check(
            m.key_spec == "ECC_NIST_P256" && m.customer_master_key_spec == "ECC_NIST_P256",
            || format!("CreateKey customer_master_key_spec ECC_NIST_P256: {m:?}"),
        );
        created += 1;
    }
    let r = c
        .create_key(pb::CreateKeyRequest {
            key_spec: Some("ECC_NIST_P256".into()),
            customer_master_key_spec: Some("ECC_NIST_P384".into()),
            key_usage: Some("SIGN_VERIFY".into()),
            ..Default::default()
        })
        .await;
    t.err(
        "CreateKey key_spec != customer_master_key_spec",
        r,
        "ValidationException",
    );
    // A refused CreateKey creates nothing.
    let count = key_count(&mut c).await;
    t.check(count == before + created, || {
        format!("ListKeys: {count} keys, expected {}", before + created)
    });

    // Each key x each algorithm of each family, and each operation.
    let msg = b"the matrix".to_vec();
    let none = HashMap::new();
    for (spec, usage, m) in &keys {
        let id = m.key_id.as_str();

        let signing = signing_algorithms_for(spec, usage);
        for alg in SIGNING_ALGORITHMS {
            let what = format!("{spec} {usage}: Sign {alg}");
            if signing.contains(&alg) {
                let Some(s) = t.ok(&what, c.sign(sign_req(id, alg, &msg, None)).await) else {
                    continue;
                };
                t.check(
                    s.key_id == m.arn && s.signing_algorithm == alg && !s.signature.is_empty(),
                    || format!("{what}: {s:?}"),
                );
                let r = c.verify(verify_req(id, alg, &msg, None, &s.signature)).await;
                if let Some(v) = t.ok(&format!("{what}: Verify"), r) {
                    t.check(v.signature_valid, || format!("{what}: Verify {v:?}"));
                }
            } else {
                t.err(
                    &what,
                    c.sign(sign_req(id, alg, &msg, None)).await,
                    "InvalidKeyUsageException",
                );
                let r = c.verify(verify_req(id, alg, &msg, None, &[1u8; 64])).await;
                t.err(&format!("{spec} {usage}: Verify {alg}"), r, "InvalidKeyUsageException");
            }
        }

        let encryption = encryption_algorithms_for(spec, usage);
        for alg in ENCRYPTION_ALGORITHMS {
            let what = format!("{spec} {usage}: Encrypt {alg}");
            let r = c.encrypt(encrypt_req(id, Some(alg), &msg)).await;
            if encryption.contains(&alg) {
                let Some(e) = t.ok(&what, r) else {
                    continue;
                };
                t.check(e.encryption_algorithm == alg && e.key_id == m.arn, || {
                    format!("{what}: {e:?}")
                });
                let r = c.decrypt(decrypt_req(Some(id), Some(alg), &e.ciphertext_blob)).await;
                if let Some(d) = t.ok(&format!("{what}: Decrypt"), r) {
                    t.check(d.plaintext == msg && d.encryption_algorithm == alg, || {
                        format!("{what}: Decrypt {d:?}")
                    });
                }
            } else {
                t.err(&what, r, "InvalidKeyUsageException");
            }
        }
        // Decrypt with an RSA algorithm on a key that does not do RSA encryption: for the
        // symmetric key, a genuine ciphertext of its own, so that only the algorithm is wrong.
        if encryption.is_empty() || *spec == "SYMMETRIC_DEFAULT" {
            let blob = if *spec == "SYMMETRIC_DEFAULT" {
                c.encrypt(encrypt_req(id, None, &msg))
                    .await
                    .unwrap()
                    .into_inner()
                    .ciphertext_blob
            } else {
                vec![7u8; 256]
            };
            // A symmetric blob names its key, so the key_id may be left out too.
            let key_ids = if *spec == "SYMMETRIC_DEFAULT" {
                vec![Some(id), None]
            } else {
                vec![Some(id)]
            };
            for alg in ["RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256"] {
                for key in &key_ids {
                    let r = c.decrypt(decrypt_req(*key, Some(alg), &blob)).await;
                    let what = format!("{spec} {usage}: Decrypt {alg} (key_id given: {})", key.is_some());
                    t.err(&what, r, "InvalidKeyUsageException");
                }
            }
        }

        let macs = mac_algorithms_for(spec);
        for alg in MAC_ALGORITHMS {
            let what = format!("{spec} {usage}: GenerateMac {alg}");
            let r = c.generate_mac(mac_req(id, alg, &msg)).await;
            if macs.contains(&alg) {
                let Some(mac) = t.ok(&what, r) else {
                    continue;
                };
                t.check(mac.mac_algorithm == alg, || format!("{what}: {mac:?}"));
                let r = c.verify_mac(verify_mac_req(id, alg, &msg, &mac.mac)).await;
                if let Some(v) = t.ok(&format!("{what}: VerifyMac"), r) {
                    t.check(v.mac_valid, || format!("{what}: VerifyMac {v:?}"));
                }
            } else {
                t.err(&what, r, "InvalidKeyUsageException");
                let r = c.verify_mac(verify_mac_req(id, alg, &msg, &[0u8; 32])).await;
                t.err(
                    &format!("{spec} {usage}: VerifyMac {alg}"),
                    r,
                    "InvalidKeyUsageException",
                );
            }
        }

        // GetPublicKey: asymmetric keys only.
        let what = format!("{spec} {usage}: GetPublicKey");
        let r = c
            .get_public_key(pb::GetPublicKeyRequest {
                key_id: id.into(),
                ..Default::default()
            })
            .await;
        if spec.starts_with("RSA_") || spec.starts_with("ECC_") {
            if let Some(p) = t.ok(&what, r) {
                t.check(p.key_spec == *spec && p.key_usage == *usage, || {
                    format!("{what}: {p:?}")
                });
            }
        } else {
            t.err(&what, r, "UnsupportedOperationException");
        }

        // Data keys and data key pairs: symmetric encryption keys only.
        let symmetric = *spec == "SYMMETRIC_DEFAULT";
        let r = c
            .generate_data_key(pb::GenerateDataKeyRequest {
                key_id: id.into(),
                key_spec: Some("AES_256".into()),
                ..Default::default()
            })
            .await;
        let what = format!("{spec} {usage}: GenerateDataKey");
        if symmetric {
            t.ok(&what, r);
        } else {
            t.err(&what, r, "InvalidKeyUsageException");
            let r = c
                .generate_data_key_without_plaintext(pb::GenerateDataKeyWithoutPlaintextRequest {
                    key_id: id.into(),
                    number_of_bytes: Some(16),
                    ..Default::default()
                })
                .await;
            t.err(&format!("{what}WithoutPlaintext"), r, "InvalidKeyUsageException");
        }
        let what = format!("{spec} {usage}: GenerateDataKeyPair");
        let r = c.generate_data_key_pair(pair_req(id, "ECC_NIST_P256", &none)).await;
        if symmetric {
            t.ok(&what, r);
        } else {
            t.err(&what, r, "InvalidKeyUsageException");
            let r = c
                .generate_data_key_pair_without_plaintext(pair_wp_req(id, "ECC_NIST_P256", &none))
                .await;
            t.err(&format!("{what}WithoutPlaintext"), r, "InvalidKeyUsageException");
        }
    }

    // Names that are no algorithm at all: ValidationException, whatever the key.
    for (spec, usage, m) in &keys {
        let id = m.key_id.as_str();
        for alg in [
            "RSASSA_PSS_SHA_1",
            "rsassa_pss_sha_256",
            "RSASSA_PSS_SHA_256 ",
            "HMAC_SHA_256",
            "",
        ] {
            let r = c.sign(sign_req(id, alg, &msg, None)).await;
            t.err(&format!("{spec} {usage}: Sign {alg:?}"), r, "ValidationException");
            let r = c.verify(verify_req(id, alg, &msg, None, &[1u8; 256])).await;
            t.err(&format!("{spec} {usage}: Verify {alg:?}"), r, "ValidationException");
        }
        for alg in [
            "RSAES_PKCS1_V1_5",
            "rsaes_oaep_sha_256",
            "RSAES_OAEP_SHA_512",
            "AES_256",
        ] {
            let r = c.encrypt(encrypt_req(id, Some(alg), &msg)).await;
            t.err(&format!("{spec} {usage}: Encrypt {alg:?}"), r, "ValidationException");
        }
        for alg in ["HMAC_SHA_1", "HMAC_SHA256", "hmac_sha_256", "ECDSA_SHA_256", ""] {
            let r = c.generate_mac(mac_req(id, alg, &msg)).await;
            t.err(
                &format!("{spec} {usage}: GenerateMac {alg:?}"),
                r,
                "ValidationException",
            );
            let r = c.verify_mac(verify_mac_req(id, alg, &msg, &[0u8; 32])).await;
            t.err(&format!("{spec} {usage}: VerifyMac {alg:?}"), r, "ValidationException");
        }
    }
    t.finish();
}

/// Signatures the service makes verify with openssl, for every signing algorithm of every key spec,
/// with message type RAW and DIGEST; and the service's Verify accepts them either way.
#[tokio::test]
async fn asym_signatures_verify_with_openssl_for_every_algorithm_raw_and_digest() {
    let server = Server::start().await;
    let mut c = server.client().await;
    let os = Openssl::new();
    let msg = pattern(777);
    let other = pattern(778);

    for spec in KEY_PAIR_SPECS {
        let key = create(&mut c, spec, "SIGN_VERIFY").await;
        let id = key.key_id.as_str();
        let p = public_key(&mut c, id).await;
        check_spki(&os, spec, &p.public_key);
        let pem = os.pem(&p.public_key);

        for alg in signing_algorithms_for(spec, "SIGN_VERIFY") {
            let (hash, hash_len) = hash_of(alg);
            let digest = os.digest(hash, &msg);
            assert_eq!(digest.len(), hash_len);

            let raw = sign(&mut c, id, alg, &msg, None).await;
            assert_eq!(raw.key_id, key.arn);
            assert_eq!(raw.signing_algorithm, alg);
            let explicit_raw = sign(&mut c, id, alg, &msg, Some("RAW")).await;
            let dig = sign(&mut c, id, alg, &digest, Some("DIGEST")).await;
            assert_eq!(dig.signing_algorithm, alg);

            for (how, sig) in [
                ("RAW", &raw.signature),
                ("explicit RAW", &explicit_raw.signature),
                ("DIGEST", &dig.signature),
            ] {
                if spec.starts_with("RSA_") {
                    assert_eq!(sig.len(), modulus_bytes(spec), "{spec} {alg} {how}");
                } else {
                    // DER ECDSA-Sig-Value: SEQUENCE of two INTEGERs.
                    assert_eq!(sig[0], 0x30, "{spec} {alg} {how}: not a DER SEQUENCE");
                    assert!(sig.len() <= 2 * hash_len + 8, "{spec} {alg} {how}");
                }
                assert!(
                    os.verify_message(&pem, alg, &msg, sig),
                    "{spec} {alg} {how}: openssl dgst -verify refuses the service's signature"
                );
                assert!(
                    os.verify_digest(&pem, alg, &digest, sig),
                    "{spec} {alg} {how}: openssl pkeyutl -verify refuses the service's signature"
                );
                assert!(
                    !os.verify_message(&pem, alg, &other, sig),
                    "{spec} {alg} {how}: openssl accepts the signature for another message"
                );
                // The service verifies it as a message and as a digest.
                verify_ok(&mut c, id, alg, &msg, None, sig).await;
                verify_ok(&mut c, id, alg, &msg, Some("RAW"), sig).await;
                verify_ok(&mut c, id, alg, &digest, Some("DIGEST"), sig).await;
            }
            if alg.starts_with("RSASSA_PKCS1_V1_5") {
                assert_eq!(raw.signature, dig.signature, "PKCS#1 v1.5 is deterministic");
            } else if alg.starts_with("RSASSA_PSS") {
                assert_ne!(raw.signature, explicit_raw.signature, "{alg}: PSS salts are random");
            } else {
                // ECDSA may be deterministic (RFC 6979), but a nonce must never repeat across
                // messages: the same r for two messages gives the private key away.
                let r_other = ecdsa_r(&sign(&mut c, id, alg, &other, None).await.signature);
                assert_ne!(ecdsa_r(&raw.signature), r_other, "{spec}: ECDSA nonce reused");
            }
        }
    }
}

/// Sign and Verify: message sizes at their edges, digest lengths, and every kind of bad signature.
#[tokio::test]
async fn asym_sign_verify_limits_and_invalid_signatures() {
    let server = Server::start().await;
    let mut c = server.client().await;
    let rsa = create(&mut c, "RSA_2048", "SIGN_VERIFY").await;
    let rsa2 = create(&mut c, "RSA_2048", "SIGN_VERIFY").await;
    let p256 = create(&mut c, "ECC_NIST_P256", "SIGN_VERIFY").await;
    let p384 = create(&mut c, "ECC_NIST_P384", "SIGN_VERIFY").await;

    let cases = [
        (&rsa, "RSASSA_PSS_SHA_256"),
        (&rsa, "RSASSA_PKCS1_V1_5_SHA_384"),
        (&rsa, "RSASSA_PSS_SHA_512"),
        (&p256, "ECDSA_SHA_256"),
        (&p384, "ECDSA_SHA_384"),
    ];
    for (key, alg) in cases {
        let id = key.key_id.as_str();
        // RAW: 1 and 4096 bytes sign; 0 and 4097 do not, on Sign nor on Verify.
        for n in [1, 4096] {
            let s = sign(&mut c, id, alg, &pattern(n), None).await;
            verify_ok(&mut c, id, alg, &pattern(n), None, &s.signature).await;
        }
        let sig = sign(&mut c, id, alg, b"x", None).await.signature;
        for n in [0, 4097] {
            for mt in [None, Some("RAW")] {
                expect_err(c.sign(sign_req(id, alg, &pattern(n), mt)).await, "ValidationException");
                expect_err(
                    c.verify(verify_req(id, alg, &pattern(n), mt, &sig)).await,
                    "ValidationException",
                );
            }
        }
        // DIGEST: exactly the hash length; one byte shorter or longer, or empty, is refused.
        let (_, len) = hash_of(alg);
        let s = sign(&mut c, id, alg, &pattern(len), Some("DIGEST")).await;
        verify_ok(&mut c, id, alg, &pattern(len), Some("DIGEST"), &s.signature).await;
        for n in [0, len - 1, len + 1, 4096] {
            expect_err(
                c.sign(sign_req(id, alg, &pattern(n), Some("DIGEST"))).await,
                "ValidationException",
            );
            expect_err(
                c.verify(verify_req(id, alg, &pattern(n), Some("DIGEST"), &s.signature))
                    .await,
                "ValidationException",
            );
        }
        // EXTERNAL_MU is ML-DSA's 64-byte mu: with this algorithm, or another length, the request
        // alone is wrong, so it is refused before the key is looked up (a missing key too).
        let missing = "11111111-2222-3333-4444-555555555555";
        for (key_id, n) in [(id, 64), (id, 10), (missing, 64), (missing, 10)] {
            let s = c
                .sign(sign_req(key_id, alg, &pattern(n), Some("EXTERNAL_MU")))
                .await
                .unwrap_err();
            assert_eq!(error_type(&s), "ValidationException", "{key_id} {n}: {s:?}");
            assert!(s.message().contains("EXTERNAL_MU"), "{}", s.message());
        }
        let s = c
            .sign(sign_req(missing, "ML_DSA_SHAKE_256", &pattern(10), Some("EXTERNAL_MU")))
            .await
            .unwrap_err();
        assert_eq!(error_type(&s), "ValidationException", "{s:?}");
        assert!(s.message().contains("64 bytes"), "{}", s.message());
        // Unknown message types.
        for mt in ["HASH", "raw", "digest", "EXTERNAL_MU_X"] {
            expect_err(c.sign(sign_req(id, alg, b"m", Some(mt))).await, "ValidationException");
            expect_err(
                c.verify(verify_req(id, alg, b"m", Some(mt), &sig)).await,
                "ValidationException",
            );
        }

        // Bad signatures: KMSInvalidSignatureException.
        let msg = b"signed message".to_vec();
        let good = sign(&mut c, id, alg, &msg, None).await.signature;
        verify_ok(&mut c, id, alg, &msg, None, &good).await;
        for (i, bit) in [(0usize, 0x01u8), (good.len() / 2, 0x10), (good.len() - 1, 0x80)] {
            let mut bad = good.clone();
            bad[i] ^= bit;
            expect_err(
                c.verify(verify_req(id, alg, &msg, None, &bad)).await,
                "KMSInvalidSignatureException",
            );
        }
        expect_err(
            c.verify(verify_req(id, alg, b"signed messagf", None, &good)).await,
            "KMSInvalidSignatureException",
        );
        expect_err(
            c.verify(verify_req(id, alg, &msg, None, &good[..good.len() - 1])).await,
            "KMSInvalidSignatureException",
        );
        expect_err(
            c.verify(verify_req(id, alg, &msg, None, &[0u8; 6144])).await,
            "KMSInvalidSignatureException",
        );
        // The signature is checked as the message, not as its digest, and vice versa.
        expect_err(
            c.verify(verify_req(id, alg, &pattern(len), Some("DIGEST"), &good))
                .await,
            "KMSInvalidSignatureException",
        );
        // Signature sizes: 1-6144 bytes.
        expect_err(
            c.verify(verify_req(id, alg, &msg, None, &[])).await,
            "ValidationException",
        );
        expect_err(
            c.verify(verify_req(id, alg, &msg, None, &[0u8; 6145])).await,
            "ValidationException",
        );
    }

    // Another key's signature, and another algorithm's signature, do not verify.
    let msg = b"whose signature".to_vec();
    let by_rsa2 = sign(&mut c, &rsa2.key_id, "RSASSA_PSS_SHA_256", &msg, None)
        .await
        .signature;
    expect_err(
        c.verify(verify_req(&rsa.key_id, "RSASSA_PSS_SHA_256", &msg, None, &by_rsa2))
            .await,
        "KMSInvalidSignatureException",
    );
    let pss = sign(&mut c, &rsa.key_id, "RSASSA_PSS_SHA_256", &msg, None)
        .await
        .signature;
    for alg in ["RSASSA_PKCS1_V1_5_SHA_256", "RSASSA_PSS_SHA_384"] {
        expect_err(
            c.verify(verify_req(&rsa.key_id, alg, &msg, None, &pss)).await,
            "KMSInvalidSignatureException",
        );
    }
    let pkcs1 = sign(&mut c, &rsa.key_id, "RSASSA_PKCS1_V1_5_SHA_256", &msg, None)
        .await
        .signature;
    expect_err(
        c.verify(verify_req(&rsa.key_id, "RSASSA_PSS_SHA_256", &msg, None, &pkcs1))
            .await,
        "KMSInvalidSignatureException",
    );
    let p256_2 = create(&mut c, "ECC_NIST_P256", "SIGN_VERIFY").await;
    let ec = sign(&mut c, &p256.key_id, "ECDSA_SHA_256", &msg, None).await.signature;
    expect_err(
        c.verify(verify_req(&p256_2.key_id, "ECDSA_SHA_256", &msg, None, &ec))
            .await,
        "KMSInvalidSignatureException",
    );

    // Key forms: ARN and alias sign; the response names the key by ARN. Unknown keys: NotFound.
    c.create_alias(pb::CreateAliasRequest {
        alias_name: "alias/signer".into(),
        target_key_id: p256.key_id.clone(),
    })
    .await
    .unwrap();
    for form in [p256.arn.clone(), "alias/signer".to_string()] {
        let s = sign(&mut c, &form, "ECDSA_SHA_256", &msg, None).await;
        assert_eq!(s.key_id, p256.arn);
        verify_ok(&mut c, &form, "ECDSA_SHA_256", &msg, None, &s.signature).await;
    }
    expect_err(
        c.sign(sign_req("alias/nobody", "ECDSA_SHA_256", &msg, None)).await,
        "NotFoundException",
    );
    expect_err(
        c.sign(sign_req(
            "11111111-2222-3333-4444-555555555555",
            "ECDSA_SHA_256",
            &msg,
            None,
        ))
        .await,
        "NotFoundException",
    );
    expect_err(
        c.sign(sign_req("", "ECDSA_SHA_256", &msg, None)).await,
        "ValidationException",
    );
}

/// GetPublicKey: a DER SubjectPublicKeyInfo of the spec's size, stable, distinct per key, with the
/// key's metadata; symmetric and HMAC keys have none.
#[tokio::test]
async fn asym_get_public_key_returns_the_keys_spki() {
    let server = Server::start().await;
    let mut c = server.client().await;
    let os = Openssl::new();

    let mut seen = Vec::new();
    for (spec, usage) in [
        ("RSA_2048", "ENCRYPT_DECRYPT"),
        ("RSA_2048", "SIGN_VERIFY"),
        ("RSA_3072", "ENCRYPT_DECRYPT"),
        ("ECC_NIST_P256", "SIGN_VERIFY"),
        ("ECC_NIST_P256", "SIGN_VERIFY"),
        ("ECC_NIST_P384", "SIGN_VERIFY"),
    ] {
        let key = create(&mut c, spec, usage).await;
        let p = public_key(&mut c, &key.key_id).await;
        assert_eq!(p.key_id, key.arn);
        assert_eq!(p.key_spec, spec);
        assert_eq!(p.customer_master_key_spec, spec);
        assert_eq!(p.key_usage, usage);
        assert_eq!(
            sorted(&p.signing_algorithms),
            strings(&signing_algorithms_for(spec, usage))
        );
        assert_eq!(
            sorted(&p.encryption_algorithms),
            strings(&encryption_algorithms_for(spec, usage))
        );
        check_spki(&os, spec, &p.public_key);
        // Stable, and the same through the ARN.
        assert_eq!(public_key(&mut c, &key.arn).await.public_key, p.public_key);
        assert!(!seen.contains(&p.public_key), "two keys share a public key");
        seen.push(p.public_key);
    }

    let symmetric = create_key(&mut c).await;
    let hmac = create(&mut c, "HMAC_256", "GENERATE_VERIFY_MAC").await;
    for key in [&symmetric, &hmac] {
        expect_err(
            c.get_public_key(pb::GetPublicKeyRequest {
                key_id: key.key_id.clone(),
                ..Default::default()
            })
            .await,
            "UnsupportedOperationException",
        );
    }
    expect_err(
        c.get_public_key(pb::GetPublicKeyRequest {
            key_id: "alias/none".into(),
            ..Default::default()
        })
        .await,
        "NotFoundException",
    );
}

/// RSAES-OAEP: openssl encrypts with the exported public key and the service decrypts, for every
/// RSA spec and both algorithms; the plaintext limit is k - 2 hLen - 2 exactly; RSA ciphertexts need
/// their key and algorithm and take no encryption context.
#[tokio::test]
async fn asym_rsa_oaep_interop_and_plaintext_limits() {
    let server = Server::start().await;
    let mut c = server.client().await;
    let os = Openssl::new();

    for spec in ["RSA_2048", "RSA_3072", "RSA_4096"] {
        let key = create(&mut c, spec, "ENCRYPT_DECRYPT").await;
        let id = key.key_id.as_str();
        let k = modulus_bytes(spec);
        let pem = os.pem(&public_key(&mut c, id).await.public_key);

        for alg in ["RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256"] {
            let limit = oaep_limit(spec, alg);
            let what = format!("{spec} {alg}");

            // Encrypted outside, decrypted inside.
            for n in [1, limit] {
                let ct = os.oaep_encrypt(&pem, alg, &pattern(n)).unwrap();
                assert_eq!(ct.len(), k);
                let d = rsa_decrypt(&mut c, id, alg, &ct).await;
                assert_eq!(d.plaintext, pattern(n), "{what}: {n} bytes from openssl");
                assert_eq!(d.key_id, key.arn);
                assert_eq!(d.encryption_algorithm, alg);
            }
            // openssl agrees about the limit.
            assert!(os.oaep_encrypt(&pem, alg, &pattern(limit + 1)).is_none());

            // Encrypted inside at the limit; one byte more is refused.
            let e = c
                .encrypt(encrypt_req(id, Some(alg), &pattern(limit)))
                .await
                .unwrap_or_else(|s| panic!("{what}: Encrypt {limit} bytes: {} {}", error_type(&s), s.message()))
                .into_inner();
            assert_eq!(e.ciphertext_blob.len(), k, "{what}: raw RSA ciphertext");
            assert_eq!(e.key_id, key.arn);
            assert_eq!(e.encryption_algorithm, alg);
            let again = c
                .encrypt(encrypt_req(id, Some(alg), &pattern(limit)))
                .await
                .unwrap()
                .into_inner();
            assert_ne!(e.ciphertext_blob, again.ciphertext_blob, "OAEP is randomised");
            for ct in [&e.ciphertext_blob, &again.ciphertext_blob] {
                assert_eq!(rsa_decrypt(&mut c, id, alg, ct).await.plaintext, pattern(limit));
            }
            for n in [limit + 1, 4096] {
                let msg = expect_err(
                    c.encrypt(encrypt_req(id, Some(alg), &pattern(n))).await,
                    "ValidationException",
                );
                assert!(!msg.is_empty(), "{what}: {n} bytes");
            }

            // The other OAEP hash does not decrypt it.
            let other = if alg == "RSAES_OAEP_SHA_1" {
                "RSAES_OAEP_SHA_256"
            } else {
                "RSAES_OAEP_SHA_1"
            };
            expect_err(
                c.decrypt(decrypt_req(Some(id), Some(other), &e.ciphertext_blob)).await,
                "InvalidCiphertextException",
            );
            // Tampered or truncated ciphertexts.
            for (i, bit) in [(0usize, 0x01u8), (k / 2, 0x04), (k - 1, 0x80)] {
                let mut bad = e.ciphertext_blob.clone();
                bad[i] ^= bit;
                expect_err(
                    c.decrypt(decrypt_req(Some(id), Some(alg), &bad)).await,
                    "InvalidCiphertextException",
                );
            }
            expect_err(
                c.decrypt(decrypt_req(Some(id), Some(alg), &e.ciphertext_blob[..k - 1]))
                    .await,
                "InvalidCiphertextException",
            );
            // Without a KeyId there is nothing to name the key: it is not a symmetric blob.
            for a in [Some(alg), None] {
                expect_err(
                    c.decrypt(decrypt_req(None, a, &e.ciphertext_blob)).await,
                    "InvalidCiphertextException",
                );
            }
        }

        // Plaintext must be 1 byte at least.
        expect_err(
            c.encrypt(encrypt_req(id, Some("RSAES_OAEP_SHA_256"), &[])).await,
            "ValidationException",
        );
        // RSA keys take no encryption context.
        expect_err(
            c.encrypt(pb::EncryptRequest {
                key_id: id.into(),
                plaintext: b"pt".to_vec(),
                encryption_context: ctx(&[("k", "v")]),
                encryption_algorithm: Some("RSAES_OAEP_SHA_256".into()),
                ..Default::default()
            })
            .await,
            "ValidationException",
        );
        // No algorithm is SYMMETRIC_DEFAULT, as in AWS, which does not fit RSA keys.
        for alg in [None, Some("SYMMETRIC_DEFAULT")] {
            let msg = expect_err(c.encrypt(encrypt_req(id, alg, b"pt")).await, "InvalidKeyUsageException");
            assert!(
                msg.starts_with(&format!(
                    "Algorithm SYMMETRIC_DEFAULT is incompatible with key spec {spec}."
                )),
                "{msg}"
            );
        }
    }

    // Decrypt with a KeyId but no or the wrong kind of algorithm, or with the wrong RSA key.
    let a = create(&mut c, "RSA_2048", "ENCRYPT_DECRYPT").await;
    let b = create(&mut c, "RSA_2048", "ENCRYPT_DECRYPT").await;
    let ct = c
        .encrypt(encrypt_req(&a.key_id, Some("RSAES_OAEP_SHA_256"), b"for a"))
        .await
        .unwrap()
        .into_inner()
        .ciphertext_blob;
    expect_err(
        c.decrypt(decrypt_req(Some(&a.key_id), Some("SYMMETRIC_DEFAULT"), &ct))
            .await,
        "InvalidKeyUsageException",
    );
    // No algorithm is SYMMETRIC_DEFAULT, as in AWS.
    let msg = expect_err(
        c.decrypt(decrypt_req(Some(&a.key_id), None, &ct)).await,
        "InvalidKeyUsageException",
    );
    assert!(
        msg.starts_with("Algorithm SYMMETRIC_DEFAULT is incompatible with key spec RSA_2048."),
        "{msg}"
    );
    // Nor does ReEncrypt's destination take an RSA key without an algorithm.
    let sym = create_key(&mut c).await;
    let sym_blob = c
        .encrypt(encrypt_req(&sym.key_id, None, b"pt"))
        .await
        .unwrap()
        .into_inner()
        .ciphertext_blob;
    expect_err(
        c.re_encrypt(pb::ReEncryptRequest {
            ciphertext_blob: sym_blob,
            destination_key_id: a.key_id.clone(),
            ..Default::default()
        })
        .await,
        "InvalidKeyUsageException",
    );
    expect_err(
        c.decrypt(decrypt_req(Some(&b.key_id), Some("RSAES_OAEP_SHA_256"), &ct))
            .await,
        "InvalidCiphertextException",
    );
    expect_err(
        c.decrypt(decrypt_req(Some(&a.key_id), Some("RSAES_OAEP_512"), &ct))
            .await,
        "ValidationException",
    );
    // The key's ARN and an alias decrypt.
    c.create_alias(pb::CreateAliasRequest {
        alias_name: "alias/rsa-a".into(),
        target_key_id: a.key_id.clone(),
    })
    .await
    .unwrap();
    for form in [a.arn.as_str(), "alias/rsa-a"] {
        let d = rsa_decrypt(&mut c, form, "RSAES_OAEP_SHA_256", &ct).await;
        assert_eq!(d.plaintext, b"for a");
        assert_eq!(d.key_id, a.arn);
    }
    // A symmetric key cannot encrypt with OAEP, nor an RSA signing key at all.
    let signer = create(&mut c, "RSA_2048", "SIGN_VERIFY").await;
    for alg in ["RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256"] {
        for key in [&sym, &signer] {
            expect_err(
                c.encrypt(encrypt_req(&key.key_id, Some(alg), b"pt")).await,
                "InvalidKeyUsageException",
            );
        }
    }
}

/// GenerateDataKeyPair(WithoutPlaintext): the halves match (checked with openssl), the private key
/// is PKCS#8 encrypted under the symmetric KMS key with the encryption context, and bad requests are
/// refused.
#[tokio::test]
async fn asym_data_key_pairs_halves_match() {
    let server = Server::start().await;
    let mut c = server.client().await;
    let os = Openssl::new();
    let kek = create_key(&mut c).await;
    let context = ctx(&[("purpose", "data key pair"), ("tenant", "42")]);
    let msg = b"signed outside the service".to_vec();

    for spec in KEY_PAIR_SPECS {
        let p = c
            .generate_data_key_pair(pair_req(&kek.key_id, spec, &context))
            .await
            .unwrap_or_else(|s| panic!("GenerateDataKeyPair {spec}: {} {}", error_type(&s), s.message()))
            .into_inner();
        assert_eq!(p.key_id, kek.arn);
        assert_eq!(p.key_pair_spec, spec);
        check_spki(&os, spec, &p.public_key);
        assert!(os.is_pkcs8(&p.private_key_plaintext), "{spec}: not PKCS#8");
        assert_eq!(
            os.public_of_private(&p.private_key_plaintext),
            p.public_key,
            "{spec}: the private key's public half is not the public key"
        );
        // Sign with the private half, verify with the public half, both in openssl.
        let pem = os.pem(&p.public_key);
        for alg in signing_algorithms_for(spec, "SIGN_VERIFY") {
            let sig = os.sign_with_private(&p.private_key_plaintext, alg, &msg);
            assert!(os.verify_message(&pem, alg, &msg, &sig), "{spec} {alg}");
            assert!(!os.verify_message(&pem, alg, b"another", &sig), "{spec} {alg}");
        }
        // The ciphertext is the private key under the KMS key and the context.
        let d = c
            .decrypt(pb::DecryptRequest {
                ciphertext_blob: p.private_key_ciphertext_blob.clone(),
                encryption_context: context.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(d.plaintext, p.private_key_plaintext);
        assert_eq!(d.key_id, kek.arn);
        expect_err(
            c.decrypt(pb::DecryptRequest {
                ciphertext_blob: p.private_key_ciphertext_blob.clone(),
                ..Default::default()
            })
            .await,
            "InvalidCiphertextException",
        );
    }

    // Without plaintext: the decrypted private key matches the returned public key.
    for spec in ["RSA_2048", "ECC_NIST_P256", "ECC_NIST_P384"] {
        let p = c
            .generate_data_key_pair_without_plaintext(pair_wp_req(&kek.key_id, spec, &context))
            .await
            .unwrap_or_else(|s| {
                panic!(
                    "GenerateDataKeyPairWithoutPlaintext {spec}: {} {}",
                    error_type(&s),
                    s.message()
                )
            })
            .into_inner();
        assert_eq!(p.key_id, kek.arn);
        assert_eq!(p.key_pair_spec, spec);
        check_spki(&os, spec, &p.public_key);
        let d = c
            .decrypt(pb::DecryptRequest {
                ciphertext_blob: p.private_key_ciphertext_blob.clone(),
                encryption_context: context.clone(),
                key_id: Some(kek.key_id.clone()),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(os.is_pkcs8(&d.plaintext), "{spec}: not PKCS#8");
        assert_eq!(
            os.public_of_private(&d.plaintext),
            p.public_key,
            "{spec}: the encrypted private key is not the public key's half"
        );
        let mut other_ctx = context.clone();
        other_ctx.insert("tenant".into(), "43".into());
        expect_err(
            c.decrypt(pb::DecryptRequest {
                ciphertext_blob: p.private_key_ciphertext_blob.clone(),
                encryption_context: other_ctx,
                ..Default::default()
            })
            .await,
            "InvalidCiphertextException",
        );
    }

    // Every pair is new.
    let none = HashMap::new();
    let one = c
        .generate_data_key_pair(pair_req(&kek.key_id, "ECC_NIST_P256", &none))
        .await
        .unwrap()
        .into_inner();
    let two = c
        .generate_data_key_pair(pair_req(&kek.key_id, "ECC_NIST_P256", &none))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(one.public_key, two.public_key);
    assert_ne!(one.private_key_plaintext, two.private_key_plaintext);

    // Bad key pair specs.
    for spec in [
        "",
        "RSA_1024",
        "rsa_2048",
        "AES_256",
        "SYMMETRIC_DEFAULT",
        "HMAC_256",
        "ECC_NIST_P256 ",
        // CreateKey's ML-KEM specs are not among AWS's DataKeyPairSpec values.
        "ML_KEM_512",
        "ML_KEM_768",
        "ML_KEM_1024",
    ] {
        expect_err(
            c.generate_data_key_pair(pair_req(&kek.key_id, spec, &none)).await,
            "ValidationException",
        );
        expect_err(
            c.generate_data_key_pair_without_plaintext(pair_wp_req(&kek.key_id, spec, &none))
                .await,
            "ValidationException",
        );
    }
    // AWS's other key pair specs are known, and not supported here.
    for spec in ["ECC_NIST_P521", "ECC_SECG_P256K1", "SM2", "ECC_NIST_EDWARDS25519"] {
        expect_err(
            c.generate_data_key_pair(pair_req(&kek.key_id, spec, &none)).await,
            "UnsupportedOperationException",
        );
        expect_err(
            c.generate_data_key_pair_without_plaintext(pair_wp_req(&kek.key_id, spec, &none))
                .await,
            "UnsupportedOperationException",
        );
    }
    // The KMS key must be a symmetric encryption key.
    let rsa = create(&mut c, "RSA_2048", "ENCRYPT_DECRYPT").await;
    let ecc = create(&mut c, "ECC_NIST_P256", "SIGN_VERIFY").await;
    let hmac = create(&mut c, "HMAC_256", "GENERATE_VERIFY_MAC").await;
    for key in [&rsa, &ecc, &hmac] {
        expect_err(
            c.generate_data_key_pair(pair_req(&key.key_id, "RSA_2048", &none)).await,
            "InvalidKeyUsageException",
        );
        expect_err(
            c.generate_data_key_pair_without_plaintext(pair_wp_req(&key.key_id, "ECC_NIST_P256", &none))
                .await,
            "InvalidKeyUsageException",
        );
    }
    expect_err(
        c.generate_data_key_pair(pair_req("alias/none", "RSA_2048", &none))
            .await,
        "NotFoundException",
    );
    c.disable_key(pb::DisableKeyRequest {
        key_id: kek.key_id.clone(),
    })
    .await
    .unwrap();
    expect_err(
        c.generate_data_key_pair(pair_req(&kek.key_id, "ECC_NIST_P256", &none))
            .await,
        "DisabledException",
    );
    expect_err(
        c.generate_data_key_pair_without_plaintext(pair_wp_req(&kek.key_id, "ECC_NIST_P256", &none))
            .await,
        "DisabledException",
    );
}

/// The server's thread count, from /proc.
fn threads_of(pid: u32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("Threads:")).unwrap();
    line["Threads:".len()..].trim().parse().unwrap()
}

/// A burst of key pair generations (CPU-bound, up to seconds each) runs a few at a time, on turns
/// of their own: it does not take a blocking thread each, which every store call also needs.
#[tokio::test]
async fn asym_a_burst_of_key_pair_generations_runs_a_few_at_a_time() {
    let server = Server::start().await;
    let mut c = server.client().await;
    let kek = create_key(&mut c).await;
    // One call first, so the key's material is cached: the burst then needs no HSM worker threads
    // (SoftHSM2 unwraps on a pool of its own), and only the generations could add threads.
    c.generate_data_key_pair(pair_req(&kek.key_id, "ECC_NIST_P256", &HashMap::new()))
        .await
        .unwrap();
    let pid = server.pid();
    let before = threads_of(pid);
    let burst = 32;
    let calls = (0..burst).map(|_| {
        let mut c = c.clone();
        let key = kek.key_id.clone();
        async move {
            c.generate_data_key_pair(pair_req(&key, "RSA_2048", &HashMap::new()))
                .await
        }
    });
    let done = std::sync::atomic::AtomicBool::new(false);
    let most = Cell::new(before);
    let watch = async {
        while !done.load(std::sync::atomic::Ordering::SeqCst) {
            most.set(most.get().max(threads_of(pid)));
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    };
    let all = async {
        let results = futures_join_all(calls).await;
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        results
    };
    let (results, ()) = tokio::join!(all, watch);
    for r in results {
        assert!(!r.unwrap().into_inner().public_key.is_empty());
    }
    // One blocking thread per core at most for the generations, plus a few for store calls.
    assert!(
        most.get() < before + burst / 2,
        "{burst} generations took {} threads beyond the {before} there were",
        most.get() - before
    );
}

/// Asymmetric keys obey key state (disabled, pending deletion) and keep their key pair across a
/// restart: the same public key, old signatures verify, old RSA ciphertexts decrypt.
#[tokio::test]
async fn asym_keys_follow_key_state_and_survive_restart() {
    let mut server = Server::start().await;
    let mut c = server.client().await;
    let signer = create(&mut c, "ECC_NIST_P256", "SIGN_VERIFY").await;
    let rsa_signer = create(&mut c, "RSA_2048", "SIGN_VERIFY").await;
    let enc = create(&mut c, "RSA_2048", "ENCRYPT_DECRYPT").await;
    let msg = b"before the restart".to_vec();

    let ec_sig = sign(&mut c, &signer.key_id, "ECDSA_SHA_256", &msg, None)
        .await
        .signature;
    let rsa_sig = sign(&mut c, &rsa_signer.key_id, "RSASSA_PSS_SHA_256", &msg, None)
        .await
        .signature;
    let ct = c
        .encrypt(encrypt_req(&enc.key_id, Some("RSAES_OAEP_SHA_1"), &msg))
        .await
        .unwrap()
        .into_inner()
        .ciphertext_blob;
    let pubs = [
        public_key(&mut c, &signer.key_id).await.public_key,
        public_key(&mut c, &rsa_signer.key_id).await.public_key,
        public_key(&mut c, &enc.key_id).await.public_key,
    ];

    // Disabled: every operation on the key is DisabledException, GetPublicKey included.
    for key in [&signer, &enc] {
        c.disable_key(pb::DisableKeyRequest {
            key_id: key.key_id.clone(),
        })
        .await
        .unwrap();
    }
    expect_err(
        c.sign(sign_req(&signer.key_id, "ECDSA_SHA_256", &msg, None)).await,
        "DisabledException",
    );
    expect_err(
        c.verify(verify_req(&signer.key_id, "ECDSA_SHA_256", &msg, None, &ec_sig))
            .await,
        "DisabledException",
    );
    for key in [&signer, &enc] {
        expect_err(
            c.get_public_key(pb::GetPublicKeyRequest {
                key_id: key.key_id.clone(),
                ..Default::default()
            })
            .await,
            "DisabledException",
        );
    }
    expect_err(
        c.encrypt(encrypt_req(&enc.key_id, Some("RSAES_OAEP_SHA_1"), &msg))
            .await,
        "DisabledException",
    );
    expect_err(
        c.decrypt(decrypt_req(Some(&enc.key_id), Some("RSAES_OAEP_SHA_1"), &ct))
            .await,
        "DisabledException",
    );
    for key in [&signer, &enc] {
        c.enable_key(pb::EnableKeyRequest {
            key_id: key.key_id.clone(),
        })
        .await
        .unwrap();
    }

    server.restart().await;
    let mut c = server.client().await;
    for (key, before) in [&signer, &rsa_signer, &enc].into_iter().zip(&pubs) {
        assert_eq!(
            &public_key(&mut c, &key.key_id).await.public_key,
            before,
            "the public key changed across a restart"
        );
    }
    verify_ok(&mut c, &signer.key_id, "ECDSA_SHA_256", &msg, None, &ec_sig).await;
    verify_ok(&mut c, &rsa_signer.key_id, "RSASSA_PSS_SHA_256", &msg, None, &rsa_sig).await;
    let new_sig = sign(&mut c, &signer.key_id, "ECDSA_SHA_256", &msg, None)
        .await
        .signature;
    let os = Openssl::new();
    assert!(os.verify_message(&os.pem(&pubs[0]), "ECDSA_SHA_256", &msg, &new_sig));
    assert_eq!(
        rsa_decrypt(&mut c, &enc.key_id, "RSAES_OAEP_SHA_1", &ct)
            .await
            .plaintext,
        msg
    );

    // Pending deletion: KMSInvalidStateException.
    for key in [&signer, &enc] {
        c.schedule_key_deletion(pb::ScheduleKeyDeletionRequest {
            key_id: key.key_id.clone(),
            pending_window_in_days: Some(7),
        })
        .await
        .unwrap();
    }
    expect_err(
        c.sign(sign_req(&signer.key_id, "ECDSA_SHA_256", &msg, None)).await,
        "KMSInvalidStateException",
    );
    expect_err(
        c.verify(verify_req(&signer.key_id, "ECDSA_SHA_256", &msg, None, &ec_sig))
            .await,
        "KMSInvalidStateException",
    );
    expect_err(
        c.get_public_key(pb::GetPublicKeyRequest {
            key_id: signer.key_id.clone(),
            ..Default::default()
        })
        .await,
        "KMSInvalidStateException",
    );
    expect_err(
        c.decrypt(decrypt_req(Some(&enc.key_id), Some("RSAES_OAEP_SHA_1"), &ct))
            .await,
        "KMSInvalidStateException",
    );
}

/// ReEncrypt's messages about an RSA key name the parameter at fault: the source's or the
/// destination's algorithm or encryption context, not Decrypt's or Encrypt's.
#[tokio::test]
async fn re_encrypt_errors_name_the_source_or_destination_parameter() {
    let server = Server::start().await;
    let mut c = server.client().await;
    let rsa = create(&mut c, "RSA_2048", "ENCRYPT_DECRYPT").await;
    let sym = create_key(&mut c).await;
    let rsa_blob = c
        .encrypt(encrypt_req(&rsa.key_id, Some("RSAES_OAEP_SHA_256"), b"pt"))
        .await
        .unwrap()
        .into_inner()
        .ciphertext_blob;
    let sym_blob = c
        .encrypt(encrypt_req(&sym.key_id, None, b"pt"))
        .await
        .unwrap()
        .into_inner()
        .ciphertext_blob;
    let context = || HashMap::from([("purpose".to_string(), "test".to_string())]);
    let cases = [
        (
            pb::ReEncryptRequest {
                ciphertext_blob: rsa_blob.clone(),
                source_key_id: Some(rsa.key_id.clone()),
                destination_key_id: sym.key_id.clone(),
                ..Default::default()
            },
            "InvalidKeyUsageException",
            "sourceEncryptionAlgorithm",
        ),
        (
            pb::ReEncryptRequest {
                ciphertext_blob: rsa_blob,
                source_key_id: Some(rsa.key_id.clone()),
                source_encryption_algorithm: Some("RSAES_OAEP_SHA_256".into()),
                source_encryption_context: context(),
                destination_key_id: sym.key_id.clone(),
                ..Default::default()
            },
            "ValidationException",
            "SourceEncryptionContext",
        ),
        (
            pb::ReEncryptRequest {
                ciphertext_blob: sym_blob,
                destination_key_id: rsa.key_id.clone(),
                destination_encryption_algorithm: Some("RSAES_OAEP_SHA_256".into()),
                destination_encryption_context: context(),
                ..Default::default()
            },
            "ValidationException",
            "DestinationEncryptionContext",
        ),
    ];
    for (request, error, parameter) in cases {
        let message = expect_err(c.re_encrypt(request).await, error);
        assert!(message.contains(parameter), "{parameter}: {message}");
    }
}
