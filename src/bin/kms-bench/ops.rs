//! The operations a benchmark drives, the keys and ciphertexts they need, and one request of each.
//!
//! To add an operation: a variant of `Op`, its `name`, what it needs in `prepare`, and its request in
//! `call`. A server that lacks one (UNIMPLEMENTED, or UnsupportedOperationException for the key
//! spec it needs) is reported as "not supported by the server" rather than as an error.

use std::collections::HashMap;
use std::sync::Arc;

use kms::keys::ciphertext::OVERHEAD;
use kms::proto as pb;
use tonic::{Code, Status};

use crate::client::Conn;
use crate::load::Rng;

pub const ERROR_TYPE: &str = "x-kms-error-type";
/// Data keys and Encrypt payloads: 32 bytes, an AES-256 data key.
pub const PAYLOAD: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Op {
    #[value(name = "gdk", alias = "generate-data-key")]
    GenerateDataKey,
    #[value(name = "decrypt")]
    Decrypt,
    #[value(name = "encrypt")]
    Encrypt,
    #[value(name = "reencrypt", alias = "re-encrypt")]
    ReEncrypt,
    /// ECDSA P-256 (ECDSA_SHA_256) over a 32-byte message.
    #[value(name = "sign")]
    Sign,
    /// RSA-2048 RSASSA_PSS_SHA_256 over a 32-byte message.
    #[value(name = "sign-rsa")]
    SignRsaPss,
    /// HMAC_SHA_256 over a 32-byte message.
    #[value(name = "mac", alias = "generate-mac")]
    GenerateMac,
    #[value(name = "create-key")]
    CreateKey,
}

/// The operations of the default run.
pub const CRYPTO_OPS: &[Op] = &[
    Op::GenerateDataKey,
    Op::Decrypt,
    Op::Encrypt,
    Op::ReEncrypt,
    Op::Sign,
    Op::SignRsaPss,
    Op::GenerateMac,
];

impl Op {
    pub fn name(self) -> &'static str {
        match self {
            Op::GenerateDataKey => "GenerateDataKey",
            Op::Decrypt => "Decrypt",
            Op::Encrypt => "Encrypt",
            Op::ReEncrypt => "ReEncrypt",
            Op::Sign => "Sign",
            Op::SignRsaPss => "Sign(RSA-PSS)",
            Op::GenerateMac => "GenerateMac",
            Op::CreateKey => "CreateKey",
        }
    }
}

/// Symmetric keys and one ciphertext blob per key (a GenerateDataKey blob under `context()`).
pub struct Fixture {
    pub keys: Arc<Vec<String>>,
    pub blobs: Arc<Vec<Vec<u8>>>,
}

pub fn context() -> HashMap<String, String> {
    HashMap::from([("purpose".to_string(), "kms-bench".to_string())])
}

/// Creates `m` symmetric keys and a blob under each.
pub async fn fixture(conn: &Conn, m: usize) -> Result<Fixture, String> {
    let mut keys = Vec::with_capacity(m);
    let mut blobs = Vec::with_capacity(m);
    let mut c = conn.client.clone();
    for _ in 0..m.max(1) {
        let key = create_key(conn, pb::CreateKeyRequest::default())
            .await
            .map_err(|s| format!("CreateKey failed: {}", describe(&s)))?;
        let gdk = c
            .generate_data_key(gdk_request(&key, context()))
            .await
            .map_err(|s| format!("GenerateDataKey failed: {}", describe(&s)))?
            .into_inner();
        keys.push(key);
        blobs.push(gdk.ciphertext_blob);
    }
    Ok(Fixture {
        keys: Arc::new(keys),
        blobs: Arc::new(blobs),
    })
}

/// What one operation's requests are made from.
#[derive(Clone)]
pub struct Workload {
    pub op: Op,
    pub keys: Arc<Vec<String>>,
    pub blobs: Arc<Vec<Vec<u8>>>,
    context: HashMap<String, String>,
}

impl Workload {
    pub fn new(op: Op, keys: Arc<Vec<String>>, blobs: Arc<Vec<Vec<u8>>>) -> Workload {
        Workload {
            op,
            keys,
            blobs,
            context: context(),
        }
    }
}

pub enum Prepared {
    Ready(Workload),
    /// The server does not implement the operation (or the key spec it needs); the message says how.
    Unsupported(String),
}

/// Readies `op` on the server behind `conn`: the symmetric operations use the fixture; Sign and
/// GenerateMac need keys of their own spec, and are probed once.
pub async fn prepare(op: Op, conn: &Conn, fixture: &Fixture) -> Result<Prepared, String> {
    let spec = match op {
        Op::Sign => Some(("ECC_NIST_P256", "SIGN_VERIFY")),
        Op::SignRsaPss => Some(("RSA_2048", "SIGN_VERIFY")),
        Op::GenerateMac => Some(("HMAC_256", "GENERATE_VERIFY_MAC")),
        _ => None,
    };
    let Some((key_spec, key_usage)) = spec else {
        return Ok(Prepared::Ready(Workload::new(
            op,
            fixture.keys.clone(),
            fixture.blobs.clone(),
        )));
    };
    let request = pb::CreateKeyRequest {
        key_spec: Some(key_spec.into()),
        key_usage: Some(key_usage.into()),
        ..Default::default()
    };
    let key = match create_key(conn, request).await {
        Ok(k) => k,
        Err(s) if is_unsupported(&s) => {
            return Ok(Prepared::Unsupported(format!("CreateKey {key_spec}: {}", describe(&s))))
        }
        Err(s) => return Err(format!("CreateKey {key_spec} failed: {}", describe(&s))),
    };
    let w = Workload::new(op, Arc::new(vec![key]), Arc::new(vec![]));
    match call(&w, &mut conn.clone(), &mut Rng::new(1)).await {
        Ok(()) => Ok(Prepared::Ready(w)),
        Err(s) if is_unsupported(&s) => Ok(Prepared::Unsupported(format!("{}: {}", op.name(), describe(&s)))),
        Err(s) => Err(format!("{} probe failed: {}", op.name(), describe(&s))),
    }
}

async fn create_key(conn: &Conn, request: pb::CreateKeyRequest) -> Result<String, Status> {
    let r = conn.client.clone().create_key(request).await?.into_inner();
    r.key_metadata
        .map(|m| m.key_id)
        .ok_or_else(|| Status::internal("CreateKey answered without key metadata"))
}

pub fn gdk_request(key_id: &str, encryption_context: HashMap<String, String>) -> pb::GenerateDataKeyRequest {
    pb::GenerateDataKeyRequest {
        key_id: key_id.to_string(),
        encryption_context,
        key_spec: Some("AES_256".into()),
        ..Default::default()
    }
}

fn pick<'a, T>(items: &'a [T], rng: &mut Rng) -> &'a T {
    &items[rng.below(items.len())]
}

fn expect_len(what: &str, got: usize, want: usize) -> Result<(), Status> {
    if got == want {
        Ok(())
    } else {
        Err(Status::internal(format!("{what}: {got} bytes, expected {want}")))
    }
}

/// One request of `w.op`. Checks the sizes of what comes back.
pub async fn call(w: &Workload, conn: &mut Conn, rng: &mut Rng) -> Result<(), Status> {
    let c = &mut conn.client;
    match w.op {
        Op::GenerateDataKey => {
            let req = gdk_request(pick::<String>(&w.keys, rng), w.context.clone());
            let r = c.generate_data_key(req).await?.into_inner();
            expect_len("GenerateDataKey plaintext", r.plaintext.len(), PAYLOAD)
        }
        Op::Decrypt => {
            let r = c
                .decrypt(pb::DecryptRequest {
                    ciphertext_blob: pick(&w.blobs, rng).clone(),
                    encryption_context: w.context.clone(),
                    ..Default::default()
                })
                .await?
                .into_inner();
            expect_len("Decrypt plaintext", r.plaintext.len(), PAYLOAD)
        }
        Op::Encrypt => {
            let r = c
                .encrypt(pb::EncryptRequest {
                    key_id: pick(&w.keys, rng).clone(),
                    plaintext: vec![0x5a; PAYLOAD],
                    encryption_context: w.context.clone(),
                    ..Default::default()
                })
                .await?
                .into_inner();
            expect_len("Encrypt blob", r.ciphertext_blob.len(), PAYLOAD + OVERHEAD)
        }
        Op::ReEncrypt => {
            let r = c
                .re_encrypt(pb::ReEncryptRequest {
                    ciphertext_blob: pick(&w.blobs, rng).clone(),
                    source_encryption_context: w.context.clone(),
                    destination_key_id: pick(&w.keys, rng).clone(),
                    destination_encryption_context: w.context.clone(),
                    ..Default::default()
                })
                .await?
                .into_inner();
            expect_len("ReEncrypt blob", r.ciphertext_blob.len(), PAYLOAD + OVERHEAD)
        }
        Op::Sign | Op::SignRsaPss => {
            let (algorithm, len) = match w.op {
                Op::Sign => ("ECDSA_SHA_256", None),
                _ => ("RSASSA_PSS_SHA_256", Some(256)),
            };
            let r = c
                .sign(pb::SignRequest {
                    key_id: pick(&w.keys, rng).clone(),
                    message: vec![0x5a; PAYLOAD],
                    message_type: Some("RAW".into()),
                    signing_algorithm: algorithm.into(),
                    ..Default::default()
                })
                .await?
                .into_inner();
            match len {
                Some(n) => expect_len("RSA-2048 signature", r.signature.len(), n),
                None if r.signature.is_empty() => Err(Status::internal("Sign returned no signature")),
                None => Ok(()),
            }
        }
        Op::GenerateMac => {
            let r = c
                .generate_mac(pb::GenerateMacRequest {
                    message: vec![0x5a; PAYLOAD],
                    key_id: pick(&w.keys, rng).clone(),
                    mac_algorithm: "HMAC_SHA_256".into(),
                    ..Default::default()
                })
                .await?
                .into_inner();
            expect_len("GenerateMac mac", r.mac.len(), 32)
        }
        Op::CreateKey => {
            let r = c
                .create_key(pb::CreateKeyRequest {
                    description: "kms-bench".into(),
                    ..Default::default()
                })
                .await?
                .into_inner();
            match r.key_metadata {
                Some(_) => Ok(()),
                None => Err(Status::internal("CreateKey answered without key metadata")),
            }
        }
    }
}

/// Creates one key and returns its id (for populating a store).
pub async fn create_one(conn: &mut Conn) -> Result<String, Status> {
    create_key(
        conn,
        pb::CreateKeyRequest {
            description: "kms-bench".into(),
            ..Default::default()
        },
    )
    .await
}

/// The server does not do this (yet): UNIMPLEMENTED, or AWS's UnsupportedOperationException.
pub fn is_unsupported(s: &Status) -> bool {
    s.code() == Code::Unimplemented || error_type(s).as_deref() == Some("UnsupportedOperationException")
}

pub fn error_type(s: &Status) -> Option<String> {
    s.metadata()
        .get(ERROR_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// "code (AWS exception): message".
pub fn describe(s: &Status) -> String {
    match error_type(s) {
        Some(t) => format!("{:?} ({t}): {}", s.code(), s.message()),
        None => format!("{:?}: {}", s.code(), s.message()),
    }
}
