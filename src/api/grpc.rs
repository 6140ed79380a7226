//! The `kms.v1.KeyManagementService` implementation: each method unpacks its request, calls the
//! operation, audits the outcome and packs the response. No cryptography here.

use std::sync::Arc;

use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status};
use zeroize::Zeroizing;

use super::codec::{WipeOnDrop, WipeSecrets};
use super::convert::{alias_entry, key_metadata, names, tags_in, tags_out};
use super::status::{to_status, REQUEST_ID};
use crate::audit::AuditEvent;
use crate::auth::Authenticator;
use crate::error::Result;
use crate::keys::context::EncryptionContext;
use crate::keys::dry_run::DryRun;
use crate::ops::{CreateKeyInput, DataKeySpec, Kms, SignInput};
use crate::proto as pb;
use crate::proto::key_management_service_server::KeyManagementService;

pub struct GrpcService {
    kms: Arc<Kms>,
    auth: Arc<Authenticator>,
    tls: bool,
}

impl GrpcService {
    pub fn new(kms: Arc<Kms>, auth: Arc<Authenticator>, tls: bool) -> Self {
        GrpcService { kms, auth, tls }
    }

    /// Authenticates the caller and starts the request's audit record. An unauthenticated request
    /// is audited and refused here: it never reaches an operation.
    async fn begin<T>(&self, operation: &'static str, request: &Request<T>) -> Result<AuditEvent, Status> {
        let mut ev = AuditEvent::new(operation, String::new(), request.remote_addr().map(|a| ip_text(a.ip())));
        ev.secure_transport = self.tls;
        // A header that isn't visible ASCII is a malformed credential, refused as one: never
        // taken as no header (which would be dev mode's root, or the certificate's principal).
        let authorization = request
            .metadata()
            .get("authorization")
            .map(|v| v.to_str().unwrap_or(""));
        let certs = request.peer_certs();
        match self
            .auth
            .authenticate(authorization, certs.as_deref().map(Vec::as_slice))
        {
            Ok(principal) => {
                ev.principal = principal;
                Ok(ev)
            }
            Err(e) => {
                ev.principal = "unauthenticated".into();
                let status = to_status(&e, &ev.request_id);
                ev.outcome = e.name();
                // The refusal is audited too; if that fails, the refusal still stands.
                let _ = self.kms.audit(&ev).await;
                Err(status)
            }
        }
    }

    /// Audits the outcome, then answers. A request whose record can't be written fails.
    async fn finish<T: WipeSecrets>(&self, mut ev: AuditEvent, result: Result<T>) -> Result<Response<T>, Status> {
        ev.outcome = match &result {
            Ok(_) => "Success",
            Err(e) => e.name(),
        };
        answer_once_audited(result, self.kms.audit(&ev), &ev.request_id).await
    }
}

/// Waits for the request's audit record, then answers. The response waits in a guard: a request
/// cancelled during the wait (a client deadline or reset, most often during the flush) drops it
/// wiped, as the codec would have after sending it.
async fn answer_once_audited<T: WipeSecrets>(
    result: Result<T>,
    audit: impl std::future::Future<Output = Result<()>>,
    request_id: &str,
) -> Result<Response<T>, Status> {
    let held = result.map(WipeOnDrop::new);
    let audited = audit.await;
    answer(held.map(WipeOnDrop::into_inner), audited, request_id)
}

/// The response, if its audit record was written. One refused for want of a record is wiped
/// first: it may hold a plaintext or a private key, and the codec that wipes sent ones never sees it.
fn answer<T: WipeSecrets>(result: Result<T>, audited: Result<()>, request_id: &str) -> Result<Response<T>, Status> {
    match (result, audited) {
        (Ok(v), Ok(())) => {
            let mut response = Response::new(v);
            if let Ok(id) = MetadataValue::try_from(request_id) {
                response.metadata_mut().insert(REQUEST_ID, id);
            }
            Ok(response)
        }
        (Ok(mut v), Err(e)) => {
            v.wipe_secrets();
            Err(to_status(&e, request_id))
        }
        (Err(e), _) => Err(to_status(&e, request_id)),
    }
}

/// The caller's address as the audit record and `aws:SourceIp` give it, as `IpAddr`'s `Display`
/// writes it. IPv4, every request's case, is written by hand: through `fmt` it took ~1,300
/// instructions a request (callgrind), seven times this.
fn ip_text(ip: std::net::IpAddr) -> String {
    let std::net::IpAddr::V4(v4) = ip else {
        return ip.to_string();
    };
    let mut text = String::with_capacity(15);
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            text.push('.');
        }
        if octet >= 100 {
            text.push(char::from(b'0' + octet / 100));
        }
        if octet >= 10 {
            text.push(char::from(b'0' + octet / 10 % 10));
        }
        text.push(char::from(b'0' + octet % 10));
    }
    text
}

fn context(field: &str, map: std::collections::HashMap<String, String>) -> Result<EncryptionContext> {
    EncryptionContext::new(field, map)
}

#[tonic::async_trait]
impl KeyManagementService for GrpcService {
    async fn create_key(
        &self,
        request: Request<pb::CreateKeyRequest>,
    ) -> Result<Response<pb::CreateKeyResponse>, Status> {
        let mut ev = self.begin("CreateKey", &request).await?;
        let r = request.into_inner();
        let input = CreateKeyInput {
            description: r.description,
            key_usage: r.key_usage,
            key_spec: r.key_spec,
            customer_master_key_spec: r.customer_master_key_spec,
            origin: r.origin,
            tags: tags_in(r.tags),
            multi_region: r.multi_region,
            policy: r.policy,
            bypass_policy_lockout_safety_check: r.bypass_policy_lockout_safety_check,
        };
        let result = self.kms.create_key(input, &mut ev).await;
        let result = result.map(|k| pb::CreateKeyResponse {
            key_metadata: Some(key_metadata(self.kms.scope(), &k)),
        });
        self.finish(ev, result).await
    }

    async fn describe_key(
        &self,
        request: Request<pb::DescribeKeyRequest>,
    ) -> Result<Response<pb::DescribeKeyResponse>, Status> {
        let mut ev = self.begin("DescribeKey", &request).await?;
        let r = request.into_inner();
        let result = self.kms.describe_key(&r.key_id, &mut ev).await;
        let result = result.map(|k| pb::DescribeKeyResponse {
            key_metadata: Some(key_metadata(self.kms.scope(), &k)),
        });
        self.finish(ev, result).await
    }

    async fn list_keys(&self, request: Request<pb::ListKeysRequest>) -> Result<Response<pb::ListKeysResponse>, Status> {
        let mut ev = self.begin("ListKeys", &request).await?;
        let r = request.into_inner();
        let result = self
            .kms
            .list_keys(r.limit, r.marker.as_deref(), &mut ev)
            .await
            .map(|page| pb::ListKeysResponse {
                keys: page
                    .items
                    .into_iter()
                    .map(|id| pb::KeyListEntry {
                        key_arn: self.kms.key_arn(&id),
                        key_id: id,
                    })
                    .collect(),
                next_marker: page.next_marker,
                truncated: page.truncated,
            });
        self.finish(ev, result).await
    }

    async fn update_key_description(
        &self,
        request: Request<pb::UpdateKeyDescriptionRequest>,
    ) -> Result<Response<pb::UpdateKeyDescriptionResponse>, Status> {
        let mut ev = self.begin("UpdateKeyDescription", &request).await?;
        let r = request.into_inner();
        let result = self.kms.update_key_description(&r.key_id, r.description, &mut ev).await;
        self.finish(ev, result.map(|()| pb::UpdateKeyDescriptionResponse {}))
            .await
    }

    async fn enable_key(
        &self,
        request: Request<pb::EnableKeyRequest>,
    ) -> Result<Response<pb::EnableKeyResponse>, Status> {
        let mut ev = self.begin("EnableKey", &request).await?;
        let r = request.into_inner();
        let result = self.kms.enable_key(&r.key_id, &mut ev).await;
        self.finish(ev, result.map(|()| pb::EnableKeyResponse {})).await
    }

    async fn disable_key(
        &self,
        request: Request<pb::DisableKeyRequest>,
    ) -> Result<Response<pb::DisableKeyResponse>, Status> {
        let mut ev = self.begin("DisableKey", &request).await?;
        let r = request.into_inner();
        let result = self.kms.disable_key(&r.key_id, &mut ev).await;
        self.finish(ev, result.map(|()| pb::DisableKeyResponse {})).await
    }

    async fn schedule_key_deletion(
        &self,
        request: Request<pb::ScheduleKeyDeletionRequest>,
    ) -> Result<Response<pb::ScheduleKeyDeletionResponse>, Status> {
        let mut ev = self.begin("ScheduleKeyDeletion", &request).await?;
        let r = request.into_inner();
        let result = self
            .kms
            .schedule_key_deletion(&r.key_id, r.pending_window_in_days, &mut ev)
            .await;
        let result = result.map(|k| pb::ScheduleKeyDeletionResponse {
            key_id: self.kms.key_arn(&k.key_id),
            deletion_date: k.deletion_date.unwrap_or_default(),
            key_state: k.state.as_str().into(),
            pending_window_in_days: k.pending_window_days.unwrap_or_default(),
        });
        self.finish(ev, result).await
    }

    async fn cancel_key_deletion(
        &self,
        request: Request<pb::CancelKeyDeletionRequest>,
    ) -> Result<Response<pb::CancelKeyDeletionResponse>, Status> {
        let mut ev = self.begin("CancelKeyDeletion", &request).await?;
        let r = request.into_inner();
        let result = self.kms.cancel_key_deletion(&r.key_id, &mut ev).await;
        let arn = ev.key_arn.clone().unwrap_or_default();
        self.finish(ev, result.map(|()| pb::CancelKeyDeletionResponse { key_id: arn }))
            .await
    }

    async fn create_alias(
        &self,
        request: Request<pb::CreateAliasRequest>,
    ) -> Result<Response<pb::CreateAliasResponse>, Status> {
        let mut ev = self.begin("CreateAlias", &request).await?;
        let r = request.into_inner();
        let result = self.kms.create_alias(&r.alias_name, &r.target_key_id, &mut ev).await;
        self.finish(ev, result.map(|()| pb::CreateAliasResponse {})).await
    }

    async fn update_alias(
        &self,
        request: Request<pb::UpdateAliasRequest>,
    ) -> Result<Response<pb::UpdateAliasResponse>, Status> {
        let mut ev = self.begin("UpdateAlias", &request).await?;
        let r = request.into_inner();
        let result = self.kms.update_alias(&r.alias_name, &r.target_key_id, &mut ev).await;
        self.finish(ev, result.map(|()| pb::UpdateAliasResponse {})).await
    }

    async fn delete_alias(
        &self,
        request: Request<pb::DeleteAliasRequest>,
    ) -> Result<Response<pb::DeleteAliasResponse>, Status> {
        let mut ev = self.begin("DeleteAlias", &request).await?;
        let r = request.into_inner();
        let result = self.kms.delete_alias(&r.alias_name, &mut ev).await;
        self.finish(ev, result.map(|()| pb::DeleteAliasResponse {})).await
    }

    async fn list_aliases(
        &self,
        request: Request<pb::ListAliasesRequest>,
    ) -> Result<Response<pb::ListAliasesResponse>, Status> {
        let mut ev = self.begin("ListAliases", &request).await?;
        let r = request.into_inner();
        let result = self
            .kms
            .list_aliases(r.key_id.as_deref(), r.limit, r.marker.as_deref(), &mut ev)
            .await;
        let result = result.map(|page| pb::ListAliasesResponse {
            aliases: page
                .items
                .into_iter()
                .map(|a| alias_entry(self.kms.scope(), a))
                .collect(),
            next_marker: page.next_marker,
            truncated: page.truncated,
        });
        self.finish(ev, result).await
    }

    async fn tag_resource(
        &self,
        request: Request<pb::TagResourceRequest>,
    ) -> Result<Response<pb::TagResourceResponse>, Status> {
        let mut ev = self.begin("TagResource", &request).await?;
        let r = request.into_inner();
        let result = self.kms.tag_resource(&r.key_id, tags_in(r.tags), &mut ev).await;
        self.finish(ev, result.map(|()| pb::TagResourceResponse {})).await
    }

    async fn untag_resource(
        &self,
        request: Request<pb::UntagResourceRequest>,
    ) -> Result<Response<pb::UntagResourceResponse>, Status> {
        let mut ev = self.begin("UntagResource", &request).await?;
        let r = request.into_inner();
        let result = self.kms.untag_resource(&r.key_id, r.tag_keys, &mut ev).await;
        self.finish(ev, result.map(|()| pb::UntagResourceResponse {})).await
    }

    async fn list_resource_tags(
        &self,
        request: Request<pb::ListResourceTagsRequest>,
    ) -> Result<Response<pb::ListResourceTagsResponse>, Status> {
        let mut ev = self.begin("ListResourceTags", &request).await?;
        let r = request.into_inner();
        let result = self
            .kms
            .list_resource_tags(&r.key_id, r.limit, r.marker.as_deref(), &mut ev)
            .await;
        let result = result.map(|page| pb::ListResourceTagsResponse {
            tags: tags_out(page.items),
            next_marker: page.next_marker,
            truncated: page.truncated,
        });
        self.finish(ev, result).await
    }

    async fn encrypt(&self, request: Request<pb::EncryptRequest>) -> Result<Response<pb::EncryptResponse>, Status> {
        let mut ev = self.begin("Encrypt", &request).await?;
        let r = request.into_inner();
        let plaintext = Zeroizing::new(r.plaintext);
        let result = async {
            let ctx = context("encryptionContext", r.encryption_context)?;
            let alg = r.encryption_algorithm.as_deref();
            let dry_run = DryRun::from_flag(r.dry_run);
            let (blob, arn, algorithm) = self
                .kms
                .encrypt(&r.key_id, plaintext, &ctx, alg, &r.grant_tokens, dry_run, &mut ev)
                .await?;
            Ok(pb::EncryptResponse {
                ciphertext_blob: blob,
                key_id: arn,
                encryption_algorithm: algorithm.as_str().into(),
            })
        }
        .await;
        self.finish(ev, result).await
    }

    async fn decrypt(&self, request: Request<pb::DecryptRequest>) -> Result<Response<pb::DecryptResponse>, Status> {
        let mut ev = self.begin("Decrypt", &request).await?;
        let r = request.into_inner();
        let result = async {
            let ctx = context("encryptionContext", r.encryption_context)?;
            let (key_id, alg) = (r.key_id.as_deref(), r.encryption_algorithm.as_deref());
            let dry_run = DryRun::with_modifiers(r.dry_run, &r.dry_run_modifiers)?;
            let mut d = self
                .kms
                .decrypt(&r.ciphertext_blob, &ctx, key_id, alg, &r.grant_tokens, dry_run, &mut ev)
                .await?;
            Ok(pb::DecryptResponse {
                key_id: d.key_arn,
                plaintext: std::mem::take(&mut *d.plaintext),
                encryption_algorithm: d.algorithm.as_str().into(),
            })
        }
        .await;
        self.finish(ev, result).await
    }

    async fn re_encrypt(
        &self,
        request: Request<pb::ReEncryptRequest>,
    ) -> Result<Response<pb::ReEncryptResponse>, Status> {
        let mut ev = self.begin("ReEncrypt", &request).await?;
        let r = request.into_inner();
        let result = async {
            let source_ctx = context("sourceEncryptionContext", r.source_encryption_context)?;
            let dest_ctx = context("destinationEncryptionContext", r.destination_encryption_context)?;
            let algorithms = (
                r.source_encryption_algorithm.as_deref(),
                r.destination_encryption_algorithm.as_deref(),
            );
            let dry_run = DryRun::with_modifiers(r.dry_run, &r.dry_run_modifiers)?;
            let out = self
                .kms
                .re_encrypt(
                    &r.ciphertext_blob,
                    &source_ctx,
                    r.source_key_id.as_deref(),
                    &r.destination_key_id,
                    &dest_ctx,
                    algorithms,
                    &r.grant_tokens,
                    dry_run,
                    &mut ev,
                )
                .await?;
            Ok(pb::ReEncryptResponse {
                ciphertext_blob: out.ciphertext,
                source_key_id: out.source_key_arn,
                key_id: out.key_arn,
                source_encryption_algorithm: out.source_algorithm.as_str().into(),
                destination_encryption_algorithm: out.destination_algorithm.as_str().into(),
            })
        }
        .await;
        self.finish(ev, result).await
    }

    async fn generate_data_key(
        &self,
        request: Request<pb::GenerateDataKeyRequest>,
    ) -> Result<Response<pb::GenerateDataKeyResponse>, Status> {
        let mut ev = self.begin("GenerateDataKey", &request).await?;
        let r = request.into_inner();
        let result = async {
            let ctx = context("encryptionContext", r.encryption_context)?;
            let spec = DataKeySpec::from_request(r.key_spec.as_deref(), r.number_of_bytes)?;
            let dry_run = DryRun::from_flag(r.dry_run);
            let mut dk = self
                .kms
                .generate_data_key(
                    "kms:GenerateDataKey",
                    &r.key_id,
                    &ctx,
                    spec,
                    &r.grant_tokens,
                    dry_run,
                    &mut ev,
                )
                .await?;
            Ok(pb::GenerateDataKeyResponse {
                ciphertext_blob: dk.ciphertext,
                plaintext: std::mem::take(&mut *dk.plaintext),
                key_id: dk.key_arn,
            })
        }
        .await;
        self.finish(ev, result).await
    }

    async fn generate_data_key_without_plaintext(
        &self,
        request: Request<pb::GenerateDataKeyWithoutPlaintextRequest>,
    ) -> Result<Response<pb::GenerateDataKeyWithoutPlaintextResponse>, Status> {
        let mut ev = self.begin("GenerateDataKeyWithoutPlaintext", &request).await?;
        let r = request.into_inner();
        let result = async {
            let ctx = context("encryptionContext", r.encryption_context)?;
            let spec = DataKeySpec::from_request(r.key_spec.as_deref(), r.number_of_bytes)?;
            let dk = self
                .kms
                .generate_data_key(
                    "kms:GenerateDataKeyWithoutPlaintext",
                    &r.key_id,
                    &ctx,
                    spec,
                    &r.grant_tokens,
                    DryRun::from_flag(r.dry_run),
                    &mut ev,
                )
                .await?;
            Ok(pb::GenerateDataKeyWithoutPlaintextResponse {
                ciphertext_blob: dk.ciphertext,
                key_id: dk.key_arn,
            })
        }
        .await;
        self.finish(ev, result).await
    }

    async fn generate_random(
        &self,
        request: Request<pb::GenerateRandomRequest>,
    ) -> Result<Response<pb::GenerateRandomResponse>, Status> {
        let mut ev = self.begin("GenerateRandom", &request).await?;
        let r = request.into_inner();
        let result = self.kms.generate_random(r.number_of_bytes, &mut ev).await;
        let result = result.map(|mut bytes| pb::GenerateRandomResponse {
            plaintext: std::mem::take(&mut *bytes),
        });
        self.finish(ev, result).await
    }

    async fn generate_data_key_pair(
        &self,
        request: Request<pb::GenerateDataKeyPairRequest>,
    ) -> Result<Response<pb::GenerateDataKeyPairResponse>, Status> {
        let mut ev = self.begin("GenerateDataKeyPair", &request).await?;
        let r = request.into_inner();
        let result = async {
            let ctx = context("encryptionContext", r.encryption_context)?;
            let mut p = self
                .kms
                .generate_data_key_pair(
                    "kms:GenerateDataKeyPair",
                    &r.key_id,
                    &ctx,
                    &r.key_pair_spec,
                    &r.grant_tokens,
                    DryRun::from_flag(r.dry_run),
                    &mut ev,
                )
                .await?;
            Ok(pb::GenerateDataKeyPairResponse {
                private_key_ciphertext_blob: p.private_key_ciphertext,
                private_key_plaintext: std::mem::take(&mut *p.private_key_plaintext),
                public_key: p.public_key,
                key_id: p.key_arn,
                key_pair_spec: p.spec.as_str().into(),
            })
        }
        .await;
        self.finish(ev, result).await
    }

    async fn generate_data_key_pair_without_plaintext(
        &self,
        request: Request<pb::GenerateDataKeyPairWithoutPlaintextRequest>,
    ) -> Result<Response<pb::GenerateDataKeyPairWithoutPlaintextResponse>, Status> {
        let mut ev = self.begin("GenerateDataKeyPairWithoutPlaintext", &request).await?;
        let r = request.into_inner();
        let result = async {
            let ctx = context("encryptionContext", r.encryption_context)?;
            let p = self
                .kms
                .generate_data_key_pair(
                    "kms:GenerateDataKeyPairWithoutPlaintext",
                    &r.key_id,
                    &ctx,
                    &r.key_pair_spec,
                    &r.grant_tokens,
                    DryRun::from_flag(r.dry_run),
                    &mut ev,
                )
                .await?;
            Ok(pb::GenerateDataKeyPairWithoutPlaintextResponse {
                private_key_ciphertext_blob: p.private_key_ciphertext,
                public_key: p.public_key,
                key_id: p.key_arn,
                key_pair_spec: p.spec.as_str().into(),
            })
        }
        .await;
        self.finish(ev, result).await
    }

    async fn sign(&self, request: Request<pb::SignRequest>) -> Result<Response<pb::SignResponse>, Status> {
        let mut ev = self.begin("Sign", &request).await?;
        let r = request.into_inner();
        let input = SignInput {
            message: &r.message,
            message_type: r.message_type.as_deref(),
            algorithm: &r.signing_algorithm,
            dry_run: DryRun::from_flag(r.dry_run),
        };
        let result = self
            .kms
            .sign(&r.key_id, input, &r.grant_tokens, &mut ev)
            .await
            .map(|s| pb::SignResponse {
                key_id: s.key_arn,
                signature: s.signature,
                signing_algorithm: s.algorithm.as_str().into(),
            });
        self.finish(ev, result).await
    }

    async fn verify(&self, request: Request<pb::VerifyRequest>) -> Result<Response<pb::VerifyResponse>, Status> {
        let mut ev = self.begin("Verify", &request).await?;
        let r = request.into_inner();
        let input = SignInput {
            message: &r.message,
            message_type: r.message_type.as_deref(),
            algorithm: &r.signing_algorithm,
            dry_run: DryRun::from_flag(r.dry_run),
        };
        let result = self
            .kms
            .verify(&r.key_id, input, &r.signature, &r.grant_tokens, &mut ev)
            .await;
        let result = result.map(|(key_arn, algorithm)| pb::VerifyResponse {
            key_id: key_arn,
            signature_valid: true,
            signing_algorithm: algorithm.as_str().into(),
        });
        self.finish(ev, result).await
    }

    async fn get_public_key(
        &self,
        request: Request<pb::GetPublicKeyRequest>,
    ) -> Result<Response<pb::GetPublicKeyResponse>, Status> {
        let mut ev = self.begin("GetPublicKey", &request).await?;
        let r = request.into_inner();
        let result = self
            .kms
            .get_public_key(&r.key_id, &r.grant_tokens, &mut ev)
            .await
            .map(|p| pb::GetPublicKeyResponse {
                key_id: p.key_arn,
                public_key: p.public_key,
                customer_master_key_spec: p.key_spec.as_str().into(),
                key_spec: p.key_spec.as_str().into(),
                key_usage: p.key_usage.as_str().into(),
                encryption_algorithms: names(p.encryption_algorithms.iter().map(|a| a.as_str())),
                signing_algorithms: names(p.signing_algorithms.iter().map(|a| a.as_str())),
            });
        self.finish(ev, result).await
    }

    async fn generate_mac(
        &self,
        request: Request<pb::GenerateMacRequest>,
    ) -> Result<Response<pb::GenerateMacResponse>, Status> {
        let mut ev = self.begin("GenerateMac", &request).await?;
        let r = request.into_inner();
        let result = self
            .kms
            .generate_mac(
                &r.key_id,
                &r.message,
                &r.mac_algorithm,
                &r.grant_tokens,
                DryRun::from_flag(r.dry_run),
                &mut ev,
            )
            .await;
        let result = result.map(|(key_arn, mac, algorithm)| pb::GenerateMacResponse {
            mac,
            mac_algorithm: algorithm.as_str().into(),
            key_id: key_arn,
        });
        self.finish(ev, result).await
    }

    async fn verify_mac(
        &self,
        request: Request<pb::VerifyMacRequest>,
    ) -> Result<Response<pb::VerifyMacResponse>, Status> {
        let mut ev = self.begin("VerifyMac", &request).await?;
        let r = request.into_inner();
        let result = self
            .kms
            .verify_mac(
                &r.key_id,
                &r.message,
                &r.mac_algorithm,
                &r.mac,
                &r.grant_tokens,
                DryRun::from_flag(r.dry_run),
                &mut ev,
            )
            .await;
        let result = result.map(|(key_arn, algorithm)| pb::VerifyMacResponse {
            key_id: key_arn,
            mac_valid: true,
            mac_algorithm: algorithm.as_str().into(),
        });
        self.finish(ev, result).await
    }

    async fn put_key_policy(
        &self,
        request: Request<pb::PutKeyPolicyRequest>,
    ) -> Result<Response<pb::PutKeyPolicyResponse>, Status> {
        let mut ev = self.begin("PutKeyPolicy", &request).await?;
        let r = request.into_inner();
        let bypass = r.bypass_policy_lockout_safety_check;
        let result = self
            .kms
            .put_key_policy(&r.key_id, r.policy_name.as_deref(), r.policy, bypass, &mut ev)
            .await;
        self.finish(ev, result.map(|()| pb::PutKeyPolicyResponse {})).await
    }

    async fn get_key_policy(
        &self,
        request: Request<pb::GetKeyPolicyRequest>,
    ) -> Result<Response<pb::GetKeyPolicyResponse>, Status> {
        let mut ev = self.begin("GetKeyPolicy", &request).await?;
        let r = request.into_inner();
        let result = self
            .kms
            .get_key_policy(&r.key_id, r.policy_name.as_deref(), &mut ev)
            .await;
        let result = result.map(|policy| pb::GetKeyPolicyResponse {
            policy,
            policy_name: "default".into(),
        });
        self.finish(ev, result).await
    }

    async fn list_key_policies(
        &self,
        request: Request<pb::ListKeyPoliciesRequest>,
    ) -> Result<Response<pb::ListKeyPoliciesResponse>, Status> {
        let mut ev = self.begin("ListKeyPolicies", &request).await?;
        let r = request.into_inner();
        let result = self
            .kms
            .list_key_policies(&r.key_id, r.limit, r.marker.as_deref(), &mut ev)
            .await;
        let result = result.map(|page| pb::ListKeyPoliciesResponse {
            policy_names: page.items,
            next_marker: page.next_marker,
            truncated: page.truncated,
        });
        self.finish(ev, result).await
    }

    async fn create_grant(
        &self,
        request: Request<pb::CreateGrantRequest>,
    ) -> Result<Response<pb::CreateGrantResponse>, Status> {
        let mut ev = self.begin("CreateGrant", &request).await?;
        let r = request.into_inner();
        let constraints = r.constraints.unwrap_or_default();
        let input = crate::ops::CreateGrantInput {
            key_id: r.key_id,
            grantee_principal: r.grantee_principal,
            retiring_principal: r.retiring_principal,
            operations: r.operations,
            context_equals: constraints.encryption_context_equals.into_iter().collect(),
            context_subset: constraints.encryption_context_subset.into_iter().collect(),
            grant_tokens: r.grant_tokens,
            name: r.name,
            dry_run: DryRun::from_flag(r.dry_run),
        };
        let result = self.kms.create_grant(input, &mut ev).await;
        let result = result.map(|g| pb::CreateGrantResponse {
            grant_token: g.grant_token,
            grant_id: g.grant_id,
        });
        self.finish(ev, result).await
    }

    async fn list_grants(
        &self,
        request: Request<pb::ListGrantsRequest>,
    ) -> Result<Response<pb::ListGrantsResponse>, Status> {
        let mut ev = self.begin("ListGrants", &request).await?;
        let r = request.into_inner();
        let result = self
            .kms
            .list_grants(
                &r.key_id,
                r.grant_id.as_deref(),
                r.grantee_principal.as_deref(),
                r.limit,
                r.marker.as_deref(),
                &mut ev,
            )
            .await;
        let result = result.map(|page| grants_page(&self.kms, page));
        self.finish(ev, result).await
    }

    async fn list_retirable_grants(
        &self,
        request: Request<pb::ListRetirableGrantsRequest>,
    ) -> Result<Response<pb::ListGrantsResponse>, Status> {
        let mut ev = self.begin("ListRetirableGrants", &request).await?;
        let r = request.into_inner();
        let result = self
            .kms
            .list_retirable_grants(&r.retiring_principal, r.limit, r.marker.as_deref(), &mut ev)
            .await;
        let result = result.map(|page| grants_page(&self.kms, page));
        self.finish(ev, result).await
    }

    async fn retire_grant(
        &self,
        request: Request<pb::RetireGrantRequest>,
    ) -> Result<Response<pb::RetireGrantResponse>, Status> {
        let mut ev = self.begin("RetireGrant", &request).await?;
        let r = request.into_inner();
        let result = self
            .kms
            .retire_grant(
                r.grant_token.as_deref(),
                r.key_id.as_deref(),
                r.grant_id.as_deref(),
                DryRun::from_flag(r.dry_run),
                &mut ev,
            )
            .await;
        self.finish(ev, result.map(|()| pb::RetireGrantResponse {})).await
    }

    async fn revoke_grant(
        &self,
        request: Request<pb::RevokeGrantRequest>,
    ) -> Result<Response<pb::RevokeGrantResponse>, Status> {
        let mut ev = self.begin("RevokeGrant", &request).await?;
        let r = request.into_inner();
        let dry_run = DryRun::from_flag(r.dry_run);
        let result = self.kms.revoke_grant(&r.key_id, &r.grant_id, dry_run, &mut ev).await;
        self.finish(ev, result.map(|()| pb::RevokeGrantResponse {})).await
    }
}

fn grants_page(kms: &Kms, page: crate::ops::Page<crate::store::GrantRecord>) -> pb::ListGrantsResponse {
    pb::ListGrantsResponse {
        grants: page
            .items
            .into_iter()
            .map(|g| {
                let constraints =
                    (g.context_equals.is_some() || g.context_subset.is_some()).then(|| pb::GrantConstraints {
                        encryption_context_subset: g.context_subset.unwrap_or_default().into_iter().collect(),
                        encryption_context_equals: g.context_equals.unwrap_or_default().into_iter().collect(),
                    });
                pb::GrantListEntry {
                    key_id: kms.key_arn(&g.key_id),
                    grant_id: g.grant_id,
                    name: g.name,
                    creation_date: g.creation_date,
                    grantee_principal: g.grantee_principal,
                    retiring_principal: g.retiring_principal,
                    issuing_account: g.issuing_account,
                    operations: g.operations,
                    constraints,
                }
            })
            .collect(),
        next_marker: page.next_marker,
        truncated: page.truncated,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use super::*;
    use crate::error::KmsError;

    /// The hand-written IPv4 text is `Display`'s, one- to three-digit octets alike; IPv6 is
    /// `Display`'s.
    #[test]
    fn addresses_are_written_as_display_writes_them() {
        for a in [0u8, 1, 9, 10, 99, 100, 199, 200, 255] {
            for b in [0u8, 7, 42, 250] {
                let ip = std::net::IpAddr::from([a, b, 255 - a, b.wrapping_mul(a)]);
                assert_eq!(ip_text(ip), ip.to_string());
            }
        }
        for ip in ["::1", "2001:db8::7", "::ffff:10.0.0.1"] {
            let ip: std::net::IpAddr = ip.parse().unwrap();
            assert_eq!(ip_text(ip), ip.to_string());
        }
    }

    /// A response that says whether it was wiped (a real one can't be seen once dropped).
    #[derive(Debug)]
    struct Probe(Arc<AtomicBool>);

    impl WipeSecrets for Probe {
        fn wipe_secrets(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_response_refused_for_want_of_an_audit_record_is_wiped() {
        let wiped = Arc::new(AtomicBool::new(false));
        let refused = answer(
            Ok(Probe(wiped.clone())),
            Err(KmsError::internal("audit log unwritable")),
            "req-1",
        );
        assert_eq!(refused.err().map(|s| s.code()), Some(tonic::Code::Internal));
        assert!(wiped.load(Ordering::SeqCst), "the unsent response was wiped");
    }

    #[tokio::test]
    async fn a_response_cancelled_while_its_record_is_written_is_wiped() {
        let wiped = Arc::new(AtomicBool::new(false));
        let flush = std::future::pending::<Result<()>>();
        let call = answer_once_audited(Ok(Probe(wiped.clone())), flush, "req-3");
        let cancelled = tokio::time::timeout(std::time::Duration::from_millis(10), call).await;
        assert!(cancelled.is_err(), "the record never became durable");
        assert!(wiped.load(Ordering::SeqCst), "the dropped response was wiped");
    }

    #[tokio::test]
    async fn a_response_whose_record_is_written_is_answered_unwiped() {
        let wiped = Arc::new(AtomicBool::new(false));
        let answered = answer_once_audited(Ok(Probe(wiped.clone())), async { Ok(()) }, "req-4").await;
        assert!(answered.is_ok());
        assert!(!wiped.load(Ordering::SeqCst), "the codec wipes it after sending");
    }

    #[test]
    fn an_audited_response_is_answered_with_its_request_id() {
        let wiped = Arc::new(AtomicBool::new(false));
        let response = answer(Ok(Probe(wiped.clone())), Ok(()), "req-2").expect("answered");
        assert_eq!(
            response.metadata().get(REQUEST_ID).map(|v| v.to_str().ok()),
            Some(Some("req-2"))
        );
        assert!(
            !wiped.load(Ordering::SeqCst),
            "the codec wipes it after sending, not before"
        );
    }
}
