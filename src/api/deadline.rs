//! The request timeout for the services beside the KMS one (health, reflection): an answer not
//! begun after `limits.request_timeout_seconds` (a health Check whose body trickles in, or never
//! ends) is DEADLINE_EXCEEDED, and the charge its body holds against the request budget goes with
//! it. Like tonic's timeout before it, this bounds the wait for the answer's headers only: a
//! stream already answered (reflection's, a health Watch) is not cut by it, and its body stays
//! charged while it is open. The KMS service's requests are timed in `preauth.rs`, which also
//! audits them; tonic's server-wide timeout is not used, so that a KMS request pays for one
//! timer, not two.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tonic::body::Body;
use tonic::codegen::http::{Request, Response};
use tonic::codegen::Service;
use tonic::server::NamedService;

use super::status::without_request_id;
use super::Answer;
use crate::error::KmsError;

#[derive(Clone)]
pub struct Deadline<S> {
    inner: S,
    limit: Duration,
}

impl<S> Deadline<S> {
    pub fn new(inner: S, limit: Duration) -> Self {
        Deadline { inner, limit }
    }
}

impl<S: NamedService> NamedService for Deadline<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> Service<Request<Body>> for Deadline<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Answer> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let (call, limit) = (self.inner.call(request), self.limit);
        Box::pin(async move {
            tokio::time::timeout(limit, call).await.unwrap_or_else(|_| {
                let e = KmsError::DependencyTimeout(format!(
                    "The request did not complete within {} s (limits.request_timeout_seconds)",
                    limit.as_secs()
                ));
                Ok(without_request_id(&e).into_http())
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::api::test_service::{request, FnService};

    #[tokio::test]
    async fn an_answer_past_the_limit_is_deadline_exceeded_and_one_in_time_passes() {
        let slow = FnService(|| async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok(Response::new(Body::empty()))
        });
        let limit = Duration::from_millis(200);
        let late = tokio::time::timeout(
            Duration::from_secs(5),
            Deadline::new(slow, limit).call(request("Check")),
        )
        .await
        .expect("answered at the limit")
        .unwrap();
        assert_eq!(late.headers()["grpc-status"], "4", "DEADLINE_EXCEEDED");
        assert_eq!(
            late.headers()[super::super::status::ERROR_TYPE],
            "DependencyTimeoutException"
        );

        let quick = FnService(|| async { Ok(Response::new(Body::empty())) });
        let answer = Deadline::new(quick, limit).call(request("Check")).await.unwrap();
        assert!(!answer.headers().contains_key("grpc-status"), "answered as it was");
    }
}
