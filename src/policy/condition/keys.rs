//! Condition key names. Names are case-insensitive, so both the policy and the request context
//! store them lowercased; these constants are the canonical spellings for callers.

pub const ENCRYPTION_CONTEXT_PREFIX: &str = "kms:EncryptionContext:";
pub const ENCRYPTION_CONTEXT_KEYS: &str = "kms:EncryptionContextKeys";
pub const CALLER_ACCOUNT: &str = "kms:CallerAccount";
pub const VIA_SERVICE: &str = "kms:ViaService";
pub const ENCRYPTION_ALGORITHM: &str = "kms:EncryptionAlgorithm";
pub const SIGNING_ALGORITHM: &str = "kms:SigningAlgorithm";
pub const MAC_ALGORITHM: &str = "kms:MacAlgorithm";
pub const KEY_SPEC: &str = "kms:KeySpec";
pub const KEY_USAGE: &str = "kms:KeyUsage";
pub const KEY_ORIGIN: &str = "kms:KeyOrigin";
pub const REQUEST_ALIAS: &str = "kms:RequestAlias";
pub const RESOURCE_ALIASES: &str = "kms:ResourceAliases";
pub const GRANT_OPERATIONS: &str = "kms:GrantOperations";
pub const GRANTEE_PRINCIPAL: &str = "kms:GranteePrincipal";
pub const GRANT_IS_FOR_AWS_RESOURCE: &str = "kms:GrantIsForAWSResource";
pub const BYPASS_POLICY_LOCKOUT_SAFETY_CHECK: &str = "kms:BypassPolicyLockoutSafetyCheck";
pub const SCHEDULE_KEY_DELETION_PENDING_WINDOW_IN_DAYS: &str = "kms:ScheduleKeyDeletionPendingWindowInDays";
pub const SOURCE_IP: &str = "aws:SourceIp";
pub const PRINCIPAL_ARN: &str = "aws:PrincipalArn";
pub const PRINCIPAL_ACCOUNT: &str = "aws:PrincipalAccount";
pub const PRINCIPAL_TYPE: &str = "aws:PrincipalType";
pub const USERNAME: &str = "aws:username";
pub const MULTI_REGION: &str = "kms:MultiRegion";
pub const CURRENT_TIME: &str = "aws:CurrentTime";
pub const EPOCH_TIME: &str = "aws:EpochTime";
pub const SECURE_TRANSPORT: &str = "aws:SecureTransport";
pub const VIA_AWS_SERVICE: &str = "aws:ViaAWSService";
pub const PRINCIPAL_IS_AWS_SERVICE: &str = "aws:PrincipalIsAWSService";
pub const REQUESTED_REGION: &str = "aws:RequestedRegion";
pub const DATA_KEY_PAIR_SPEC: &str = "kms:DataKeyPairSpec";
pub const MESSAGE_TYPE: &str = "kms:MessageType";
pub const RE_ENCRYPT_ON_SAME_KEY: &str = "kms:ReEncryptOnSameKey";
/// Deprecated spellings of kms:KeySpec / kms:KeyUsage that AWS still fills in.
pub const CUSTOMER_MASTER_KEY_SPEC: &str = "kms:CustomerMasterKeySpec";
pub const CUSTOMER_MASTER_KEY_USAGE: &str = "kms:CustomerMasterKeyUsage";
pub const RETIRING_PRINCIPAL: &str = "kms:RetiringPrincipal";
pub const GRANT_CONSTRAINT_TYPE: &str = "kms:GrantConstraintType";
pub const TAG_KEYS: &str = "aws:TagKeys";
pub const REQUEST_TAG_PREFIX: &str = "aws:RequestTag/";
pub const RESOURCE_TAG_PREFIX: &str = "aws:ResourceTag/";

/// Keys whose request value is a set (use them with `ForAnyValue:` / `ForAllValues:`).
pub const MULTI_VALUED: &[&str] = &[ENCRYPTION_CONTEXT_KEYS, RESOURCE_ALIASES, GRANT_OPERATIONS, TAG_KEYS];

/// The lookup form of a condition key name: lowercased. `kms:EncryptionContext:Department` and
/// `kms:encryptioncontext:department` are the same key, as in AWS; values keep their case.
pub fn normalize(key: &str) -> String {
    key.to_lowercase()
}

/// The condition key that carries encryption context entry `context_key`.
pub fn encryption_context(context_key: &str) -> String {
    format!("{ENCRYPTION_CONTEXT_PREFIX}{context_key}")
}

/// Whether `key` is one of the multi-valued keys above (any case).
pub fn is_multi_valued(key: &str) -> bool {
    MULTI_VALUED.iter().any(|k| k.eq_ignore_ascii_case(key))
}

/// A condition key as written in a policy must look like `prefix:name`.
pub(crate) fn is_well_formed(key: &str) -> bool {
    match key.split_once(':') {
        Some((prefix, name)) => {
            !prefix.is_empty()
                && !name.is_empty()
                && prefix.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && key.len() <= 1024
        }
        None => false,
    }
}
