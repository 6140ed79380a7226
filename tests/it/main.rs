//! Integration tests: the real `kms` binary, a real PKCS#11 token, the generated tonic client.

mod aliases_tags;
mod asymmetric;
mod auth;
mod common;
mod crypto;
mod custody;
mod dry_run;
mod embedded;
mod faults;
mod grants;
mod hmac;
mod keys;
mod lifecycle;
mod limits;
mod persistence;
mod policies;
mod root_attrs;
mod root_key;
mod tls;
mod validation;
