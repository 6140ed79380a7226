//! One error type for every operation. Each variant is an AWS KMS exception; its message says what
//! was wrong with the request and never contains key material, plaintext or PINs.

use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum KmsError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Disabled(String),
    #[error("{0}")]
    InvalidState(String),
    #[error("{0}")]
    InvalidCiphertext(String),
    #[error("{0}")]
    IncorrectKey(String),
    #[error("{0}")]
    InvalidKeyUsage(String),
    #[error("{0}")]
    Validation(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    InvalidAliasName(String),
    #[error("{0}")]
    InvalidMarker(String),
    #[error("{0}")]
    InvalidArn(String),
    #[error("{0}")]
    Tag(String),
    #[error("{0}")]
    LimitExceeded(String),
    /// Too much at once: the caller should retry later (AWS SDKs retry this one by themselves).
    #[error("{0}")]
    Throttling(String),
    #[error("{0}")]
    AccessDenied(String),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    InvalidSignature(String),
    #[error("{0}")]
    InvalidMac(String),
    #[error("{0}")]
    MalformedPolicyDocument(String),
    #[error("{0}")]
    UnsupportedOperation(String),
    /// AWS's common error for an action it doesn't have (here, a gRPC method the service lacks).
    #[error("{0}")]
    UnknownOperation(String),
    #[error("{0}")]
    KeyUnavailable(String),
    #[error("{0}")]
    DependencyTimeout(String),
    #[error("{0}")]
    Internal(String),
    /// AWS's common error for a temporary failure of the server (HTTP 503): here, a stopping one.
    #[error("{0}")]
    ServiceUnavailable(String),
    #[error("{0}")]
    InvalidGrantToken(String),
    /// A dry run whose real call would have succeeded.
    #[error("{0}")]
    DryRunOperation(String),
}

pub type Result<T, E = KmsError> = std::result::Result<T, E>;

impl KmsError {
    /// The AWS KMS exception name, sent to clients in the `x-kms-error-type` metadata.
    pub fn name(&self) -> &'static str {
        match self {
            KmsError::NotFound(_) => "NotFoundException",
            KmsError::Disabled(_) => "DisabledException",
            KmsError::InvalidState(_) => "KMSInvalidStateException",
            KmsError::InvalidCiphertext(_) => "InvalidCiphertextException",
            KmsError::IncorrectKey(_) => "IncorrectKeyException",
            KmsError::InvalidKeyUsage(_) => "InvalidKeyUsageException",
            KmsError::Validation(_) => "ValidationException",
            KmsError::AlreadyExists(_) => "AlreadyExistsException",
            KmsError::InvalidAliasName(_) => "InvalidAliasNameException",
            KmsError::InvalidMarker(_) => "InvalidMarkerException",
            KmsError::InvalidArn(_) => "InvalidArnException",
            KmsError::Tag(_) => "TagException",
            KmsError::LimitExceeded(_) => "LimitExceededException",
            KmsError::Throttling(_) => "ThrottlingException",
            KmsError::AccessDenied(_) => "AccessDeniedException",
            KmsError::Unauthenticated(_) => "UnrecognizedClientException",
            KmsError::InvalidSignature(_) => "KMSInvalidSignatureException",
            KmsError::InvalidMac(_) => "KMSInvalidMacException",
            KmsError::MalformedPolicyDocument(_) => "MalformedPolicyDocumentException",
            KmsError::UnsupportedOperation(_) => "UnsupportedOperationException",
            KmsError::UnknownOperation(_) => "UnknownOperationException",
            KmsError::KeyUnavailable(_) => "KeyUnavailableException",
            KmsError::DependencyTimeout(_) => "DependencyTimeoutException",
            KmsError::Internal(_) => "KMSInternalException",
            KmsError::ServiceUnavailable(_) => "ServiceUnavailable",
            KmsError::InvalidGrantToken(_) => "InvalidGrantTokenException",
            KmsError::DryRunOperation(_) => "DryRunOperationException",
        }
    }

    pub fn validation(msg: impl Into<String>) -> Self {
        KmsError::Validation(msg.into())
    }

    pub fn internal(msg: impl Into<String>) -> Self {
        KmsError::Internal(msg.into())
    }

    /// AWS's answer to a dry run that passed every check.
    pub fn dry_run() -> Self {
        KmsError::DryRunOperation("The request was rejected because the DryRun parameter was specified.".into())
    }
}

/// The most characters of a caller's value an error message quotes.
pub const MAX_QUOTED_CHARS: usize = 64;

/// A caller's value as an error message quotes it: whole when short, else its first
/// [`MAX_QUOTED_CHARS`] characters and "...". A request may be 512 KiB; an error header that
/// large would break the caller's connection (HTTP/2 clients refuse header lists over 16 KiB).
pub fn quoted(value: &str) -> std::borrow::Cow<'_, str> {
    match value.char_indices().nth(MAX_QUOTED_CHARS) {
        None => value.into(),
        Some((cut, _)) => format!("{}...", &value[..cut]).into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_values_are_quoted_in_part() {
        assert_eq!(quoted("AES_256"), "AES_256");
        let exactly = "é".repeat(MAX_QUOTED_CHARS);
        assert_eq!(quoted(&exactly), exactly);
        let long = format!("{exactly}x");
        assert_eq!(quoted(&long), format!("{exactly}..."));
    }

    #[test]
    fn names_are_aws_exception_names() {
        assert_eq!(KmsError::InvalidState("x".into()).name(), "KMSInvalidStateException");
        assert_eq!(KmsError::Internal("x".into()).name(), "KMSInternalException");
        assert_eq!(KmsError::ServiceUnavailable("x".into()).name(), "ServiceUnavailable");
        assert_eq!(KmsError::validation("bad").to_string(), "bad");
    }
}
