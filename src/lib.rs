//! kms: a key-management service with AWS KMS semantics whose root key stays in a PKCS#11 HSM.
//!
//! Data flows one way: `api` (transport) -> `ops` (operations) -> `hsm` / `store` -> `audit`.
//! Nothing below `ops` knows about gRPC; `api` knows nothing of cryptography.

pub mod api;
pub mod audit;
pub mod auth;
pub mod config;
pub mod core_dumps;
pub mod error;
pub mod hsm;
pub mod keys;
pub mod ops;
pub mod policy;
pub mod store;
#[cfg(test)]
mod test_certs;

/// The generated gRPC contract (package `kms.v1`).
pub mod proto {
    tonic::include_proto!("kms.v1");
    /// Encoded file descriptor set, served through gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("kms_descriptor");
}
