//! The default key policy, and the policy lockout safety check.

use super::context::RequestContext;
use super::document::Policy;
use super::evaluate::key_policy_verdict;
use crate::error::{KmsError, Result};

/// The `Sid` of the default key policy's only statement, as in AWS.
pub const DEFAULT_POLICY_SID: &str = "Enable IAM User Permissions";

/// AWS's message when a new key policy would lock the caller out.
pub const LOCKOUT_MESSAGE: &str = "The new key policy will not allow you to update the key policy in the future.";

/// The key policy a key gets when it is created without one: the owning account's root gets
/// `kms:*`, which also lets the account's IAM policies grant access to the key.
pub fn default_key_policy(account_id: &str) -> String {
    default_key_policy_in("aws", account_id)
}

/// [`default_key_policy`] for another partition (`aws-cn`, `aws-us-gov`, ...).
pub fn default_key_policy_in(partition: &str, account_id: &str) -> String {
    let doc = serde_json::json!({
        "Version": "2012-10-17",
        "Id": "key-default-1",
        "Statement": [{
            "Sid": DEFAULT_POLICY_SID,
            "Effect": "Allow",
            "Principal": {"AWS": format!("arn:{partition}:iam::{account_id}:root")},
            "Action": "kms:*",
            "Resource": "*"
        }]
    });
    serde_json::to_string_pretty(&doc).unwrap_or_default()
}

/// The policy lockout safety check of CreateKey / PutKeyPolicy (unless the request sets
/// BypassPolicyLockoutSafetyCheck): the new key policy must still allow the caller to call
/// kms:PutKeyPolicy on the key, either naming it directly or naming its account (so that its
/// IAM policies can keep granting it), with no Deny that applies. Conditions are decided with the
/// caller's current request context.
pub fn lockout_check(new_policy: &Policy, caller: &RequestContext) -> Result<()> {
    let ctx = caller.for_action("kms:PutKeyPolicy");
    let verdict = key_policy_verdict(new_policy, &ctx);
    if verdict.deny.is_none() && (verdict.direct.is_some() || verdict.delegated.is_some()) {
        Ok(())
    } else {
        Err(KmsError::MalformedPolicyDocument(LOCKOUT_MESSAGE.to_string()))
    }
}
