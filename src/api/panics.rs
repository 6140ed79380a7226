//! A handler that panics gets an answer, and an audit record. Without this a panic in a read or
//! crypto handler (run on its connection's task) reset the stream with no answer a client could
//! act on and no record; one in a state change (run in a task of its own, `run_to_end.rs`)
//! answered a bare INTERNAL and left only its STARTED record. Both now answer
//! KMSInternalException without a request id, which the authentication wrapper (`preauth.rs`)
//! gives the request's own id and writes an audit record for, as for every answer given outside
//! an operation. A state change's STARTED record has that id too, so the two records go together.
//! Catching costs a few hundred instructions per request (BENCHMARKS.md, "Session 17").

use std::convert::Infallible;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::task::{Context, Poll};

use tonic::body::Body;
use tonic::codegen::http::{Request, Response};
use tonic::codegen::Service;
use tonic::server::NamedService;

use super::status::without_request_id;
use super::Answer;
use crate::error::KmsError;

/// The answer to a request whose handler panicked.
pub fn panicked() -> tonic::Status {
    without_request_id(&KmsError::Internal(
        "The request failed inside the server; check whether its change was made before retrying it".into(),
    ))
}

/// Wraps a service: a panic while its answer is computed becomes [`panicked`].
#[derive(Clone)]
pub struct CatchPanic<S> {
    inner: S,
}

impl<S> CatchPanic<S> {
    pub fn new(inner: S) -> Self {
        CatchPanic { inner }
    }
}

impl<S: NamedService> NamedService for CatchPanic<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> Service<Request<Body>> for CatchPanic<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
    S::Future: Unpin,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Caught<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        match catch_unwind(AssertUnwindSafe(|| self.inner.call(request))) {
            Ok(call) => Caught(Some(call)),
            Err(_) => Caught(None),
        }
    }
}

/// The inner service's answer, or [`panicked`] once it has panicked (None: it panicked when
/// called).
pub struct Caught<F>(Option<F>);

impl<F> Future for Caught<F>
where
    F: Future<Output = Answer> + Unpin,
{
    type Output = Answer;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Answer> {
        let Some(call) = self.0.as_mut() else {
            return Poll::Ready(Ok(panicked().into_http()));
        };
        match catch_unwind(AssertUnwindSafe(|| Pin::new(call).poll(cx))) {
            Ok(answer) => answer,
            Err(_) => {
                // Never polled again; dropped here, not when the connection lets go of it.
                self.0 = None;
                Poll::Ready(Ok(panicked().into_http()))
            }
        }
    }
}

/// A future's output, or `Err(())` once it panicked (it is not polled again).
pub struct CatchUnwind<F>(pub F);

impl<F: Future + Unpin> Future for CatchUnwind<F> {
    type Output = Result<F::Output, ()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match catch_unwind(AssertUnwindSafe(|| Pin::new(&mut self.0).poll(cx))) {
            Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(_) => Poll::Ready(Err(())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::status::{ERROR_TYPE, REQUEST_ID};

    use crate::api::test_service::{request, FnService};

    /// A handler that panics once polled, or answers OK when `fine`.
    fn handler(
        fine: bool,
    ) -> CatchPanic<impl Service<Request<Body>, Response = Response<Body>, Error = Infallible, Future: Unpin>> {
        CatchPanic::new(FnService(move || async move {
            tokio::task::yield_now().await;
            assert!(fine, "a handler bug");
            Ok(Response::new(Body::empty()))
        }))
    }

    #[tokio::test]
    async fn a_panicking_handler_is_answered_kms_internal_exception_without_a_request_id() {
        let answer = handler(false).call(request("Decrypt")).await.unwrap();
        let headers = answer.headers();
        assert_eq!(headers["grpc-status"], "13", "INTERNAL");
        assert_eq!(headers[ERROR_TYPE], "KMSInternalException");
        assert!(
            !headers.contains_key(REQUEST_ID),
            "the wrapper outside adds it, with the record"
        );
        let answer = handler(true).call(request("Decrypt")).await.unwrap();
        assert!(
            !answer.headers().contains_key("grpc-status"),
            "a handler's answer passes as it is"
        );
    }
}
