//! Requests that change state run to the end even when their client goes away. hyper drops a
//! request's future when the stream is reset (a client deadline, a closed connection); a change
//! whose store write had already begun would still land, but its audit record, written after the
//! operation returns, would never be: a key disabled or deleted with no trace. Those requests run
//! in a task of their own, which finishes and audits whatever the client does. Reads and crypto
//! operations change nothing, so they stay on the connection's task (no spawn on the hot path).
//!
//! Detached requests are bounded (a client resetting each stream at once would otherwise pile up
//! work past HTTP/2's stream limit), and the server waits for them when it stops (`Detached`).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::Semaphore;
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

/// At most this many state-changing requests run at once; more wait (cancellably) for a turn.
const MAX_DETACHED: usize = 1024;

/// Bounds the detached requests and lets the server wait for them: each holds a permit until it
/// has finished (audit record included).
#[derive(Clone)]
pub struct Detached {
    permits: Arc<Semaphore>,
    limit: usize,
}

impl Default for Detached {
    fn default() -> Self {
        Detached::with_limit(MAX_DETACHED)
    }
}

impl Detached {
    fn with_limit(limit: usize) -> Self {
        Detached {
            permits: Arc::new(Semaphore::new(limit)),
            limit,
        }
    }

    /// Waits until no detached request is running, at most `limit`; false if some still are.
    pub async fn drained(&self, limit: Duration) -> bool {
        tokio::time::timeout(limit, self.permits.acquire_many(self.limit as u32))
            .await
            .is_ok_and(|permits| permits.is_ok())
    }
}

/// Wraps the KMS service: `/kms.v1.KeyManagementService/<Method>` requests for the methods in
/// `CHANGES_STATE` are spawned.
#[derive(Clone)]
pub struct RunToEnd<S> {
    inner: S,
    detached: Detached,
}

impl<S> RunToEnd<S> {
    pub fn new(inner: S, detached: Detached) -> Self {
        RunToEnd { inner, detached }
    }
}

impl<S: NamedService> NamedService for RunToEnd<S> {
    const NAME: &'static str = S::NAME;
}

type Answer = Result<Response<Body>, Infallible>;

impl<S> Service<Request<Body>> for RunToEnd<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
    S::Future: Unpin + Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Call<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let method = request.uri().path().rsplit('/').next().unwrap_or("");
        let changes_state = CHANGES_STATE.contains(&method);
        let call = self.inner.call(request);
        if !changes_state {
            return Call::Inline(call);
        }
        let permits = self.detached.permits.clone();
        Call::Detached(Box::pin(async move {
            // Waiting for a turn is still cancellable: nothing has started yet.
            let Ok(permit) = permits.acquire_owned().await else {
                return Ok(tonic::Status::unavailable("the server is stopping").into_http());
            };
            let task = tokio::spawn(async move {
                let answer = call.await;
                drop(permit);
                answer
            });
            match task.await {
                Ok(answer) => answer,
                // The handler panicked (tasks are never aborted): the client gets an error.
                Err(_) => Ok(tonic::Status::internal("the request failed").into_http()),
            }
        }))
    }
}

pub enum Call<F> {
    Inline(F),
    Detached(Pin<Box<dyn Future<Output = Answer> + Send>>),
}

impl<F> Future for Call<F>
where
    F: Future<Output = Answer> + Unpin,
{
    type Output = Answer;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Call::Inline(call) => Pin::new(call).poll(cx),
            Call::Detached(call) => call.as_mut().poll(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// A service whose calls count themselves and then wait for `release`.
    #[derive(Clone)]
    struct Blocking {
        started: Arc<AtomicUsize>,
        release: Arc<tokio::sync::Notify>,
    }

    impl Service<Request<Body>> for Blocking {
        type Response = Response<Body>;
        type Error = Infallible;
        type Future = Pin<Box<dyn Future<Output = Answer> + Send>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: Request<Body>) -> Self::Future {
            let (started, release) = (self.started.clone(), self.release.clone());
            Box::pin(async move {
                started.fetch_add(1, Ordering::SeqCst);
                release.notified().await;
                Ok(Response::new(Body::empty()))
            })
        }
    }

    fn request(method: &str) -> Request<Body> {
        Request::builder()
            .uri(format!("/kms.v1.KeyManagementService/{method}"))
            .body(Body::empty())
            .unwrap()
    }

    /// Abandoned changes keep running, but no more than the limit at once; one still waiting for
    /// its turn when abandoned never starts; and `drained` waits for the running ones.
    #[tokio::test]
    async fn abandoned_changes_run_on_within_the_limit_and_are_drained() {
        let inner = Blocking {
            started: Arc::new(AtomicUsize::new(0)),
            release: Arc::new(tokio::sync::Notify::new()),
        };
        let detached = Detached::with_limit(2);
        let mut service = RunToEnd::new(inner.clone(), detached.clone());
        for _ in 0..3 {
            let mut call = service.call(request("DisableKey"));
            // Poll once (the call starts or queues for a permit), then abandon it.
            let _ = futures_poll_once(&mut call).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            inner.started.load(Ordering::SeqCst),
            2,
            "two run on, the third never starts"
        );
        assert!(
            !detached.drained(Duration::from_millis(50)).await,
            "two are still running"
        );
        inner.release.notify_waiters();
        assert!(detached.drained(Duration::from_secs(5)).await);

        // Reads are not detached: abandoned, they stop.
        let mut call = service.call(request("DescribeKey"));
        let _ = futures_poll_once(&mut call).await;
        drop(call);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(inner.started.load(Ordering::SeqCst), 3, "it started when polled");
        assert!(detached.drained(Duration::from_millis(50)).await, "and holds no permit");
    }

    /// Polls a future once and gives up on it.
    async fn futures_poll_once<F: Future + Unpin>(f: &mut F) -> Poll<F::Output> {
        std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut *f).poll(cx))).await
    }

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
        // Every other method reads or does cryptography: named one by one, so that a new method
        // is classified by someone, not by its name's prefix.
        let reads_or_crypto = |m: &str| {
            [
                "DescribeKey",
                "ListKeys",
                "GetKeyPolicy",
                "ListKeyPolicies",
                "ListAliases",
                "ListResourceTags",
                "ListGrants",
                "ListRetirableGrants",
                "GetPublicKey",
                "Encrypt",
                "Decrypt",
                "ReEncrypt",
                "GenerateDataKey",
                "GenerateDataKeyWithoutPlaintext",
                "GenerateRandom",
                "GenerateDataKeyPair",
                "GenerateDataKeyPairWithoutPlaintext",
                "Sign",
                "Verify",
                "GenerateMac",
                "VerifyMac",
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
