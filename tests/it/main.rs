//! Integration tests: the real `kms` binary, a real PKCS#11 token, the generated tonic client.

mod common;
mod custody;
mod lifecycle;
mod persistence;
