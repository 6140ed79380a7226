//! The `kms.v1.KeyManagementService` implementation: each method unpacks its request, calls the
//! operation, audits the outcome and packs the response. No cryptography here.

use std::sync::Arc;

use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status};
use zeroize::Zeroizing;

use super::codec::{WipeOnDrop, WipeSecrets};
use super::convert::{alias_entry, key_metadata, names, tags_in, tags_out};
use super::preauth::Begun;
use super::status::{to_status, without_request_id, REQUEST_ID};
use crate::audit::AuditEvent;
use crate::error::{KmsError, Result};
use crate::keys::context::EncryptionContext;
use crate::keys::dry_run::DryRun;
use crate::ops::{CreateKeyInput, DataKeySpec, Kms, SignInput};
use crate::proto as pb;
use crate::proto::key_management_service_server::KeyManagementService;

pub struct GrpcService {
    kms: Arc<Kms>,
}

impl GrpcService {
    pub fn new(kms: Arc<Kms>) -> Self {
        GrpcService { kms }
    }

    /// Audits the outcome, then answers. A request whose record can't be written fails.
    async fn finish<T: WipeSecrets>(&self, mut ev: AuditEvent, result: Result<T>) -> Result<Response<T>, Status> {
        ev.outcome = match &result {
            Ok(_) => "Success",
            Err(e) => e.name(),
        };
        let changed = ev.started && result.is_ok();
        let audited = self.kms.audit(&ev);
        let audited = async move { audited.await.map_err(|e| outcome_unrecorded(e, changed)) };
        answer_once_audited(result, audited, &ev.request_id).await
    }
}

/// The answer to a change that was made but whose outcome record could not be written: not the
/// one a change refused for want of its `Started` record gets ("nothing changed"), since a client
/// retrying it as if nothing happened would make a second key or grant.
fn outcome_unrecorded(e: KmsError, changed: bool) -> KmsError {
    if !changed {
        return e;
    }
    KmsError::Internal(
        "The change was made, but the audit log could not record its outcome (its Started record is \
         under this request id): check the change before you retry"
            .into(),
    )
}

/// The request's audit record, begun by `PreAuth` when it authenticated the caller, and its
/// message. A request that did not pass through `PreAuth` is refused: it was never authenticated.
fn begin<T>(operation: &'static str, request: Request<T>) -> Result<(AuditEvent, T), Status> {
    let (_, mut extensions, message) = request.into_parts();
    match extensions.remove::<Begun>() {
        Some(Begun(mut ev)) => {
            ev.operation = operation;
            Ok((ev, message))
        }
        None => {
            tracing::error!(
                operation,
                "a request reached the service unauthenticated (not wrapped by PreAuth)"
            );
            Err(without_request_id(&KmsError::Internal(
                "The request was not authenticated".into(),
            )))
        }
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
/// An error whose record wasn't written is answered as that failure: every answer has a record.
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
        (Err(e), Ok(())) => Err(to_status(&e, request_id)),
        (Err(_), Err(unrecorded)) => Err(to_status(&unrecorded, request_id)),
    }
}

fn context(field: &str, map: std::collections::HashMap<String, String>) -> Result<EncryptionContext> {
    EncryptionContext::check_size(field, map.iter())?;
    EncryptionContext::new(field, map)
}

#[tonic::async_trait]
impl KeyManagementService for GrpcService {
    async fn create_key(
        &self,
        request: Request<pb::CreateKeyRequest>,
    ) -> Result<Response<pb::CreateKeyResponse>, Status> {
        let (mut ev, r) = begin("CreateKey", request)?;
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
        let (mut ev, r) = begin("DescribeKey", request)?;
        let result = self.kms.describe_key(&r.key_id, &r.grant_tokens, &mut ev).await;
        let result = result.map(|k| pb::DescribeKeyResponse {
            key_metadata: Some(key_metadata(self.kms.scope(), &k)),
        });
        self.finish(ev, result).await
    }

    async fn list_keys(&self, request: Request<pb::ListKeysRequest>) -> Result<Response<pb::ListKeysResponse>, Status> {
        let (mut ev, r) = begin("ListKeys", request)?;
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
        let (mut ev, r) = begin("UpdateKeyDescription", request)?;
        let result = self.kms.update_key_description(&r.key_id, r.description, &mut ev).await;
        self.finish(ev, result.map(|()| pb::UpdateKeyDescriptionResponse {}))
            .await
    }

    async fn enable_key(
        &self,
        request: Request<pb::EnableKeyRequest>,
    ) -> Result<Response<pb::EnableKeyResponse>, Status> {
        let (mut ev, r) = begin("EnableKey", request)?;
        let result = self.kms.enable_key(&r.key_id, &mut ev).await;
        self.finish(ev, result.map(|()| pb::EnableKeyResponse {})).await
    }

    async fn disable_key(
        &self,
        request: Request<pb::DisableKeyRequest>,
    ) -> Result<Response<pb::DisableKeyResponse>, Status> {
        let (mut ev, r) = begin("DisableKey", request)?;
        let result = self.kms.disable_key(&r.key_id, &mut ev).await;
        self.finish(ev, result.map(|()| pb::DisableKeyResponse {})).await
    }

    async fn schedule_key_deletion(
        &self,
        request: Request<pb::ScheduleKeyDeletionRequest>,
    ) -> Result<Response<pb::ScheduleKeyDeletionResponse>, Status> {
        let (mut ev, r) = begin("ScheduleKeyDeletion", request)?;
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
        let (mut ev, r) = begin("CancelKeyDeletion", request)?;
        let result = self.kms.cancel_key_deletion(&r.key_id, &mut ev).await;
        let arn = ev.key_arn.clone().unwrap_or_default();
        self.finish(ev, result.map(|()| pb::CancelKeyDeletionResponse { key_id: arn }))
            .await
    }

    async fn create_alias(
        &self,
        request: Request<pb::CreateAliasRequest>,
    ) -> Result<Response<pb::CreateAliasResponse>, Status> {
        let (mut ev, r) = begin("CreateAlias", request)?;
        let result = self.kms.create_alias(&r.alias_name, &r.target_key_id, &mut ev).await;
        self.finish(ev, result.map(|()| pb::CreateAliasResponse {})).await
    }

    async fn update_alias(
        &self,
        request: Request<pb::UpdateAliasRequest>,
    ) -> Result<Response<pb::UpdateAliasResponse>, Status> {
        let (mut ev, r) = begin("UpdateAlias", request)?;
        let result = self.kms.update_alias(&r.alias_name, &r.target_key_id, &mut ev).await;
        self.finish(ev, result.map(|()| pb::UpdateAliasResponse {})).await
    }

    async fn delete_alias(
        &self,
        request: Request<pb::DeleteAliasRequest>,
    ) -> Result<Response<pb::DeleteAliasResponse>, Status> {
        let (mut ev, r) = begin("DeleteAlias", request)?;
        let result = self.kms.delete_alias(&r.alias_name, &mut ev).await;
        self.finish(ev, result.map(|()| pb::DeleteAliasResponse {})).await
    }

    async fn list_aliases(
        &self,
        request: Request<pb::ListAliasesRequest>,
    ) -> Result<Response<pb::ListAliasesResponse>, Status> {
        let (mut ev, r) = begin("ListAliases", request)?;
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
        let (mut ev, r) = begin("TagResource", request)?;
        let result = self.kms.tag_resource(&r.key_id, tags_in(r.tags), &mut ev).await;
        self.finish(ev, result.map(|()| pb::TagResourceResponse {})).await
    }

    async fn untag_resource(
        &self,
        request: Request<pb::UntagResourceRequest>,
    ) -> Result<Response<pb::UntagResourceResponse>, Status> {
        let (mut ev, r) = begin("UntagResource", request)?;
        let result = self.kms.untag_resource(&r.key_id, r.tag_keys, &mut ev).await;
        self.finish(ev, result.map(|()| pb::UntagResourceResponse {})).await
    }

    async fn list_resource_tags(
        &self,
        request: Request<pb::ListResourceTagsRequest>,
    ) -> Result<Response<pb::ListResourceTagsResponse>, Status> {
        let (mut ev, r) = begin("ListResourceTags", request)?;
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
        let (mut ev, r) = begin("Encrypt", request)?;
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
        let (mut ev, r) = begin("Decrypt", request)?;
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
        let (mut ev, r) = begin("ReEncrypt", request)?;
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
        let (mut ev, r) = begin("GenerateDataKey", request)?;
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
        let (mut ev, r) = begin("GenerateDataKeyWithoutPlaintext", request)?;
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
        let (mut ev, r) = begin("GenerateRandom", request)?;
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
        let (mut ev, r) = begin("GenerateDataKeyPair", request)?;
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
        let (mut ev, r) = begin("GenerateDataKeyPairWithoutPlaintext", request)?;
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
        let (mut ev, mut r) = begin("Sign", request)?;
        let message = Zeroizing::new(std::mem::take(&mut r.message));
        let input = SignInput {
            message: &message,
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
        let (mut ev, mut r) = begin("Verify", request)?;
        let message = Zeroizing::new(std::mem::take(&mut r.message));
        let input = SignInput {
            message: &message,
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
        let (mut ev, r) = begin("GetPublicKey", request)?;
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
        let (mut ev, mut r) = begin("GenerateMac", request)?;
        let message = Zeroizing::new(std::mem::take(&mut r.message));
        let result = self
            .kms
            .generate_mac(
                &r.key_id,
                &message,
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
        let (mut ev, mut r) = begin("VerifyMac", request)?;
        let message = Zeroizing::new(std::mem::take(&mut r.message));
        let result = self
            .kms
            .verify_mac(
                &r.key_id,
                &message,
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
        let (mut ev, r) = begin("PutKeyPolicy", request)?;
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
        let (mut ev, r) = begin("GetKeyPolicy", request)?;
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
        let (mut ev, r) = begin("ListKeyPolicies", request)?;
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
        let (mut ev, r) = begin("CreateGrant", request)?;
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
        let (mut ev, r) = begin("ListGrants", request)?;
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
        let (mut ev, r) = begin("ListRetirableGrants", request)?;
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
        let (mut ev, r) = begin("RetireGrant", request)?;
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
        let (mut ev, r) = begin("RevokeGrant", request)?;
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

    /// A change that was made, whose outcome record failed, says so; a failure before the change
    /// (its Started record refused, or a read) is answered as it was.
    #[test]
    fn a_change_made_without_its_outcome_record_says_it_was_made() {
        let unwritten = || KmsError::internal("the audit log could not record this request");
        let made = answer(
            Ok(Probe(Default::default())),
            Err(outcome_unrecorded(unwritten(), true)),
            "r",
        )
        .unwrap_err();
        assert_eq!(made.code(), tonic::Code::Internal);
        assert!(made.message().contains("The change was made"), "{made:?}");
        let not_made = answer(
            Ok(Probe(Default::default())),
            Err(outcome_unrecorded(unwritten(), false)),
            "r",
        )
        .unwrap_err();
        assert!(
            not_made.message().contains("could not record this request"),
            "{not_made:?}"
        );
    }

    #[test]
    fn an_error_whose_record_was_not_written_is_answered_as_that_failure() {
        let refused = answer::<Probe>(
            Err(KmsError::NotFound("no such key".into())),
            Err(KmsError::internal("audit log unwritable")),
            "req-5",
        )
        .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Internal);
        assert!(refused.message().contains("audit log unwritable"), "{refused:?}");
        let recorded = answer::<Probe>(Err(KmsError::NotFound("no such key".into())), Ok(()), "req-6");
        assert_eq!(recorded.unwrap_err().code(), tonic::Code::NotFound);
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

    /// The service takes the record `PreAuth` began (who, which request id) and the message, and
    /// does not authenticate again.
    #[test]
    fn begin_takes_the_record_preauth_began() {
        let mut begun = AuditEvent::new("Encrypt", "arn:aws:iam::111122223333:user/alice".into(), None);
        begun.secure_transport = true;
        let id = begun.request_id;
        let mut request = Request::new(pb::DecryptRequest::default());
        request.extensions_mut().insert(Begun(begun));
        let (ev, message) = begin("Decrypt", request).expect("begun");
        assert_eq!(ev.request_id, id, "one request id from the wrapper to the handler");
        assert_eq!(&*ev.principal, "arn:aws:iam::111122223333:user/alice");
        assert_eq!(ev.operation, "Decrypt", "the handler names the operation");
        assert!(ev.secure_transport);
        assert_eq!(message, pb::DecryptRequest::default());
    }

    /// A request that did not pass through `PreAuth` was never authenticated: refused, not served
    /// as anyone.
    #[test]
    fn a_request_without_a_begun_record_is_refused() {
        let status = begin("Decrypt", Request::new(pb::DecryptRequest::default())).expect_err("refused");
        assert_eq!(status.code(), tonic::Code::Internal);
        assert_eq!(
            status.metadata().get(super::super::status::ERROR_TYPE).unwrap(),
            "KMSInternalException"
        );
        assert!(
            status.metadata().get(REQUEST_ID).is_none(),
            "PreAuth's to add, with the record"
        );
    }
}
