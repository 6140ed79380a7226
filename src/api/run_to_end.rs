//! Requests that change state run to the end even when their client goes away. hyper drops a
//! request's future when the stream is reset (a client deadline, a closed connection); a change
//! whose store write had already begun would still land, but its audit record, written after the
//! operation returns, would never be: a key disabled or deleted with no trace. Those requests run
//! in a task of their own, which finishes and audits whatever the client does. Reads and crypto
//! operations change nothing, so they stay on the connection's task (no spawn on the hot path).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::task::JoinHandle;
use tonic::body::Body;
use tonic::codegen::http::{Request, Response};
use tonic::codegen::Service;
use tonic::server::NamedService;

/// The methods that write to the store.
const CHANGES_STATE: &[&str] = &[
    "CreateKey",
    "UpdateKeyDescription",
    "EnableKey",
    "DisableKey",
    "ScheduleKeyDeletion",
    "CancelKeyDeletion",
    "PutKeyPolicy",
    "CreateAlias",
    "UpdateAlias",
    "DeleteAlias",
    "TagResource",
    "UntagResource",
    "CreateGrant",
    "RetireGrant",
    "RevokeGrant",
];

/// Wraps the KMS service: `/kms.v1.KeyManagementService/<Method>` requests for the methods in
/// `CHANGES_STATE` are spawned.
#[derive(Clone)]
pub struct RunToEnd<S>(pub S);

impl<S: NamedService> NamedService for RunToEnd<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> Service<Request<Body>> for RunToEnd<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
    S::Future: Unpin + Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Call<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let method = request.uri().path().rsplit('/').next().unwrap_or("");
        let changes_state = CHANGES_STATE.contains(&method);
        let call = self.0.call(request);
        if changes_state {
            Call::Spawned(tokio::spawn(call))
        } else {
            Call::Inline(call)
        }
    }
}

pub enum Call<F> {
    Inline(F),
    Spawned(JoinHandle<Result<Response<Body>, Infallible>>),
}

impl<F> Future for Call<F>
where
    F: Future<Output = Result<Response<Body>, Infallible>> + Unpin,
{
    type Output = Result<Response<Body>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Call::Inline(call) => Pin::new(call).poll(cx),
            Call::Spawned(task) => Pin::new(task).poll(cx).map(|joined| match joined {
                Ok(response) => response,
                // The handler panicked (tasks are never aborted): the client gets an error.
                Err(_) => Ok(tonic::Status::internal("the request failed").into_http()),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_methods_that_write_are_spawned() {
        let proto = include_str!("../../proto/kms/v1/kms.proto");
        let methods: Vec<&str> = proto
            .lines()
            .filter_map(|l| l.trim().strip_prefix("rpc "))
            .map(|l| l.split('(').next().unwrap().trim())
            .collect();
        assert!(methods.len() > 30, "{methods:?}");
        for m in CHANGES_STATE {
            assert!(methods.contains(m), "{m} is not a method of the service");
        }
        // Every method that isn't a read (Describe/List/Get), or a crypto operation, writes.
        let reads_or_crypto = |m: &str| {
            ["Describe", "List", "Get"].iter().any(|p| m.starts_with(p))
                || [
                    "Encrypt",
                    "Decrypt",
                    "ReEncrypt",
                    "GenerateDataKey",
                    "GenerateRandom",
                    "Sign",
                    "Verify",
                    "GenerateMac",
                    "VerifyMac",
                    "GenerateDataKeyWithoutPlaintext",
                    "GenerateDataKeyPair",
                    "GenerateDataKeyPairWithoutPlaintext",
                ]
                .contains(&m)
        };
        for m in &methods {
            assert_eq!(
                CHANGES_STATE.contains(m),
                !reads_or_crypto(m),
                "{m}: every state-changing method must run to the end, and only those"
            );
        }
    }
}
