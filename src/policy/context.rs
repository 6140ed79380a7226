//! The request context: who calls, which action, on which key, and the condition key values the
//! request carries. Built once per request by the caller of the engine.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use super::condition::keys;
use super::principal::{is_account_id, split_arn, Caller, CallerKind};

/// Everything a policy can be decided on for one request.
///
/// Condition keys are stored lowercased (names are case-insensitive); values keep their case.
/// Each key holds one value or a set of values; an empty set counts as missing. Values are
/// strings and each operator interprets them (numbers, dates, booleans, IP addresses, ARNs).
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub(crate) caller: Caller,
    action: String,
    pub(crate) action_lc: String,
    resource: String,
    key_account: Option<String>,
    values: HashMap<String, Vec<String>>,
    /// When set, only these condition keys (lowercased) are stored: the ones the policies in play
    /// read. A key no policy reads can't change a decision, so building it is wasted work.
    only: Option<Arc<[String]>>,
}

impl RequestContext {
    /// A context for `principal_arn` calling `action` (e.g. `kms:Encrypt`) on the key
    /// `resource_arn`. Fills in what follows from these: `aws:PrincipalArn`,
    /// `aws:PrincipalAccount`, `kms:CallerAccount` (from the principal's ARN), the key's account
    /// (from the key ARN), and `aws:CurrentTime` / `aws:EpochTime` (now).
    pub fn new(principal_arn: &str, action: &str, resource_arn: &str) -> RequestContext {
        RequestContext::new_reading(principal_arn, action, resource_arn, None)
    }

    /// [`RequestContext::new`] that keeps only the condition keys in `only` (lowercased), when given:
    /// every later `set` of another key is skipped. For the policies that read those keys, the
    /// decision is the same as with every key set.
    pub fn new_reading(
        principal_arn: &str,
        action: &str,
        resource_arn: &str,
        only: Option<Arc<[String]>>,
    ) -> RequestContext {
        let mut ctx = RequestContext::without_conditions(principal_arn, action, resource_arn);
        ctx.only = only;
        if let Some(arn) = ctx.caller.principal_arn() {
            ctx.set(keys::PRINCIPAL_ARN, arn);
        }
        if let Some(account) = ctx.caller.account.clone() {
            ctx.set(keys::PRINCIPAL_ACCOUNT, account.clone());
            ctx.set(keys::CALLER_ACCOUNT, account);
        }
        ctx.set_current_time(SystemTime::now());
        ctx
    }

    /// The caller, action and resource only, with no condition keys set: enough to decide policies
    /// without a Condition element (see [`Policy::has_conditions`](super::Policy::has_conditions)),
    /// and much cheaper than [`RequestContext::new`] on the hot path.
    pub fn without_conditions(principal_arn: &str, action: &str, resource_arn: &str) -> RequestContext {
        let caller = Caller::parse(principal_arn);
        let key_account = split_arn(resource_arn)
            .map(|[_, _, _, account, _]| account)
            .filter(|a| is_account_id(a))
            .map(str::to_string);
        RequestContext {
            action: action.to_string(),
            action_lc: action.to_lowercase(),
            resource: resource_arn.to_string(),
            key_account,
            values: HashMap::new(),
            only: None,
            caller,
        }
    }

    /// Sets the key's account when the resource is not a key ARN (e.g. a CreateKey request).
    pub fn with_key_account(mut self, account: &str) -> Self {
        self.key_account = Some(account.to_string());
        self
    }

    /// Sets a single-valued condition key.
    pub fn with(mut self, key: &str, value: impl Into<String>) -> Self {
        self.set(key, value);
        self
    }

    /// Sets a multi-valued condition key (e.g. `kms:GrantOperations`).
    pub fn with_values<S: Into<String>>(mut self, key: &str, values: impl IntoIterator<Item = S>) -> Self {
        self.set_values(key, values);
        self
    }

    /// Sets `kms:EncryptionContext:<k>` for every entry and `kms:EncryptionContextKeys` to the
    /// set of keys. An empty context leaves both missing, as in AWS.
    pub fn with_encryption_context<K: AsRef<str>, V: AsRef<str>>(
        mut self,
        context: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        if !self.reads_encryption_context() {
            return self;
        }
        let mut names = Vec::new();
        for (k, v) in context {
            self.set(&keys::encryption_context(k.as_ref()), v.as_ref());
            names.push(k.as_ref().to_string());
        }
        if !names.is_empty() {
            self.set_values(keys::ENCRYPTION_CONTEXT_KEYS, names);
        }
        self
    }

    /// Sets `aws:CurrentTime` (ISO 8601, UTC) and `aws:EpochTime` to `t`.
    pub fn with_current_time(mut self, t: SystemTime) -> Self {
        self.set_current_time(t);
        self
    }

    fn set_current_time(&mut self, t: SystemTime) {
        if !self.reads(keys::CURRENT_TIME) && !self.reads(keys::EPOCH_TIME) {
            return;
        }
        self.set(keys::CURRENT_TIME, humantime::format_rfc3339_seconds(t).to_string());
        let epoch = t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        self.set(keys::EPOCH_TIME, epoch.to_string());
    }

    pub fn set(&mut self, key: &str, value: impl Into<String>) {
        if self.reads(key) {
            self.values.insert(keys::normalize(key), vec![value.into()]);
        }
    }

    pub fn set_values<S: Into<String>>(&mut self, key: &str, values: impl IntoIterator<Item = S>) {
        if !self.reads(key) {
            return;
        }
        self.values
            .insert(keys::normalize(key), values.into_iter().map(Into::into).collect());
    }

    /// Whether `key` is kept (see [`RequestContext::new_reading`]); compared without allocating.
    fn reads(&self, key: &str) -> bool {
        let Some(only) = &self.only else { return true };
        if key.is_ascii() {
            only.iter().any(|k| k.eq_ignore_ascii_case(key))
        } else {
            only.contains(&keys::normalize(key))
        }
    }

    fn reads_encryption_context(&self) -> bool {
        let prefix = keys::ENCRYPTION_CONTEXT_PREFIX;
        match &self.only {
            None => true,
            Some(only) => only.iter().any(|k| {
                k.eq_ignore_ascii_case(keys::ENCRYPTION_CONTEXT_KEYS)
                    || k.get(..prefix.len()).is_some_and(|p| p.eq_ignore_ascii_case(prefix))
            }),
        }
    }

    /// Makes `key` missing.
    pub fn remove(&mut self, key: &str) {
        self.values.remove(&keys::normalize(key));
    }

    /// The values of a condition key (any case), if present.
    pub fn get(&self, key: &str) -> Option<&[String]> {
        self.values_lc(&keys::normalize(key))
    }

    pub(crate) fn values_lc(&self, key_lc: &str) -> Option<&[String]> {
        self.values.get(key_lc).map(Vec::as_slice)
    }

    /// The same request for another action (e.g. the lockout check asks about kms:PutKeyPolicy).
    pub fn for_action(&self, action: &str) -> RequestContext {
        let mut ctx = self.clone();
        ctx.action = action.to_string();
        ctx.action_lc = action.to_lowercase();
        ctx
    }

    /// The caller's ARN (a bare account ID is given as its root ARN).
    pub fn principal_arn(&self) -> &str {
        &self.caller.arn
    }

    pub fn principal_account(&self) -> Option<&str> {
        self.caller.account.as_deref()
    }

    pub fn principal_kind(&self) -> CallerKind {
        self.caller.kind
    }

    pub fn action(&self) -> &str {
        &self.action
    }

    pub fn resource(&self) -> &str {
        &self.resource
    }

    pub fn key_account(&self) -> Option<&str> {
        self.key_account.as_deref()
    }
}
