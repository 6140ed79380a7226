//! Transports. gRPC only for now: `grpc` maps proto <-> domain types and errors, `server` runs it.

mod budget;
pub mod codec;
mod connections;
mod convert;
mod crl;
mod deadline;
mod grpc;
mod health_watch;
mod opening;
mod panics;
mod preauth;
mod refusals;
mod run_to_end;
pub(crate) mod server;
pub(crate) mod source_ip;
mod status;
#[cfg(test)]
mod test_service;
mod tls;

pub use server::{check_files, serve};

/// What every service wrapper here answers: a response, never a service error.
pub(crate) type Answer = Result<tonic::codegen::http::Response<tonic::body::Body>, std::convert::Infallible>;
