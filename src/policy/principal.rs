//! Principals: the caller, as parsed from its ARN, and the `Principal` / `NotPrincipal` element of
//! a key policy statement, validated and matched.

use std::borrow::Cow;

use serde_json::Value;

use super::document::{describe_json_type, malformed, seg};
use crate::error::Result;

/// What kind of identity is calling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallerKind {
    /// `arn:aws:iam::<account>:root` (or a bare account ID).
    Root,
    /// `arn:aws:iam::<account>:user/<path/><name>`.
    User,
    /// `arn:aws:iam::<account>:role/<path/><name>`, when a caller is identified by its role.
    Role,
    /// `arn:aws:sts::<account>:assumed-role/<role>/<session>`.
    AssumedRole,
    /// `arn:aws:sts::<account>:federated-user/<name>`.
    FederatedUser,
    /// An AWS service principal such as `logs.amazonaws.com`.
    Service,
    /// Anything else; it can match only `*` or its own exact string.
    Unknown,
}

/// The calling principal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Caller {
    /// The ARN as given (a bare account ID becomes that account's root ARN; a service name is
    /// lowercased).
    pub arn: String,
    pub account: Option<String>,
    pub kind: CallerKind,
    /// For an assumed-role session, the role's name; for a role, the last path segment.
    pub role_name: Option<String>,
    pub partition: String,
}

pub(crate) fn is_account_id(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit())
}

/// The six parts of `arn:partition:service:region:account:resource`, if `s` is shaped so.
/// Runs on every request (the caller's and the key's ARN): a byte search, not `splitn`'s
/// generic pattern machinery, which cost several times as much.
pub(crate) fn split_arn(s: &str) -> Option<[&str; 5]> {
    let mut rest = s.strip_prefix("arn:")?;
    let mut parts = [""; 5];
    for part in &mut parts[..4] {
        let colon = rest.bytes().position(|b| b == b':')?;
        *part = &rest[..colon];
        rest = &rest[colon + 1..];
    }
    parts[4] = rest;
    Some(parts)
}

impl Caller {
    pub(crate) fn parse(s: &str) -> Caller {
        if is_account_id(s) {
            return Caller {
                arn: format!("arn:aws:iam::{s}:root"),
                account: Some(s.to_string()),
                kind: CallerKind::Root,
                role_name: None,
                partition: "aws".into(),
            };
        }
        let unknown = |arn: &str, account: Option<&str>| Caller {
            arn: arn.to_string(),
            account: account.map(str::to_string),
            kind: CallerKind::Unknown,
            role_name: None,
            partition: "aws".into(),
        };
        let Some([partition, service, _region, account, resource]) = split_arn(s) else {
            if !s.contains(':') && s.contains('.') {
                return Caller {
                    arn: s.to_ascii_lowercase(),
                    account: None,
                    kind: CallerKind::Service,
                    role_name: None,
                    partition: "aws".into(),
                };
            }
            return unknown(s, None);
        };
        if !is_account_id(account) {
            return unknown(s, None);
        }
        let (kind, role_name) = match (service, resource) {
            ("iam", "root") => (CallerKind::Root, None),
            ("iam", r) if r.starts_with("user/") => (CallerKind::User, None),
            ("iam", r) if r.starts_with("role/") => (CallerKind::Role, Some(last_segment(r).to_string())),
            ("sts", r) if r.starts_with("assumed-role/") => {
                let mut parts = r.splitn(3, '/').skip(1);
                (CallerKind::AssumedRole, parts.next().map(str::to_string))
            }
            ("sts", r) if r.starts_with("federated-user/") => (CallerKind::FederatedUser, None),
            _ => (CallerKind::Unknown, None),
        };
        Caller {
            arn: s.to_string(),
            account: Some(account.to_string()),
            kind,
            role_name,
            partition: partition.to_string(),
        }
    }

    /// The value of `aws:PrincipalArn`: the role ARN for an assumed-role session (without a path,
    /// which the session ARN does not carry), the caller's ARN otherwise.
    pub(crate) fn principal_arn(&self) -> Option<String> {
        self.principal_arn_cow().map(Cow::into_owned)
    }

    /// The value of `aws:PrincipalType`, as AWS gives it for each kind of caller. A role's own
    /// ARN as the caller stands for a session of it.
    pub(crate) fn principal_type(&self) -> Option<&'static str> {
        match self.kind {
            CallerKind::Root => Some("Account"),
            CallerKind::User => Some("User"),
            CallerKind::Role | CallerKind::AssumedRole => Some("AssumedRole"),
            CallerKind::FederatedUser => Some("FederatedUser"),
            _ => None,
        }
    }

    /// The value of `aws:username`: an IAM user's name (its ARN's last path segment); AWS sets
    /// it for IAM users only.
    pub(crate) fn user_name(&self) -> Option<&str> {
        match self.kind {
            CallerKind::User => Some(last_segment(&self.arn)),
            _ => None,
        }
    }

    /// [`Caller::principal_arn`], borrowed when it is the caller's own ARN.
    pub(crate) fn principal_arn_cow(&self) -> Option<Cow<'_, str>> {
        match (self.kind, &self.account, &self.role_name) {
            (CallerKind::AssumedRole, Some(account), Some(role)) => {
                Some(Cow::Owned(format!("arn:{}:iam::{account}:role/{role}", self.partition)))
            }
            (CallerKind::Service, _, _) => None,
            _ => Some(Cow::Borrowed(&self.arn)),
        }
    }
}

/// One entry of a `Principal` element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Entry {
    /// `"*"` or `{"AWS": "*"}`.
    Any,
    /// `arn:aws:iam::<account>:root` or a bare account ID: the account, which delegates to its
    /// IAM policies.
    Account(String),
    /// An STS session or a federated user: the exact ARN.
    Exact(String),
    /// An IAM user, by partition, account and name: IAM names a user once in an account whatever its path,
    /// so `user/Bob` and `user/ops/Bob` are the same user (AWS would refuse a policy naming a
    /// path the user doesn't have; with no IAM to ask, the name decides).
    User(Named),
    /// An IAM role, by partition, account and name (as for users): matches the role and its assumed-role
    /// sessions, whose ARNs carry no path.
    Role(Named),
    /// A service principal, lowercased.
    Service(String),
    /// `Federated` / `CanonicalUser`: the exact string.
    Other(String),
}

/// How strongly a statement's principal names the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Match {
    No,
    /// The statement names the caller's account: it allows only together with an IAM policy.
    Delegated,
    /// The statement names the caller itself (or everyone).
    Direct,
}

/// The identities a caller is known by, for `NotPrincipal`: a statement with `NotPrincipal`
/// applies unless every one of them is listed (as IAM evaluates it, a user needs its own ARN and
/// its account listed to be exempt; a session needs the session, the role and the account).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Facet {
    Itself,
    RoleOfSession,
    Account,
}

/// A parsed `Principal` or `NotPrincipal` element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Principals {
    entries: Vec<Entry>,
}

impl Principals {
    /// Parses a `Principal` / `NotPrincipal` value found at `loc`.
    pub(crate) fn parse(v: &Value, loc: &str) -> Result<Principals> {
        let entries = match v {
            Value::String(s) if s == "*" => vec![Entry::Any],
            Value::Object(map) if !map.is_empty() => {
                let mut entries = Vec::new();
                for (ty, vals) in map {
                    let ty_loc = format!("{loc}.{}", seg(ty));
                    let list: Vec<(String, &Value)> = match vals {
                        Value::Array(items) if !items.is_empty() => items
                            .iter()
                            .enumerate()
                            .map(|(i, x)| (format!("{ty_loc}[{i}]"), x))
                            .collect(),
                        Value::Array(_) => return Err(malformed(&ty_loc, "must name at least one principal")),
                        other => vec![(ty_loc.clone(), other)],
                    };
                    for (item_loc, item) in list {
                        let Value::String(s) = item else {
                            return Err(malformed(
                                &item_loc,
                                format!("principal must be a string, not {}", describe_json_type(item)),
                            ));
                        };
                        entries.push(parse_entry(ty, s, &item_loc)?);
                    }
                }
                entries
            }
            _ => {
                return Err(malformed(
                    loc,
                    "must be \"*\" or an object such as {\"AWS\": \"arn:aws:iam::111122223333:root\"}",
                ))
            }
        };
        Ok(Principals { entries })
    }

    fn entry_match(entry: &Entry, c: &Caller) -> Match {
        let hit = match entry {
            Entry::Any => return Match::Direct,
            Entry::Account(a) => {
                if c.account.as_deref() != Some(a.as_str()) {
                    return Match::No;
                }
                return if c.kind == CallerKind::Root {
                    Match::Direct
                } else {
                    Match::Delegated
                };
            }
            Entry::Exact(arn) | Entry::Other(arn) => *arn == c.arn,
            Entry::User(user) => c.kind == CallerKind::User && user.is(c, c.user_name()),
            Entry::Role(role) => {
                matches!(c.kind, CallerKind::Role | CallerKind::AssumedRole) && role.is(c, c.role_name.as_deref())
            }
            Entry::Service(s) => c.kind == CallerKind::Service && *s == c.arn,
        };
        if hit {
            Match::Direct
        } else {
            Match::No
        }
    }

    /// For `Principal`: how strongly the element names the caller.
    pub(crate) fn match_caller(&self, c: &Caller) -> Match {
        self.entries
            .iter()
            .map(|e| Self::entry_match(e, c))
            .max()
            .unwrap_or(Match::No)
    }

    /// For `NotPrincipal`: whether the statement applies to the caller, i.e. some identity of the
    /// caller is not listed.
    pub(crate) fn excludes_caller(&self, c: &Caller) -> bool {
        let facets: &[Facet] = match c.kind {
            CallerKind::Root => &[Facet::Account],
            CallerKind::AssumedRole => &[Facet::Itself, Facet::RoleOfSession, Facet::Account],
            CallerKind::Service => &[Facet::Itself],
            _ if c.account.is_none() => &[Facet::Itself],
            _ => &[Facet::Itself, Facet::Account],
        };
        !facets.iter().all(|f| self.entries.iter().any(|e| covers(e, *f, c)))
    }
}

fn covers(e: &Entry, facet: Facet, c: &Caller) -> bool {
    match (e, facet) {
        (Entry::Any, _) => true,
        (Entry::Account(a), Facet::Account) => c.account.as_deref() == Some(a.as_str()),
        (Entry::Exact(arn) | Entry::Other(arn), Facet::Itself) => *arn == c.arn,
        (Entry::User(user), Facet::Itself) => c.kind == CallerKind::User && user.is(c, c.user_name()),
        (Entry::Role(role), Facet::Itself) => c.kind == CallerKind::Role && role.is(c, c.role_name.as_deref()),
        (Entry::Role(role), Facet::RoleOfSession) => role.is(c, c.role_name.as_deref()),
        (Entry::Service(s), Facet::Itself) => c.kind == CallerKind::Service && *s == c.arn,
        _ => false,
    }
}

/// A user's or role's name: the last segment of its path.
fn last_segment(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// An IAM user or role as a policy names it: partition, account and name (the path left out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Named {
    partition: String,
    account: String,
    name: String,
}

impl Named {
    fn new(partition: &str, account: &str, path_and_name: &str) -> Named {
        Named {
            partition: partition.to_string(),
            account: account.to_string(),
            name: last_segment(path_and_name).to_string(),
        }
    }

    /// Whether the caller, known in its account by `name`, is this one.
    fn is(&self, c: &Caller, name: Option<&str>) -> bool {
        c.partition == self.partition && c.account.as_deref() == Some(self.account.as_str()) && name == Some(&self.name)
    }
}

const INVALID_PRINCIPAL: &str = "Policy contains a statement with one or more invalid principals";

fn parse_entry(ty: &str, s: &str, loc: &str) -> Result<Entry> {
    match ty {
        "AWS" => parse_aws(s, loc),
        "Service" => {
            let ok = !s.is_empty()
                && s.len() <= 256
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
                && s.contains('.');
            if ok {
                Ok(Entry::Service(s.to_ascii_lowercase()))
            } else {
                Err(malformed(
                    loc,
                    format!(
                        "{INVALID_PRINCIPAL}: a Service principal must be a service name such as logs.amazonaws.com"
                    ),
                ))
            }
        }
        "Federated" | "CanonicalUser" => {
            if s.is_empty() || s.contains(['*', '?']) {
                Err(malformed(
                    loc,
                    format!("{INVALID_PRINCIPAL}: wildcards are not allowed here"),
                ))
            } else {
                Ok(Entry::Other(s.to_string()))
            }
        }
        _ => Err(malformed(
            loc,
            "unknown principal type; expected AWS, Service, Federated or CanonicalUser",
        )),
    }
}

fn parse_aws(s: &str, loc: &str) -> Result<Entry> {
    if s == "*" {
        return Ok(Entry::Any);
    }
    if is_account_id(s) {
        return Ok(Entry::Account(s.to_string()));
    }
    let bad = |why: &str| malformed(loc, format!("{INVALID_PRINCIPAL}: {why}"));
    if s.contains(['*', '?']) {
        return Err(bad("wildcards are not allowed in a principal other than \"*\""));
    }
    let Some([partition, service, region, account, resource]) = split_arn(s) else {
        return Err(bad(
            "expected \"*\", a 12-digit account ID, or an ARN such as arn:aws:iam::111122223333:root",
        ));
    };
    if partition.is_empty() || !partition.bytes().all(|b| b.is_ascii_lowercase() || b == b'-') {
        return Err(bad("the ARN's partition is not valid"));
    }
    if !region.is_empty() {
        return Err(bad("an IAM principal ARN has no region"));
    }
    if !is_account_id(account) {
        return Err(bad("the ARN's account must be a 12-digit account ID"));
    }
    let named = |prefix: &str| {
        resource
            .strip_prefix(prefix)
            .filter(|rest| !rest.is_empty() && !rest.ends_with('/') && !rest.contains("//"))
    };
    match service {
        "iam" if resource == "root" => Ok(Entry::Account(account.to_string())),
        "iam" => match (named("user/"), named("role/")) {
            (Some(rest), _) => Ok(Entry::User(Named::new(partition, account, rest))),
            (_, Some(rest)) => Ok(Entry::Role(Named::new(partition, account, rest))),
            _ => Err(bad("an IAM principal must be root, user/<name> or role/<name>")),
        },
        "sts" => {
            let session_ok = named("assumed-role/").is_some_and(|r| r.split('/').count() == 2);
            if session_ok || named("federated-user/").is_some() {
                Ok(Entry::Exact(s.to_string()))
            } else {
                Err(bad(
                    "an STS principal must be assumed-role/<role>/<session> or federated-user/<name>",
                ))
            }
        }
        _ => Err(bad("the ARN's service must be iam or sts")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn p(v: Value) -> Result<Principals> {
        Principals::parse(&v, "Statement[0].Principal")
    }

    /// Five colons after `arn:` split it; the resource keeps any further colons; fewer parts are
    /// not an ARN.
    #[test]
    fn arns_split_into_five_parts() {
        assert_eq!(
            split_arn("arn:aws:kms:eu-west-1:111122223333:key/k"),
            Some(["aws", "kms", "eu-west-1", "111122223333", "key/k"])
        );
        assert_eq!(
            split_arn("arn:aws:iam::111122223333:role/a:b"),
            Some(["aws", "iam", "", "111122223333", "role/a:b"])
        );
        assert_eq!(split_arn("arn:::::"), Some(["", "", "", "", ""]));
        assert_eq!(split_arn("arn:aws:iam::111122223333"), None);
        assert_eq!(split_arn("aws:iam::111122223333:root"), None);
        assert_eq!(split_arn("arn:aws:kms:é:1:ü"), Some(["aws", "kms", "é", "1", "ü"]));
    }

    #[test]
    fn callers() {
        let c = Caller::parse("arn:aws:sts::111122223333:assumed-role/Admin/alice");
        assert_eq!(c.kind, CallerKind::AssumedRole);
        assert_eq!(c.role_name.as_deref(), Some("Admin"));
        assert_eq!(c.principal_arn().unwrap(), "arn:aws:iam::111122223333:role/Admin");
        let c = Caller::parse("111122223333");
        assert_eq!(c.kind, CallerKind::Root);
        assert_eq!(c.arn, "arn:aws:iam::111122223333:root");
        assert_eq!(Caller::parse("Logs.AmazonAWS.com").kind, CallerKind::Service);
        assert_eq!(Caller::parse("bob").kind, CallerKind::Unknown);
    }

    #[test]
    fn matching() {
        let user = Caller::parse("arn:aws:iam::111122223333:user/alice");
        let root = Caller::parse("arn:aws:iam::111122223333:root");
        let other = Caller::parse("arn:aws:iam::444455556666:user/alice");
        let acct = p(json!({"AWS": "111122223333"})).unwrap();
        assert_eq!(acct.match_caller(&user), Match::Delegated);
        assert_eq!(acct.match_caller(&root), Match::Direct);
        assert_eq!(acct.match_caller(&other), Match::No);
        let alice = p(json!({"AWS": ["arn:aws:iam::111122223333:user/alice"]})).unwrap();
        assert_eq!(alice.match_caller(&user), Match::Direct);
        assert_eq!(alice.match_caller(&other), Match::No);
        let role = p(json!({"AWS": "arn:aws:iam::111122223333:role/ops/Admin"})).unwrap();
        let session = Caller::parse("arn:aws:sts::111122223333:assumed-role/Admin/s1");
        assert_eq!(role.match_caller(&session), Match::Direct);
        assert_eq!(p(json!("*")).unwrap().match_caller(&other), Match::Direct);
    }

    /// IAM names a user or role once in an account, whatever its path: a policy naming it with
    /// another path (or none) still names it, for Allow, Deny and NotPrincipal alike, and the
    /// same name in another account or of another kind does not.
    #[test]
    fn users_and_roles_are_named_by_account_and_name_whatever_the_path() {
        let cases = [
            (
                "arn:aws:iam::111122223333:role/Admin",
                "arn:aws:iam::111122223333:role/ops/Admin",
            ),
            (
                "arn:aws:iam::111122223333:role/ops/Admin",
                "arn:aws:iam::111122223333:role/Admin",
            ),
            (
                "arn:aws:iam::111122223333:user/Bob",
                "arn:aws:iam::111122223333:user/div/Bob",
            ),
            (
                "arn:aws:iam::111122223333:user/div/Bob",
                "arn:aws:iam::111122223333:user/Bob",
            ),
        ];
        for (named, caller) in cases {
            let entry = p(json!({"AWS": named})).unwrap();
            let c = Caller::parse(caller);
            assert_eq!(entry.match_caller(&c), Match::Direct, "{named} names {caller}");
            let exempt = p(json!({"AWS": [named, "111122223333"]})).unwrap();
            assert!(!exempt.excludes_caller(&c), "NotPrincipal {named} exempts {caller}");
        }
        // A session is exempt when its role is listed under any path, with the session and account.
        let session = Caller::parse("arn:aws:sts::111122223333:assumed-role/Admin/s");
        let listed = |role: &str| {
            p(json!({"AWS": [role, "arn:aws:sts::111122223333:assumed-role/Admin/s", "111122223333"]})).unwrap()
        };
        assert!(!listed("arn:aws:iam::111122223333:role/ops/Admin").excludes_caller(&session));
        assert!(listed("arn:aws:iam::111122223333:role/ops/Other").excludes_caller(&session));
        for (named, caller) in [
            (
                "arn:aws:iam::111122223333:role/Admin",
                "arn:aws:iam::444455556666:role/Admin",
            ),
            (
                "arn:aws:iam::111122223333:role/Admin",
                "arn:aws:iam::111122223333:user/Admin",
            ),
            (
                "arn:aws:iam::111122223333:user/Bob",
                "arn:aws:iam::111122223333:role/Bob",
            ),
            (
                "arn:aws:iam::111122223333:user/Bob",
                "arn:aws:sts::111122223333:assumed-role/Bob/s",
            ),
            (
                "arn:aws:iam::111122223333:user/ops/Bob",
                "arn:aws:iam::111122223333:user/ops/Bobby",
            ),
            (
                "arn:aws:iam::111122223333:role/Admin",
                "arn:aws:iam::111122223333:role/admin",
            ),
            (
                "arn:aws-cn:iam::111122223333:role/Admin",
                "arn:aws:iam::111122223333:role/Admin",
            ),
            (
                "arn:aws-cn:iam::111122223333:user/Bob",
                "arn:aws:iam::111122223333:user/Bob",
            ),
            (
                "arn:aws:iam::111122223333:role/Admin",
                "arn:aws-cn:sts::111122223333:assumed-role/Admin/s",
            ),
        ] {
            let entry = p(json!({"AWS": named})).unwrap();
            let c = Caller::parse(caller);
            assert_eq!(entry.match_caller(&c), Match::No, "{named} does not name {caller}");
            let listed = p(json!({"AWS": [named, "111122223333", "444455556666"]})).unwrap();
            assert!(
                listed.excludes_caller(&c),
                "NotPrincipal {named} does not exempt {caller}"
            );
        }
    }

    #[test]
    fn not_principal_needs_every_identity_listed() {
        let user = Caller::parse("arn:aws:iam::111122223333:user/alice");
        let only_user = p(json!({"AWS": "arn:aws:iam::111122223333:user/alice"})).unwrap();
        assert!(only_user.excludes_caller(&user));
        let both = p(json!({"AWS": ["arn:aws:iam::111122223333:user/alice", "111122223333"]})).unwrap();
        assert!(!both.excludes_caller(&user));
        assert!(both.excludes_caller(&Caller::parse("arn:aws:iam::111122223333:user/bob")));
        assert!(!both.excludes_caller(&Caller::parse("111122223333")));
    }

    #[test]
    fn invalid_principals() {
        for bad in [
            json!("bob"),
            json!({"AWS": "arn:aws:iam::111122223333:user/*"}),
            json!({"AWS": "arn:aws:iam::1111:root"}),
            json!({"AWS": "arn:aws:s3:::bucket"}),
            json!({"AWS": "arn:aws:iam::111122223333:group/devs"}),
            json!({"AWS": []}),
            json!({"AWS": 111122223333u64}),
            json!({"Bogus": "x"}),
            json!({}),
            json!({"Service": "not a service"}),
        ] {
            let e = p(bad.clone()).unwrap_err().to_string();
            assert!(e.starts_with("Statement[0].Principal"), "{bad}: {e}");
        }
    }
}
