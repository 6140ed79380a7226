//! hsm-sim: a PKCS#11 v2.40 software token with on-disk persistence and
//! fault injection. The C boundary lives in `ffi`; everything behind it is
//! safe Rust returning `Result<_, CK_RV>`.
#![warn(clippy::undocumented_unsafe_blocks)]
#![deny(unsafe_op_in_unsafe_fn)]

pub mod attrs;
pub mod config;
pub mod faults;
mod ffi;
pub mod mechanisms;
pub mod module;
pub mod object;
pub mod ops;
pub mod pin;
pub mod session;
pub mod store;
pub mod token;

/// Result type of everything behind the C boundary.
pub type Rv<T> = Result<T, cryptoki_sys::CK_RV>;
