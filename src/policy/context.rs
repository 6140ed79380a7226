//! The request context: who calls, which action, on which key, and the condition key values the
//! request carries. Built once per request by the caller of the engine.

mod store;
mod value;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::SystemTime;

use super::condition::keys;
use super::principal::{is_account_id, split_arn, Caller, CallerKind};
use store::{Name, Store};
pub(crate) use value::Stamp;
use value::{TimeForm, Value};

/// Everything a policy can be decided on for one request.
///
/// Condition key names are case-insensitive; values keep their case. Each key holds one value or
/// a set of values; an empty set counts as missing. Values are strings and each operator
/// interprets them (numbers, dates, booleans, IP addresses, ARNs); the current time is kept as a
/// number and rendered as text only when an operator reads it as text.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub(crate) caller: Caller,
    action: String,
    pub(crate) action_lc: String,
    resource: String,
    key_account: Option<String>,
    /// The condition keys; with [`RequestContext::new_reading`], only the ones the policies in play
    /// read. A key no policy reads can't change a decision, so building it is wasted work.
    values: Store,
}

/// A condition key's request values as an operator reads them.
pub(crate) enum Request<'a> {
    Strings(&'a [String]),
    /// One of these values, which is unknown (see [`Value::OneOf`]).
    OneOf(&'a [String]),
    Time(&'a Stamp),
}

impl RequestContext {
    /// A context for `principal_arn` calling `action` (e.g. `kms:Encrypt`) on the key
    /// `resource_arn`. Fills in what follows from these: `aws:PrincipalArn`, `aws:PrincipalType`,
    /// `aws:username` (IAM users), `aws:PrincipalAccount`, `kms:CallerAccount` (from the principal's ARN), the key's account
    /// (from the key ARN), and `aws:CurrentTime` / `aws:EpochTime` (now).
    pub fn new(principal_arn: &str, action: &str, resource_arn: &str) -> RequestContext {
        RequestContext::new_reading(principal_arn, action, resource_arn, None)
    }

    /// [`RequestContext::new`] that keeps only the condition keys in `only` (lowercased, sorted,
    /// once each, as [`Policy::condition_keys`](super::Policy::condition_keys) gives them), when
    /// given: every later `set` of another key is skipped. For the policies that read those keys,
    /// the decision is the same as with every key set.
    pub fn new_reading(
        principal_arn: &str,
        action: &str,
        resource_arn: &str,
        only: Option<Arc<[String]>>,
    ) -> RequestContext {
        let mut ctx = RequestContext::without_conditions(principal_arn, action, resource_arn);
        ctx.values = Store::new(only);
        match ctx.caller.principal_arn_cow() {
            Some(Cow::Borrowed(_)) => ctx.values.set(Name::plain(keys::PRINCIPAL_ARN), || Value::CallerArn),
            Some(Cow::Owned(arn)) => ctx.values.set(Name::plain(keys::PRINCIPAL_ARN), || Value::One(arn)),
            None => {}
        }
        if let Some(kind) = ctx.caller.principal_type() {
            ctx.values
                .set(Name::plain(keys::PRINCIPAL_TYPE), || Value::One(kind.to_string()));
        }
        if let Some(name) = ctx.caller.user_name() {
            let name = name.to_string();
            ctx.values.set(Name::plain(keys::USERNAME), || Value::One(name));
        }
        if ctx.caller.account.is_some() {
            ctx.values
                .set(Name::plain(keys::PRINCIPAL_ACCOUNT), || Value::CallerAccount);
            ctx.values
                .set(Name::plain(keys::CALLER_ACCOUNT), || Value::CallerAccount);
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
            values: Store::new(None),
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
    /// set of keys. An empty context leaves both missing, as in AWS. Context keys differing only
    /// in case name one condition key, which then holds all their values as [`Value::OneOf`]: the
    /// last one alone would let the caller choose what a Deny sees.
    pub fn with_encryption_context<K: AsRef<str>, V: AsRef<str>>(
        mut self,
        context: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        if !self.values.keeps_encryption_context() {
            return self;
        }
        let keep_names = self.values.keeps(Name::plain(keys::ENCRYPTION_CONTEXT_KEYS));
        let mut names = None;
        for (k, v) in context {
            let (k, v) = (k.as_ref(), v.as_ref());
            self.values.update(Name::encryption_context(k), |prev| match prev {
                None => Value::One(v.to_string()),
                Some(prev) => Value::one_of(prev, v.to_string()),
            });
            if keep_names {
                names = Some(Value::with(names, k.to_string()));
            }
        }
        if let Some(names) = names {
            self.values.set(Name::plain(keys::ENCRYPTION_CONTEXT_KEYS), || names);
        }
        self
    }

    /// Sets `aws:CurrentTime` (ISO 8601, UTC) and `aws:EpochTime` to `t`.
    pub fn with_current_time(mut self, t: SystemTime) -> Self {
        self.set_current_time(t);
        self
    }

    fn set_current_time(&mut self, t: SystemTime) {
        self.values.set(Name::plain(keys::CURRENT_TIME), || {
            Value::Time(Stamp::new(t, TimeForm::Iso8601))
        });
        self.values.set(Name::plain(keys::EPOCH_TIME), || {
            Value::Time(Stamp::new(t, TimeForm::EpochSeconds))
        });
    }

    pub fn set(&mut self, key: &str, value: impl Into<String>) {
        self.values.set(Name::plain(key), || Value::One(value.into()));
    }

    /// Sets a single-valued key that a request can name twice in letters of different case
    /// (tags `env` and `Env` give `aws:RequestTag/env` twice): the values are kept as one
    /// unknown value among them ([`Value::OneOf`]), as encryption context keys are, so the caller
    /// can't choose by order or case which one a policy sees.
    pub fn add(&mut self, key: &str, value: impl Into<String>) {
        let value = value.into();
        self.values.update(Name::plain(key), |prev| match prev {
            None => Value::One(value),
            Some(prev) => Value::one_of(prev, value),
        });
    }

    pub fn set_values<S: Into<String>>(&mut self, key: &str, values: impl IntoIterator<Item = S>) {
        self.values.set(Name::plain(key), || {
            Value::Many(values.into_iter().map(Into::into).collect())
        });
    }

    /// Makes `key` missing.
    pub fn remove(&mut self, key: &str) {
        self.values.remove(Name::plain(key));
    }

    /// The values of a condition key (any case), if present.
    pub fn get(&self, key: &str) -> Option<&[String]> {
        let v = self.values.get(Name::plain(key))?;
        Some(match self.read(v) {
            Request::Strings(s) | Request::OneOf(s) => s,
            Request::Time(t) => std::slice::from_ref(t.text()),
        })
    }

    /// The values of `key_lc` (a policy's condition key, lowercased), if present.
    pub(crate) fn request_lc(&self, key_lc: &str) -> Option<Request<'_>> {
        self.values.get_lc(key_lc).map(|v| self.read(v))
    }

    fn read<'a>(&'a self, v: &'a Value) -> Request<'a> {
        let one = std::slice::from_ref;
        match v {
            Value::One(s) => Request::Strings(one(s)),
            Value::Many(vs) => Request::Strings(vs),
            Value::OneOf(vs) => Request::OneOf(vs),
            Value::CallerArn => Request::Strings(one(&self.caller.arn)),
            Value::CallerAccount => Request::Strings(self.caller.account.as_ref().map_or(&[], one)),
            Value::Time(t) => Request::Time(t),
        }
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
