//! A KMS-shaped service for the wrappers' unit tests: each call answers with the future its
//! closure makes.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tonic::body::Body;
use tonic::codegen::http::{Request, Response};
use tonic::codegen::Service;
use tonic::server::NamedService;

pub(crate) use super::Answer;

#[derive(Clone)]
pub struct FnService<F>(pub F);

impl<F> NamedService for FnService<F> {
    const NAME: &'static str = "kms.v1.KeyManagementService";
}

impl<F, A> Service<Request<Body>> for FnService<F>
where
    F: FnMut() -> A,
    A: Future<Output = Answer> + Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Answer> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Request<Body>) -> Self::Future {
        Box::pin((self.0)())
    }
}

/// A request to `method` of the KMS service, with no body.
pub fn request(method: &str) -> Request<Body> {
    Request::builder()
        .uri(format!("/kms.v1.KeyManagementService/{method}"))
        .body(Body::empty())
        .unwrap()
}
