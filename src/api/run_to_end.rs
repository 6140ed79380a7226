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
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use tokio::sync::Semaphore;
use tonic::body::Body;
use tonic::codegen::http::{Request, Response};
use tonic::codegen::Service;
use tonic::server::NamedService;

use super::budget::is_refusal;
use super::panics::{panicked, CatchUnwind};
use super::preauth::method_name;
use super::status::without_request_id;
use super::Answer;
use crate::error::KmsError;

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

/// In a state change's extensions (put there by `preauth.rs`): set once its task is spawned. From
/// then on the change runs to the end and writes its own outcome record, whatever becomes of the
/// request; before, dropping the request drops the change, which has not begun.
#[derive(Clone, Default)]
pub struct Spawned(Arc<AtomicBool>);

impl Spawned {
    pub fn happened(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// Writes the audit record of a state change's panic and gives the answer to it, with the
/// request's id (`preauth.rs` puts one in a state change's extensions). The change's task runs
/// it, not the request: once the client has reset the request, or it ran past the request
/// timeout, nobody else would, and the change's `Started` record would have no outcome.
#[derive(Clone)]
pub struct PanicRecorder(pub Arc<dyn Fn() -> RecordedAnswer + Send + Sync>);

/// The answer to a panic, once its record is written.
pub type RecordedAnswer = Pin<Box<dyn Future<Output = Response<Body>> + Send>>;

/// Whether `method` (the gRPC method's name) writes to the store.
pub fn changes_state(method: &str) -> bool {
    CHANGES_STATE.contains(&method)
}

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

    /// How many detached requests are running now (before `drained`, or after it failed).
    pub fn running(&self) -> usize {
        self.limit.saturating_sub(self.permits.available_permits())
    }

    /// Waits until no detached request is running, at most `limit`, and then lets none start
    /// (a late one is refused as UNAVAILABLE: it would be cut short with the runtime, its change
    /// landing without its audit record). False if some are still running.
    pub async fn drained(&self, limit: Duration) -> bool {
        let drained = match tokio::time::timeout(limit, self.permits.acquire_many(self.limit as u32)).await {
            Ok(Ok(all)) => {
                all.forget();
                true
            }
            _ => false,
        };
        self.permits.close();
        drained
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

impl<S> Service<Request<Body>> for RunToEnd<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible> + NamedService + Clone + Send + 'static,
    S::Future: Unpin + Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Call<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let method = method_name(request.uri().path(), S::NAME).unwrap_or("");
        if !changes_state(method) {
            return Call::Inline(self.inner.call(request));
        }
        let mut inner = self.inner.clone();
        let permits = self.detached.permits.clone();
        Call::Detached(Box::pin(async move {
            // The message first: a client that never sends its body must not hold a turn (nor a
            // task the stopping server waits for). Until the spawn, nothing has started, and
            // giving up (the client's reset, or the request timeout in `preauth.rs`) cancels
            // cleanly.
            // The body is kept until the change is over: it holds the request's charge against
            // the budget of request bytes in flight (`budget.rs`), and its message is held as long.
            let (mut parts, mut body) = request.into_parts();
            let message = match read_message(&mut body).await {
                Ok(message) => message,
                Err(status) => return Ok(status.into_http()),
            };
            let Ok(permit) = permits.acquire_owned().await else {
                return Ok(stopping().into_http());
            };
            if let Some(spawned) = parts.extensions.get::<Spawned>() {
                spawned.0.store(true, Ordering::Release);
            }
            let recorder = parts.extensions.remove::<PanicRecorder>();
            let call = inner.call(Request::from_parts(parts, Body::new(Full::new(message))));
            let task = tokio::spawn(async move {
                let answer = match (CatchUnwind(call).await, recorder) {
                    (Ok(answer), _) => answer,
                    // The handler panicked: recorded here, whether or not the request is still
                    // waiting, with its turn still held (a stopping server waits for it).
                    (Err(()), Some(record)) => Ok((record.0)().await),
                    // Without a recorder (tests): answered as `panics.rs` answers a panic on the
                    // connection's task, for the authentication wrapper to audit.
                    (Err(()), None) => Ok(panicked().into_http()),
                };
                drop((permit, body));
                answer
            });
            match task.await {
                Ok(answer) => answer,
                // Only the recorder itself could panic here (tasks are never aborted).
                Err(_) => Ok(panicked().into_http()),
            }
        }))
    }
}

/// The answer to a change that would start after the server began to stop: UNAVAILABLE, which
/// clients retry (on another server, or this one once it is back), without a request id (the
/// authentication wrapper, `preauth.rs`, adds one and audits it).
fn stopping() -> tonic::Status {
    without_request_id(&KmsError::ServiceUnavailable(
        "The server is stopping; the request was not carried out, retry it".into(),
    ))
}

/// The request's body, read whole. Reading stops just past the size cap (plus gRPC's 5-byte frame
/// header): what was read is enough for the service to refuse it as too large from the frame's
/// declared length.
async fn read_message(body: &mut Body) -> Result<Bytes, tonic::Status> {
    let limit = super::server::limits::MAX_REQUEST_BYTES + 5;
    let mut message = BytesMut::new();
    while let Some(frame) = body.frame().await {
        // The budget's refusal is the answer as it is; any other failure is the client's.
        let frame = frame.map_err(|e| match is_refusal(&e) {
            true => e,
            false => tonic::Status::cancelled(format!("the request body failed: {e}")),
        })?;
        if let Ok(data) = frame.into_data() {
            message.extend_from_slice(&data);
            if message.len() > limit {
                break;
            }
        }
    }
    Ok(message.freeze())
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

    use crate::api::test_service::{request, FnService};

    /// Counts the calls that started; each then waits for `release`.
    #[derive(Clone, Default)]
    struct Blocking {
        started: Arc<AtomicUsize>,
        release: Arc<tokio::sync::Notify>,
    }

    impl Blocking {
        fn service(
            &self,
        ) -> impl Service<Request<Body>, Response = Response<Body>, Error = Infallible, Future: Unpin + Send>
               + NamedService
               + Clone
               + Send
               + 'static {
            let this = self.clone();
            FnService(move || {
                let (started, release) = (this.started.clone(), this.release.clone());
                async move {
                    started.fetch_add(1, Ordering::SeqCst);
                    release.notified().await;
                    Ok(Response::new(Body::empty()))
                }
            })
        }
    }

    /// Abandoned changes keep running, but no more than the limit at once; one still waiting for
    /// its turn when abandoned never starts; `drained` waits for the running ones, and after it
    /// none starts.
    #[tokio::test]
    async fn abandoned_changes_run_on_within_the_limit_and_are_drained() {
        let inner = Blocking::default();
        let detached = Detached::with_limit(2);
        let mut service = RunToEnd::new(inner.service(), detached.clone());
        for _ in 0..3 {
            let mut call = service.call(request("DisableKey"));
            // Poll once (the call starts or queues for a permit), then abandon it.
            let _ = futures_poll_once(&mut call).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let started = || inner.started.load(Ordering::SeqCst);
        assert_eq!(started(), 2, "two run on, the third never starts");
        assert_eq!(detached.permits.available_permits(), 0, "the two hold their turns");
        assert_eq!(detached.running(), 2);

        // Reads are not detached: abandoned, they stop, and they take no turn.
        let mut call = service.call(request("DescribeKey"));
        let _ = futures_poll_once(&mut call).await;
        drop(call);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(started(), 3, "it started when polled");
        assert_eq!(detached.permits.available_permits(), 0);

        let drain = tokio::spawn({
            let detached = detached.clone();
            async move { detached.drained(Duration::from_secs(5)).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        inner.release.notify_waiters();
        assert!(drain.await.unwrap(), "drained once the two finished");
        let late = service.call(request("DisableKey")).await.unwrap();
        assert_eq!(late.headers()["grpc-status"], "14", "UNAVAILABLE after the drain");
        assert_eq!(late.headers()[super::super::status::ERROR_TYPE], "ServiceUnavailable");
        assert!(
            !late.headers().contains_key(super::super::status::REQUEST_ID),
            "preauth adds it, with the record"
        );
        assert_eq!(started(), 3, "and it never started");
    }

    /// A change whose body never arrives takes no turn and starts nothing, and dropping it (as
    /// the request timeout does, `preauth.rs`) leaves nothing behind.
    #[tokio::test]
    async fn a_change_without_its_body_takes_no_turn() {
        let inner = Blocking::default();
        let detached = Detached::with_limit(1);
        let mut service = RunToEnd::new(inner.service(), detached.clone());
        let (_sender, silent) = http_body_util::channel::Channel::<Bytes, tonic::Status>::new(1);
        let mut request = request("DisableKey");
        *request.body_mut() = Body::new(silent);
        let call = tokio::spawn(service.call(request));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            detached.permits.available_permits(),
            1,
            "no turn taken while the body is awaited"
        );
        call.abort();
        assert!(call.await.unwrap_err().is_cancelled());
        assert_eq!(inner.started.load(Ordering::SeqCst), 0);
        assert!(
            detached.drained(Duration::from_millis(100)).await,
            "nothing to wait for"
        );
    }

    /// A change whose handler panics (in its own task, where `CatchPanic` doesn't see it) is
    /// answered as `panics.rs` answers, and gives its turn back.
    #[tokio::test]
    async fn a_change_whose_handler_panics_gets_an_internal_exception_to_be_audited() {
        let detached = Detached::with_limit(1);
        let mut service = RunToEnd::new(FnService(|| async { panic!("a handler bug") }), detached.clone());
        let answer = service.call(request("DisableKey")).await.unwrap();
        let headers = answer.headers();
        assert_eq!(headers["grpc-status"], "13", "INTERNAL");
        assert_eq!(headers[super::super::status::ERROR_TYPE], "KMSInternalException");
        assert!(!headers.contains_key(super::super::status::REQUEST_ID));
        assert_eq!(detached.permits.available_permits(), 1);
    }

    /// A change whose handler panics records the panic itself, through the recorder the
    /// authentication wrapper gave it: also when its request was abandoned (reset, timed out)
    /// before the panic, when nobody else would record it.
    #[tokio::test]
    async fn a_change_that_panics_records_it_even_when_abandoned() {
        use super::super::status::REQUEST_ID;
        let detached = Detached::with_limit(1);
        let mut service = RunToEnd::new(
            FnService(|| async {
                tokio::time::sleep(Duration::from_millis(50)).await;
                panic!("a handler bug")
            }),
            detached.clone(),
        );
        let recorded = Arc::new(AtomicUsize::new(0));
        let recorder = {
            let recorded = recorded.clone();
            PanicRecorder(Arc::new(move || {
                recorded.fetch_add(1, Ordering::SeqCst);
                Box::pin(async {
                    let mut answer = panicked().into_http();
                    answer.headers_mut().insert(REQUEST_ID, "req-7".parse().unwrap());
                    answer
                })
            }))
        };
        let with_recorder = || {
            let mut r = request("DisableKey");
            r.extensions_mut().insert(recorder.clone());
            r
        };
        let answer = service.call(with_recorder()).await.unwrap();
        assert_eq!(answer.headers()[REQUEST_ID], "req-7", "the recorder's answer");
        assert_eq!(recorded.load(Ordering::SeqCst), 1);

        let mut call = service.call(with_recorder());
        let _ = futures_poll_once(&mut call).await;
        drop(call);
        assert!(detached.drained(Duration::from_secs(5)).await);
        assert_eq!(recorded.load(Ordering::SeqCst), 2, "recorded though abandoned");
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
