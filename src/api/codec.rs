//! The gRPC codec: prost encoding and decoding, plus wiping of the secrets a message carries.
//!
//! `tonic_prost::ProstCodec` drops a message after encoding it, so a `GenerateDataKeyResponse`'s
//! plaintext data key would be freed without being zeroized. [`WipingCodec`] encodes exactly as
//! `ProstCodec` does (same wire bytes, same errors) and then zeroizes the message's secret fields
//! before it is dropped; it also wipes a partly decoded message when decoding fails. build.rs makes
//! the generated server and client use it (`codec_path`).
//!
//! Every message a service method takes or returns must implement [`WipeSecrets`]: the codec
//! requires it, so a message type left out of the lists below stops the generated code from
//! compiling. Messages with secret fields name every field (secret or not), so a field added to
//! one of them fails to compile until it is classified; a `plaintext` or `message` field added to
//! any other message fails `secret_fields_match_the_proto`. A `message` (Sign, Verify and the
//! MACs) is the caller's data, which AWS's SDKs treat as sensitive too: a MAC is often over a
//! password or a token.
//!
//! Not covered, because the codec never sees it: a decoded request once the handler owns it (the
//! handler moves `EncryptRequest.plaintext` into a `Zeroizing` buffer), a response that is dropped
//! without being encoded (the call was cancelled first), and the encoded bytes themselves, which
//! live in tonic's and h2's send and receive buffers.

use std::marker::PhantomData;

use prost::Message;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::Status;
use zeroize::Zeroize;

use crate::proto as pb;

/// Zeroizes the secret fields of a message (key material, plaintext); leaves every other field as
/// it is. A no-op for messages without secrets.
pub trait WipeSecrets {
    fn wipe_secrets(&mut self);
}

/// Messages without secrets. Every request and response type of the service that is not in
/// `secret_messages!` below must be here.
macro_rules! no_secrets {
    ($($ty:ident),* $(,)?) => {
        $(
            impl WipeSecrets for pb::$ty {
                fn wipe_secrets(&mut self) {}
            }
        )*
    };
}

/// Messages with secrets: `secret` fields are zeroized, `public` ones kept. The destructuring is
/// exhaustive, so every field of the message must be named in one list or the other.
macro_rules! secret_messages {
    ($($ty:ident { secret: [$($s:ident),+ $(,)?], public: [$($p:ident),* $(,)?] $(,)? }),* $(,)?) => {
        $(
            impl WipeSecrets for pb::$ty {
                fn wipe_secrets(&mut self) {
                    let pb::$ty { $($s,)+ $($p: _,)* } = self;
                    $($s.zeroize();)+
                }
            }
        )*

        /// (message, field) for every field that `wipe_secrets` zeroizes.
        #[cfg(test)]
        const SECRET_FIELDS: &[(&str, &str)] = &[$($((stringify!($ty), stringify!($s)),)+)*];
    };
}

secret_messages! {
    EncryptRequest {
        secret: [plaintext],
        public: [key_id, encryption_context, encryption_algorithm, grant_tokens, dry_run],
    },
    DecryptResponse { secret: [plaintext], public: [key_id, encryption_algorithm] },
    GenerateDataKeyResponse { secret: [plaintext], public: [ciphertext_blob, key_id] },
    GenerateRandomResponse { secret: [plaintext], public: [] },
    GenerateDataKeyPairResponse {
        secret: [private_key_plaintext],
        public: [private_key_ciphertext_blob, public_key, key_id, key_pair_spec],
    },
    SignRequest {
        secret: [message],
        public: [key_id, message_type, signing_algorithm, grant_tokens, dry_run],
    },
    VerifyRequest {
        secret: [message],
        public: [key_id, message_type, signature, signing_algorithm, grant_tokens, dry_run],
    },
    GenerateMacRequest { secret: [message], public: [key_id, mac_algorithm, grant_tokens, dry_run] },
    VerifyMacRequest {
        secret: [message],
        public: [key_id, mac_algorithm, mac, grant_tokens, dry_run],
    },
}

no_secrets! {
    CreateKeyRequest, CreateKeyResponse,
    DescribeKeyRequest, DescribeKeyResponse,
    ListKeysRequest, ListKeysResponse,
    UpdateKeyDescriptionRequest, UpdateKeyDescriptionResponse,
    EnableKeyRequest, EnableKeyResponse,
    DisableKeyRequest, DisableKeyResponse,
    ScheduleKeyDeletionRequest, ScheduleKeyDeletionResponse,
    CancelKeyDeletionRequest, CancelKeyDeletionResponse,
    PutKeyPolicyRequest, PutKeyPolicyResponse,
    GetKeyPolicyRequest, GetKeyPolicyResponse,
    ListKeyPoliciesRequest, ListKeyPoliciesResponse,
    CreateAliasRequest, CreateAliasResponse,
    UpdateAliasRequest, UpdateAliasResponse,
    DeleteAliasRequest, DeleteAliasResponse,
    ListAliasesRequest, ListAliasesResponse,
    TagResourceRequest, TagResourceResponse,
    UntagResourceRequest, UntagResourceResponse,
    ListResourceTagsRequest, ListResourceTagsResponse,
    EncryptResponse,
    DecryptRequest,
    ReEncryptRequest, ReEncryptResponse,
    GenerateDataKeyRequest,
    GenerateDataKeyWithoutPlaintextRequest, GenerateDataKeyWithoutPlaintextResponse,
    GenerateRandomRequest,
    GenerateDataKeyPairRequest,
    GenerateDataKeyPairWithoutPlaintextRequest, GenerateDataKeyPairWithoutPlaintextResponse,
    SignResponse,
    VerifyResponse,
    GetPublicKeyRequest, GetPublicKeyResponse,
    GenerateMacResponse,
    VerifyMacResponse,
    CreateGrantRequest, CreateGrantResponse,
    ListGrantsRequest, ListGrantsResponse,
    ListRetirableGrantsRequest,
    RetireGrantRequest, RetireGrantResponse,
    RevokeGrantRequest, RevokeGrantResponse,
}

/// `tonic_prost::ProstCodec` that wipes: encodes `T`, decodes `U`, and zeroizes secrets in both.
#[derive(Debug, Clone)]
pub struct WipingCodec<T, U> {
    _pd: PhantomData<(T, U)>,
}

impl<T, U> Default for WipingCodec<T, U> {
    fn default() -> Self {
        WipingCodec { _pd: PhantomData }
    }
}

impl<T, U> Codec for WipingCodec<T, U>
where
    T: Message + WipeSecrets + Send + 'static,
    U: Message + WipeSecrets + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = WipingEncoder<T>;
    type Decoder = WipingDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        WipingEncoder { _pd: PhantomData }
    }

    fn decoder(&mut self) -> Self::Decoder {
        WipingDecoder { _pd: PhantomData }
    }
}

/// Holds a message and wipes its secrets when dropped, on the error, panic and cancellation paths
/// too, unless it is taken out first (`into_inner`).
pub struct WipeOnDrop<T: WipeSecrets>(Option<T>);

impl<T: WipeSecrets> WipeOnDrop<T> {
    pub fn new(message: T) -> Self {
        WipeOnDrop(Some(message))
    }

    pub fn get(&self) -> &T {
        self.0.as_ref().expect("held until taken")
    }

    /// The message, no longer wiped when dropped: its new owner takes that on.
    pub fn into_inner(mut self) -> T {
        self.0.take().expect("held until taken")
    }
}

impl<T: WipeSecrets> Drop for WipeOnDrop<T> {
    fn drop(&mut self) {
        if let Some(message) = &mut self.0 {
            message.wipe_secrets();
        }
    }
}

/// Encodes as `tonic_prost::ProstEncoder`, then zeroizes the message's secrets.
#[derive(Debug, Clone)]
pub struct WipingEncoder<T> {
    _pd: PhantomData<T>,
}

impl<T: Message + WipeSecrets> Encoder for WipingEncoder<T> {
    type Item = T;
    type Error = Status;

    fn encode(&mut self, item: T, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        let item = WipeOnDrop::new(item);
        // As ProstEncoder: an EncodeBuf grows on demand, so this cannot run out of space.
        item.get().encode(buf).expect("Message only errors if not enough space");
        Ok(())
    }
}

/// Decodes as `tonic_prost::ProstDecoder`; a message that fails to decode is wiped before it is
/// dropped (its secret fields may already hold part of the input).
#[derive(Debug, Clone)]
pub struct WipingDecoder<U> {
    _pd: PhantomData<U>,
}

impl<U: Message + WipeSecrets + Default> Decoder for WipingDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        // What `Message::decode` does (default, then merge), keeping hold of the partial message.
        let mut item = U::default();
        match item.merge(buf) {
            Ok(()) => Ok(Some(item)),
            Err(e) => {
                item.wipe_secrets();
                // Not ProstDecoder's INTERNAL: bad input is a ValidationException.
                Err(super::status::undecodable(&e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::collections::{BTreeSet, HashMap};

    use prost::bytes::{Buf, BufMut};
    use tonic::codec::{EncodeBody, Streaming};

    use super::*;

    /// Hands the encoded message bytes (the gRPC frame's payload) to the test, unchanged.
    struct RawDecoder;

    impl Decoder for RawDecoder {
        type Item = Vec<u8>;
        type Error = Status;

        fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
            Ok(Some(buf.copy_to_bytes(buf.remaining()).to_vec()))
        }
    }

    /// Puts the given bytes on the wire as one message, so a decoder can be fed anything.
    struct RawEncoder;

    impl Encoder for RawEncoder {
        type Item = Vec<u8>;
        type Error = Status;

        fn encode(&mut self, item: Vec<u8>, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
            buf.put_slice(&item);
            Ok(())
        }
    }

    /// Sends one message through tonic's framing: `encoder` writes it, `decoder` reads it back.
    async fn round_trip<E, D>(encoder: E, decoder: D, item: E::Item) -> Result<Option<D::Item>, Status>
    where
        E: Encoder<Error = Status> + Send + 'static,
        E::Item: Send + 'static,
        D: Decoder<Error = Status> + Send + 'static,
    {
        let body = EncodeBody::new_client(encoder, tokio_stream::iter(vec![Ok(item)]), None, None);
        Streaming::new_request(decoder, body, None, None).message().await
    }

    /// The payload our codec's encoder puts on the wire for `msg`.
    async fn wire_bytes<T: Message + WipeSecrets + Default + Send + 'static>(msg: T) -> Vec<u8> {
        let encoder = WipingCodec::<T, T>::default().encoder();
        round_trip(encoder, RawDecoder, msg).await.unwrap().unwrap()
    }

    async fn wiping_decode<U: Message + WipeSecrets + Default + Send + 'static>(bytes: Vec<u8>) -> Result<U, Status> {
        let decoder = WipingCodec::<U, U>::default().decoder();
        round_trip(RawEncoder, decoder, bytes)
            .await
            .map(|m| m.expect("one message"))
    }

    async fn prost_decode<U: Message + Default + Send + 'static>(bytes: Vec<u8>) -> Result<U, Status> {
        let decoder = tonic_prost::ProstCodec::<U, U>::default().decoder();
        round_trip(RawEncoder, decoder, bytes)
            .await
            .map(|m| m.expect("one message"))
    }

    fn context() -> HashMap<String, String> {
        HashMap::from([("purpose".to_string(), "test".to_string())])
    }

    fn data_key() -> pb::GenerateDataKeyResponse {
        pb::GenerateDataKeyResponse {
            ciphertext_blob: vec![0xc1; 93],
            plaintext: (0..32).collect(),
            key_id: "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab".into(),
        }
    }

    fn decrypted() -> pb::DecryptResponse {
        pb::DecryptResponse {
            key_id: "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab".into(),
            plaintext: b"attack at dawn".to_vec(),
            encryption_algorithm: "SYMMETRIC_DEFAULT".into(),
        }
    }

    #[tokio::test]
    async fn encoder_output_is_prost_encoding_of_generate_data_key_response() {
        let msg = data_key();
        let expected = msg.encode_to_vec();
        assert!(
            expected.windows(32).any(|w| w == msg.plaintext.as_slice()),
            "plaintext is on the wire"
        );
        assert_eq!(wire_bytes(msg).await, expected);
    }

    #[tokio::test]
    async fn encoder_output_is_prost_encoding_of_decrypt_response() {
        let msg = decrypted();
        let expected = msg.encode_to_vec();
        assert_eq!(wire_bytes(msg).await, expected);
        // An empty plaintext encodes to nothing; still the same bytes.
        let empty = pb::DecryptResponse {
            plaintext: vec![],
            ..decrypted()
        };
        let expected = empty.encode_to_vec();
        assert_eq!(wire_bytes(empty).await, expected);
    }

    #[tokio::test]
    async fn encoder_output_decodes_with_prost_codec() {
        let msg = data_key();
        let bytes = wire_bytes(msg.clone()).await;
        assert_eq!(prost_decode::<pb::GenerateDataKeyResponse>(bytes).await.unwrap(), msg);
    }

    #[test]
    fn wipe_generate_data_key_response() {
        let mut m = data_key();
        m.wipe_secrets();
        assert!(m.plaintext.is_empty());
        assert_eq!(
            m,
            pb::GenerateDataKeyResponse {
                plaintext: vec![],
                ..data_key()
            }
        );
    }

    #[test]
    fn wipe_decrypt_response() {
        let mut m = decrypted();
        m.wipe_secrets();
        assert!(m.plaintext.is_empty());
        assert_eq!(
            m,
            pb::DecryptResponse {
                plaintext: vec![],
                ..decrypted()
            }
        );
    }

    #[test]
    fn wipe_generate_random_response() {
        let mut m = pb::GenerateRandomResponse {
            plaintext: vec![7; 1024],
        };
        m.wipe_secrets();
        assert!(m.plaintext.is_empty());
    }

    #[test]
    fn wipe_generate_data_key_pair_response() {
        let full = || pb::GenerateDataKeyPairResponse {
            private_key_ciphertext_blob: vec![0xc1; 200],
            private_key_plaintext: vec![0x30; 121],
            public_key: vec![0x30; 91],
            key_id: "arn:aws:kms:us-east-1:111122223333:key/k".into(),
            key_pair_spec: "ECC_NIST_P256".into(),
        };
        let mut m = full();
        m.wipe_secrets();
        assert!(m.private_key_plaintext.is_empty());
        assert_eq!(
            m,
            pb::GenerateDataKeyPairResponse {
                private_key_plaintext: vec![],
                ..full()
            }
        );
    }

    #[test]
    fn wipe_encrypt_request() {
        let full = || pb::EncryptRequest {
            key_id: "alias/app".into(),
            plaintext: b"secret".to_vec(),
            encryption_context: context(),
            encryption_algorithm: Some("SYMMETRIC_DEFAULT".into()),
            grant_tokens: vec!["token".into()],
            dry_run: Some(false),
        };
        let mut m = full();
        m.wipe_secrets();
        assert!(m.plaintext.is_empty());
        assert_eq!(
            m,
            pb::EncryptRequest {
                plaintext: vec![],
                ..full()
            }
        );
    }

    /// The messages signed and MACed are the caller's data: wiped, the rest kept.
    #[test]
    fn wipe_sign_and_mac_messages() {
        let mac = || pb::GenerateMacRequest {
            key_id: "alias/mac".into(),
            message: b"password".to_vec(),
            mac_algorithm: "HMAC_SHA_256".into(),
            grant_tokens: vec!["token".into()],
            dry_run: None,
        };
        let mut m = mac();
        m.wipe_secrets();
        assert_eq!(
            m,
            pb::GenerateMacRequest {
                message: vec![],
                ..mac()
            }
        );
        let verify = || pb::VerifyRequest {
            key_id: "alias/sign".into(),
            message: b"document".to_vec(),
            message_type: Some("RAW".into()),
            signature: vec![7; 64],
            signing_algorithm: "ECDSA_SHA_256".into(),
            grant_tokens: vec![],
            dry_run: None,
        };
        let mut m = verify();
        m.wipe_secrets();
        assert_eq!(
            m,
            pb::VerifyRequest {
                message: vec![],
                ..verify()
            }
        );
    }

    #[test]
    fn wipe_is_a_no_op_without_secrets() {
        let full = || pb::EncryptResponse {
            ciphertext_blob: vec![1, 2, 3],
            key_id: "k".into(),
            encryption_algorithm: "SYMMETRIC_DEFAULT".into(),
        };
        let mut m = full();
        m.wipe_secrets();
        assert_eq!(m, full());
    }

    /// Every `*plaintext` and `message` field in kms.proto is one that `wipe_secrets` zeroizes, and
    /// the other way round, so a secret field added to the proto cannot go unwiped.
    #[test]
    fn secret_fields_match_the_proto() {
        let proto = include_str!("../../proto/kms/v1/kms.proto");
        let in_proto = plaintext_fields(proto);
        assert!(
            in_proto.contains(&("GenerateDataKeyResponse".into(), "plaintext".into())),
            "{in_proto:?}"
        );
        let wiped: BTreeSet<(String, String)> = SECRET_FIELDS
            .iter()
            .map(|&(m, f)| (m.to_string(), f.to_string()))
            .collect();
        assert_eq!(in_proto, wiped);
    }

    /// (message, field) for fields named `message` or ending in `plaintext`, from proto source text.
    fn plaintext_fields(proto: &str) -> BTreeSet<(String, String)> {
        let text: String = proto
            .lines()
            .map(|l| l.split("//").next().unwrap_or(""))
            .collect::<Vec<_>>()
            .join("\n");
        let spaced = text
            .replace('{', " { ")
            .replace('}', " } ")
            .replace(';', " ; ")
            .replace('=', " = ");
        let tokens: Vec<&str> = spaced.split_whitespace().collect();
        let mut blocks: Vec<Option<String>> = Vec::new(); // Some(name) for message blocks
        let mut found = BTreeSet::new();
        for (i, t) in tokens.iter().enumerate() {
            match *t {
                "{" => {
                    let message = i >= 2 && tokens[i - 2] == "message";
                    blocks.push(message.then(|| tokens[i - 1].to_string()));
                }
                "}" => {
                    blocks.pop();
                }
                "=" if i >= 1 && (tokens[i - 1].ends_with("plaintext") || tokens[i - 1] == "message") => {
                    if let Some(Some(message)) = blocks.last() {
                        found.insert((message.clone(), tokens[i - 1].to_string()));
                    }
                }
                _ => {}
            }
        }
        found
    }

    #[tokio::test]
    async fn garbage_and_truncated_input_is_a_validation_error_where_prost_fails() {
        let full = data_key().encode_to_vec();
        let inputs = vec![
            full[..full.len() / 2].to_vec(), // cut inside a field
            full[..1].to_vec(),              // a tag and nothing else
            vec![0xff; 16],                  // an unterminated varint
            vec![0x0a, 0x05, 0x01, 0x02],    // length 5, 2 bytes follow
            vec![0x0f, 0x00],                // wire type 7 does not exist
            vec![0x00],                      // field number 0
            vec![0x12, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01], // varint > 10 bytes
        ];
        for input in inputs {
            let ours = wiping_decode::<pb::GenerateDataKeyResponse>(input.clone()).await;
            let prost = prost_decode::<pb::GenerateDataKeyResponse>(input.clone()).await;
            let (ours, prost) = (ours.expect_err("garbage decodes"), prost.expect_err("prost decodes it"));
            // Where prost fails, we fail too, but as the caller's error with prost's reason.
            assert_eq!(ours.code(), tonic::Code::InvalidArgument, "{input:?}: {ours:?}");
            assert_eq!(
                ours.metadata().get(super::super::status::ERROR_TYPE).unwrap(),
                "ValidationException"
            );
            assert_eq!(ours.message(), prost.message(), "{input:?}");
        }
        // A well-formed message still decodes.
        assert_eq!(
            wiping_decode::<pb::GenerateDataKeyResponse>(full).await.unwrap(),
            data_key()
        );
    }

    thread_local! {
        /// What each `Probe::wipe_secrets` call found in the secret field, on this thread.
        static PROBE_WIPES: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
    }

    /// A message that records when and on what it is wiped (the real ones vanish once dropped).
    #[derive(Clone, PartialEq, prost::Message)]
    struct Probe {
        #[prost(bytes = "vec", tag = "1")]
        secret: Vec<u8>,
        #[prost(string, tag = "2")]
        name: String,
    }

    impl WipeSecrets for Probe {
        fn wipe_secrets(&mut self) {
            PROBE_WIPES.with(|w| w.borrow_mut().push(self.secret.clone()));
            self.secret.zeroize();
        }
    }

    fn probe_wipes() -> Vec<Vec<u8>> {
        PROBE_WIPES.with(|w| std::mem::take(&mut *w.borrow_mut()))
    }

    // Current-thread runtime: the codec runs on the test's thread, so the thread-local sees it.
    #[tokio::test(flavor = "current_thread")]
    async fn encoder_wipes_the_message_after_encoding_it() {
        probe_wipes();
        let msg = Probe {
            secret: b"data key".to_vec(),
            name: "n".into(),
        };
        let expected = msg.encode_to_vec();
        assert_eq!(wire_bytes(msg).await, expected);
        assert_eq!(probe_wipes(), vec![b"data key".to_vec()], "wiped once, after encoding");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn decoder_wipes_a_partly_decoded_message() {
        probe_wipes();
        let mut input = Probe {
            secret: b"data key".to_vec(),
            name: String::new(),
        }
        .encode_to_vec();
        input.extend_from_slice(&[0x12, 0x09, b'x']); // field 2, length 9, 1 byte follows
        assert!(wiping_decode::<Probe>(input).await.is_err());
        assert_eq!(
            probe_wipes(),
            vec![b"data key".to_vec()],
            "the decoded secret was wiped"
        );
        // A good message is handed over, not wiped.
        let good = Probe {
            secret: b"k".to_vec(),
            name: "n".into(),
        };
        assert_eq!(wiping_decode::<Probe>(good.encode_to_vec()).await.unwrap(), good);
        assert!(probe_wipes().is_empty());
    }
}
