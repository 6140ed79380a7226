//! The baseline: a bare tonic `KeyManagementService` that does no work. Its handlers answer with
//! responses of the same shape and byte sizes as the server's (ARNs, ciphertext blobs of the same
//! length, the `x-kms-request-id` header) without cryptography, store or audit. It runs as a child
//! process (`kms-bench baseline-server`) so that client and server are separated as with `kms`.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use kms::proto as pb;
use kms::proto::key_management_service_server::{KeyManagementService, KeyManagementServiceServer};
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::StreamExt;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status};

use crate::server::{stop_child, wait_for_line};

const ARN_PREFIX: &str = "arn:aws:kms:us-east-1:111122223333:key/";
const NIL_KEY: &str = "00000000-0000-0000-0000-000000000000";
/// The server's blob: version (1) | key id (16) | material id (4) | nonce (16) | ciphertext | tag (16).
const BLOB_OVERHEAD: usize = kms::keys::ciphertext::OVERHEAD;
const SYMMETRIC_DEFAULT: &str = "SYMMETRIC_DEFAULT";

/// The baseline child process.
pub struct Baseline {
    child: Option<Child>,
    pub url: String,
}

impl Baseline {
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn start() -> Result<Baseline, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut child = Command::new(exe)
            .arg("baseline-server")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start the baseline server: {e}"))?;
        let addr = wait_for_line(&mut child, "baseline listening on ", Duration::from_secs(30));
        let mut b = Baseline {
            child: Some(child),
            url: String::new(),
        };
        b.url = format!("http://{}", addr?);
        Ok(b)
    }
}

impl Drop for Baseline {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            stop_child(child);
        }
    }
}

/// `kms-bench baseline-server`: serves until killed, on a runtime built like the server's.
pub fn serve_blocking(listen: SocketAddr) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let incoming = TcpListenerStream::new(listener).map(|conn| {
            if let Ok(stream) = &conn {
                let _ = stream.set_nodelay(true); // as the server does
            }
            conn
        });
        println!("baseline listening on {addr}");
        tonic::transport::Server::builder()
            .add_service(KeyManagementServiceServer::new(NoWork))
            .serve_with_incoming(incoming)
            .await
            .map_err(|e| format!("baseline server: {e}"))
    })
}

struct NoWork;

fn arn(key_id: &str) -> String {
    if key_id.starts_with("arn:") {
        key_id.to_string()
    } else {
        format!("{ARN_PREFIX}{key_id}")
    }
}

/// A response with the request-id header the server adds, made as the server makes it (a prefix
/// drawn once and a counter: a getrandom call per request would slow the baseline down).
fn answer<T>(body: T) -> Result<Response<T>, Status> {
    let mut r = Response::new(body);
    if let Ok(v) = MetadataValue::try_from(kms::audit::RequestId::next().as_str()) {
        r.metadata_mut().insert("x-kms-request-id", v);
    }
    Ok(r)
}

fn data_key_len(key_spec: Option<&str>, number_of_bytes: Option<i32>) -> usize {
    match (key_spec, number_of_bytes) {
        (Some("AES_128"), _) => 16,
        (_, Some(n)) => n.clamp(1, 1024) as usize,
        _ => 32,
    }
}

fn unimplemented_here<T>() -> Result<Response<T>, Status> {
    Err(Status::unimplemented("not part of the baseline"))
}

#[tonic::async_trait]
impl KeyManagementService for NoWork {
    async fn create_key(&self, r: Request<pb::CreateKeyRequest>) -> Result<Response<pb::CreateKeyResponse>, Status> {
        let r = r.into_inner();
        let key_id = uuid::Uuid::new_v4().to_string();
        answer(pb::CreateKeyResponse {
            key_metadata: Some(pb::KeyMetadata {
                aws_account_id: "111122223333".into(),
                arn: arn(&key_id),
                key_id,
                creation_date: 1_700_000_000,
                enabled: true,
                description: r.description,
                key_usage: "ENCRYPT_DECRYPT".into(),
                key_state: "Enabled".into(),
                deletion_date: None,
                origin: "AWS_KMS".into(),
                key_manager: "CUSTOMER".into(),
                customer_master_key_spec: SYMMETRIC_DEFAULT.into(),
                key_spec: SYMMETRIC_DEFAULT.into(),
                encryption_algorithms: vec![SYMMETRIC_DEFAULT.into()],
                multi_region: false,
                pending_deletion_window_in_days: None,
                signing_algorithms: Vec::new(),
                mac_algorithms: Vec::new(),
            }),
        })
    }

    async fn describe_key(
        &self,
        _: Request<pb::DescribeKeyRequest>,
    ) -> Result<Response<pb::DescribeKeyResponse>, Status> {
        unimplemented_here()
    }

    async fn list_keys(&self, _: Request<pb::ListKeysRequest>) -> Result<Response<pb::ListKeysResponse>, Status> {
        unimplemented_here()
    }

    async fn update_key_description(
        &self,
        _: Request<pb::UpdateKeyDescriptionRequest>,
    ) -> Result<Response<pb::UpdateKeyDescriptionResponse>, Status> {
        unimplemented_here()
    }

    async fn enable_key(&self, _: Request<pb::EnableKeyRequest>) -> Result<Response<pb::EnableKeyResponse>, Status> {
        unimplemented_here()
    }

    async fn disable_key(&self, _: Request<pb::DisableKeyRequest>) -> Result<Response<pb::DisableKeyResponse>, Status> {
        unimplemented_here()
    }

    async fn schedule_key_deletion(
        &self,
        _: Request<pb::ScheduleKeyDeletionRequest>,
    ) -> Result<Response<pb::ScheduleKeyDeletionResponse>, Status> {
        unimplemented_here()
    }

    async fn cancel_key_deletion(
        &self,
        _: Request<pb::CancelKeyDeletionRequest>,
    ) -> Result<Response<pb::CancelKeyDeletionResponse>, Status> {
        unimplemented_here()
    }

    async fn create_alias(
        &self,
        _: Request<pb::CreateAliasRequest>,
    ) -> Result<Response<pb::CreateAliasResponse>, Status> {
        unimplemented_here()
    }

    async fn update_alias(
        &self,
        _: Request<pb::UpdateAliasRequest>,
    ) -> Result<Response<pb::UpdateAliasResponse>, Status> {
        unimplemented_here()
    }

    async fn delete_alias(
        &self,
        _: Request<pb::DeleteAliasRequest>,
    ) -> Result<Response<pb::DeleteAliasResponse>, Status> {
        unimplemented_here()
    }

    async fn list_aliases(
        &self,
        _: Request<pb::ListAliasesRequest>,
    ) -> Result<Response<pb::ListAliasesResponse>, Status> {
        unimplemented_here()
    }

    async fn tag_resource(
        &self,
        _: Request<pb::TagResourceRequest>,
    ) -> Result<Response<pb::TagResourceResponse>, Status> {
        unimplemented_here()
    }

    async fn untag_resource(
        &self,
        _: Request<pb::UntagResourceRequest>,
    ) -> Result<Response<pb::UntagResourceResponse>, Status> {
        unimplemented_here()
    }

    async fn list_resource_tags(
        &self,
        _: Request<pb::ListResourceTagsRequest>,
    ) -> Result<Response<pb::ListResourceTagsResponse>, Status> {
        unimplemented_here()
    }

    async fn encrypt(&self, r: Request<pb::EncryptRequest>) -> Result<Response<pb::EncryptResponse>, Status> {
        let r = r.into_inner();
        answer(pb::EncryptResponse {
            ciphertext_blob: vec![1u8; BLOB_OVERHEAD + r.plaintext.len()],
            key_id: arn(&r.key_id),
            encryption_algorithm: SYMMETRIC_DEFAULT.into(),
        })
    }

    async fn decrypt(&self, r: Request<pb::DecryptRequest>) -> Result<Response<pb::DecryptResponse>, Status> {
        let r = r.into_inner();
        answer(pb::DecryptResponse {
            key_id: arn(r.key_id.as_deref().unwrap_or(NIL_KEY)),
            plaintext: vec![2u8; r.ciphertext_blob.len().saturating_sub(BLOB_OVERHEAD)],
            encryption_algorithm: SYMMETRIC_DEFAULT.into(),
        })
    }

    async fn re_encrypt(&self, r: Request<pb::ReEncryptRequest>) -> Result<Response<pb::ReEncryptResponse>, Status> {
        let r = r.into_inner();
        answer(pb::ReEncryptResponse {
            ciphertext_blob: vec![1u8; r.ciphertext_blob.len()],
            source_key_id: arn(r.source_key_id.as_deref().unwrap_or(NIL_KEY)),
            key_id: arn(&r.destination_key_id),
            source_encryption_algorithm: SYMMETRIC_DEFAULT.into(),
            destination_encryption_algorithm: SYMMETRIC_DEFAULT.into(),
        })
    }

    async fn generate_data_key(
        &self,
        r: Request<pb::GenerateDataKeyRequest>,
    ) -> Result<Response<pb::GenerateDataKeyResponse>, Status> {
        let r = r.into_inner();
        let n = data_key_len(r.key_spec.as_deref(), r.number_of_bytes);
        answer(pb::GenerateDataKeyResponse {
            ciphertext_blob: vec![1u8; BLOB_OVERHEAD + n],
            plaintext: vec![2u8; n],
            key_id: arn(&r.key_id),
        })
    }

    async fn generate_data_key_without_plaintext(
        &self,
        r: Request<pb::GenerateDataKeyWithoutPlaintextRequest>,
    ) -> Result<Response<pb::GenerateDataKeyWithoutPlaintextResponse>, Status> {
        let r = r.into_inner();
        let n = data_key_len(r.key_spec.as_deref(), r.number_of_bytes);
        answer(pb::GenerateDataKeyWithoutPlaintextResponse {
            ciphertext_blob: vec![1u8; BLOB_OVERHEAD + n],
            key_id: arn(&r.key_id),
        })
    }

    async fn generate_random(
        &self,
        r: Request<pb::GenerateRandomRequest>,
    ) -> Result<Response<pb::GenerateRandomResponse>, Status> {
        let n = r.into_inner().number_of_bytes.unwrap_or(32).clamp(1, 1024) as usize;
        answer(pb::GenerateRandomResponse {
            plaintext: vec![3u8; n],
        })
    }

    async fn generate_data_key_pair(
        &self,
        _: Request<pb::GenerateDataKeyPairRequest>,
    ) -> Result<Response<pb::GenerateDataKeyPairResponse>, Status> {
        unimplemented_here()
    }

    async fn generate_data_key_pair_without_plaintext(
        &self,
        _: Request<pb::GenerateDataKeyPairWithoutPlaintextRequest>,
    ) -> Result<Response<pb::GenerateDataKeyPairWithoutPlaintextResponse>, Status> {
        unimplemented_here()
    }

    /// As large as the real signature: RSA-2048 256 bytes, an ECDSA P-256 DER signature 70-72.
    async fn sign(&self, r: Request<pb::SignRequest>) -> Result<Response<pb::SignResponse>, Status> {
        let r = r.into_inner();
        let len = if r.signing_algorithm.starts_with("RSASSA") {
            256
        } else {
            71
        };
        answer(pb::SignResponse {
            key_id: arn(&r.key_id),
            signature: vec![4u8; len],
            signing_algorithm: r.signing_algorithm,
        })
    }

    async fn verify(&self, _: Request<pb::VerifyRequest>) -> Result<Response<pb::VerifyResponse>, Status> {
        unimplemented_here()
    }

    async fn get_public_key(
        &self,
        _: Request<pb::GetPublicKeyRequest>,
    ) -> Result<Response<pb::GetPublicKeyResponse>, Status> {
        unimplemented_here()
    }

    /// An HMAC-SHA-256 is 32 bytes.
    async fn generate_mac(
        &self,
        r: Request<pb::GenerateMacRequest>,
    ) -> Result<Response<pb::GenerateMacResponse>, Status> {
        let r = r.into_inner();
        answer(pb::GenerateMacResponse {
            mac: vec![5u8; 32],
            mac_algorithm: r.mac_algorithm,
            key_id: arn(&r.key_id),
        })
    }

    async fn verify_mac(&self, _: Request<pb::VerifyMacRequest>) -> Result<Response<pb::VerifyMacResponse>, Status> {
        unimplemented_here()
    }

    async fn put_key_policy(
        &self,
        _: Request<pb::PutKeyPolicyRequest>,
    ) -> Result<Response<pb::PutKeyPolicyResponse>, Status> {
        unimplemented_here()
    }

    async fn get_key_policy(
        &self,
        _: Request<pb::GetKeyPolicyRequest>,
    ) -> Result<Response<pb::GetKeyPolicyResponse>, Status> {
        unimplemented_here()
    }

    async fn list_key_policies(
        &self,
        _: Request<pb::ListKeyPoliciesRequest>,
    ) -> Result<Response<pb::ListKeyPoliciesResponse>, Status> {
        unimplemented_here()
    }
    async fn create_grant(
        &self,
        _: Request<pb::CreateGrantRequest>,
    ) -> Result<Response<pb::CreateGrantResponse>, Status> {
        unimplemented_here()
    }

    async fn list_grants(&self, _: Request<pb::ListGrantsRequest>) -> Result<Response<pb::ListGrantsResponse>, Status> {
        unimplemented_here()
    }

    async fn list_retirable_grants(
        &self,
        _: Request<pb::ListRetirableGrantsRequest>,
    ) -> Result<Response<pb::ListGrantsResponse>, Status> {
        unimplemented_here()
    }

    async fn retire_grant(
        &self,
        _: Request<pb::RetireGrantRequest>,
    ) -> Result<Response<pb::RetireGrantResponse>, Status> {
        unimplemented_here()
    }

    async fn revoke_grant(
        &self,
        _: Request<pb::RevokeGrantRequest>,
    ) -> Result<Response<pb::RevokeGrantResponse>, Status> {
        unimplemented_here()
    }
}
