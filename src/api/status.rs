//! Domain errors as gRPC statuses: a status code derived from the AWS exception, and the exception
//! name in the `x-kms-error-type` metadata.

use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

use crate::error::KmsError;

pub const ERROR_TYPE: &str = "x-kms-error-type";
pub const REQUEST_ID: &str = "x-kms-request-id";

pub fn code(e: &KmsError) -> Code {
    match e {
        KmsError::NotFound(_) => Code::NotFound,
        KmsError::Disabled(_) | KmsError::InvalidState(_) => Code::FailedPrecondition,
        KmsError::InvalidCiphertext(_)
        | KmsError::IncorrectKey(_)
        | KmsError::InvalidKeyUsage(_)
        | KmsError::Validation(_)
        | KmsError::InvalidAliasName(_)
        | KmsError::InvalidMarker(_)
        | KmsError::InvalidArn(_)
        | KmsError::Tag(_)
        | KmsError::InvalidSignature(_)
        | KmsError::InvalidMac(_) => Code::InvalidArgument,
        KmsError::AlreadyExists(_) => Code::AlreadyExists,
        KmsError::LimitExceeded(_) | KmsError::Throttling(_) => Code::ResourceExhausted,
        KmsError::AccessDenied(_) => Code::PermissionDenied,
        KmsError::Unauthenticated(_) => Code::Unauthenticated,
        KmsError::MalformedPolicyDocument(_) => Code::InvalidArgument,
        KmsError::UnsupportedOperation(_) | KmsError::UnknownOperation(_) => Code::Unimplemented,
        KmsError::KeyUnavailable(_) | KmsError::ServiceUnavailable(_) => Code::Unavailable,
        KmsError::DependencyTimeout(_) => Code::DeadlineExceeded,
        KmsError::Internal(_) => Code::Internal,
        KmsError::InvalidGrantToken(_) => Code::InvalidArgument,
        // A valid request, deliberately not carried out: a precondition, not a bad argument.
        KmsError::DryRunOperation(_) => Code::FailedPrecondition,
    }
}

/// The longest message sent, in bytes. tonic percent-encodes non-ASCII bytes (3 bytes each), so
/// the `grpc-message` header stays under 12 KiB: HTTP/2 clients refuse header lists over 16 KiB
/// by default (hyper), and over 64 KiB drop the whole connection.
pub const MAX_MESSAGE_BYTES: usize = 4096;

pub fn to_status(e: &KmsError, request_id: &str) -> Status {
    let mut status = Status::new(code(e), capped(e.to_string()));
    let md = status.metadata_mut();
    md.insert(ERROR_TYPE, MetadataValue::from_static(e.name()));
    if let Ok(v) = MetadataValue::try_from(request_id) {
        md.insert(REQUEST_ID, v);
    }
    status
}

/// `message` cut to at most [`MAX_MESSAGE_BYTES`] (at a character boundary, marked "...").
fn capped(mut message: String) -> String {
    if message.len() > MAX_MESSAGE_BYTES {
        let mut cut = MAX_MESSAGE_BYTES - 3;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
        message.push_str("...");
    }
    message
}

/// A message that doesn't decode: the caller's error, so ValidationException (INVALID_ARGUMENT)
/// as for any other bad input, not tonic's INTERNAL. The codec can't reach the request's id, so
/// the status has none; the service wrapper, `preauth.rs`, adds the request's own and audits it.
/// prost's message names the field, never its bytes.
pub fn undecodable(e: &prost::DecodeError) -> Status {
    without_request_id(&KmsError::Validation(e.to_string())) // "failed to decode Protobuf message: <why>"
}

/// `e` as a status for a request refused before its operation began: its exception name but no
/// request id (the service wrapper, `preauth.rs`, adds one and audits it).
pub fn without_request_id(e: &KmsError) -> Status {
    let mut status = Status::new(code(e), capped(e.to_string()));
    status
        .metadata_mut()
        .insert(ERROR_TYPE, MetadataValue::from_static(e.name()));
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_carries_the_exception_name() {
        let s = to_status(&KmsError::Disabled("k is disabled.".into()), "r-1");
        assert_eq!(s.code(), Code::FailedPrecondition);
        assert_eq!(s.message(), "k is disabled.");
        assert_eq!(s.metadata().get(ERROR_TYPE).unwrap(), "DisabledException");
        assert_eq!(s.metadata().get(REQUEST_ID).unwrap(), "r-1");
        let s = to_status(&KmsError::dry_run(), "r-2");
        assert_eq!(s.code(), Code::FailedPrecondition);
        assert_eq!(s.metadata().get(ERROR_TYPE).unwrap(), "DryRunOperationException");
    }

    #[test]
    fn long_messages_are_cut_at_a_character_boundary() {
        let short = "é".repeat(MAX_MESSAGE_BYTES / 2);
        assert_eq!(to_status(&KmsError::NotFound(short.clone()), "r").message(), short);
        let long = format!("x{short}");
        let sent = to_status(&KmsError::NotFound(long.clone()), "r");
        assert!(sent.message().len() <= MAX_MESSAGE_BYTES, "{}", sent.message().len());
        assert!(sent.message().ends_with("é..."));
        assert!(long.starts_with(sent.message().trim_end_matches("...")));
    }
}
