//! Health `Watch` streams that end. A Watch stream lasts as long as its client keeps it, and gRPC
//! clients with client-side health checking open one on every connection. hyper closes a
//! connection past `limits.max_connection_age_seconds` only once its streams are over, and a
//! stopping server waits for them too (up to its grace), so one Watch stream kept a connection
//! open for ever. Here a Watch stream ends with UNAVAILABLE once it is as old as the connection
//! age limit (then its connection, at least that old, closes; the client watches again on a new
//! one), or when the server stops. Updates already due are sent first: a watcher sees the
//! NOT_SERVING that a stopping server sets before its stream ends.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use tonic::body::Body;
use tonic::codegen::http::{HeaderMap, Request, Response};
use tonic::codegen::Service;
use tonic::server::NamedService;
use tonic::Status;

use super::Answer;

const WATCH_PATH: &str = "/grpc.health.v1.Health/Watch";

/// Wraps the health service: each Watch stream ends after `max_age` (if any) or when `stopped`
/// turns true.
#[derive(Clone)]
pub struct EndingWatches<S> {
    inner: S,
    max_age: Option<Duration>,
    stopped: tokio::sync::watch::Receiver<bool>,
}

impl<S> EndingWatches<S> {
    pub fn new(inner: S, max_age: Option<Duration>, stopped: tokio::sync::watch::Receiver<bool>) -> Self {
        EndingWatches {
            inner,
            max_age,
            stopped,
        }
    }
}

impl<S: NamedService> NamedService for EndingWatches<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> Service<Request<Body>> for EndingWatches<S>
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
        let watch = request.uri().path() == WATCH_PATH;
        let answer = self.inner.call(request);
        if !watch {
            return Box::pin(answer);
        }
        let end = Box::pin(end_of_watch(self.max_age, self.stopped.clone()));
        Box::pin(async move {
            let response = answer.await?;
            Ok(response.map(|inner| Body::new(Ending { inner, end: Some(end) }.boxed_unsync())))
        })
    }
}

/// Why a Watch stream ends, when it must.
async fn end_of_watch(max_age: Option<Duration>, mut stopped: tokio::sync::watch::Receiver<bool>) -> &'static str {
    let aged = async {
        match max_age {
            Some(age) => tokio::time::sleep(age).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        () = aged => "The stream is as old as a connection may be: watch again",
        // A dropped sender is a server gone too.
        _ = stopped.wait_for(|s| *s) => "The server is stopping",
    }
}

/// A Watch response body that ends, with UNAVAILABLE in its trailers, once `end` is ready and no
/// update is waiting.
struct Ending {
    inner: Body,
    end: Option<Pin<Box<dyn Future<Output = &'static str> + Send>>>,
}

impl HttpBody for Ending {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = &mut *self;
        let Some(end) = this.end.as_mut() else {
            return Poll::Ready(None);
        };
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            if frame.is_none() {
                this.end = None;
            }
            return Poll::Ready(frame);
        }
        let Poll::Ready(why) = end.as_mut().poll(cx) else {
            return Poll::Pending;
        };
        this.end = None;
        let mut trailers = HeaderMap::new();
        let status = Status::unavailable(why);
        match status.add_header(&mut trailers) {
            Ok(()) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            Err(e) => Poll::Ready(Some(Err(e))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.end.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body that sends `updates` and then nothing, never ending.
    fn never_ending(updates: Vec<&'static [u8]>) -> Body {
        let (mut tx, rx) = http_body_util::channel::Channel::<Bytes, Status>::new(updates.len().max(1));
        for u in updates {
            tx.try_send(Frame::data(Bytes::from_static(u))).unwrap();
        }
        std::mem::forget(tx); // the sender stays: the body never ends by itself
        Body::new(rx)
    }

    fn ending(inner: Body, max_age: Option<Duration>, stopped: tokio::sync::watch::Receiver<bool>) -> Ending {
        Ending {
            inner,
            end: Some(Box::pin(end_of_watch(max_age, stopped))),
        }
    }

    /// The frames of `body` until it ends, with the grpc-status of its trailers.
    async fn frames(mut body: Ending) -> (Vec<Bytes>, Option<String>) {
        let mut data = Vec::new();
        while let Some(frame) = body.frame().await {
            match frame.unwrap().into_data() {
                Ok(d) => data.push(d),
                Err(f) => {
                    let trailers = f.into_trailers().unwrap();
                    let status = trailers.get("grpc-status").unwrap().to_str().unwrap().to_string();
                    assert!(body.is_end_stream());
                    return (data, Some(status));
                }
            }
        }
        (data, None)
    }

    #[tokio::test]
    async fn a_watch_ends_with_unavailable_at_the_age_limit_after_its_updates() {
        let (_stop, stopped) = tokio::sync::watch::channel(false);
        let body = ending(
            never_ending(vec![b"serving"]),
            Some(Duration::from_millis(300)),
            stopped,
        );
        let started = std::time::Instant::now();
        let (data, status) = frames(body).await;
        assert_eq!(data, vec![Bytes::from_static(b"serving")]);
        assert_eq!(status.as_deref(), Some("14"));
        let elapsed = started.elapsed();
        assert!(
            elapsed >= Duration::from_millis(300),
            "ended before its age: {elapsed:?}"
        );
    }

    #[tokio::test]
    async fn a_watch_ends_when_the_server_stops_and_not_before() {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let body = ending(never_ending(vec![b"serving", b"not serving"]), None, stopped);
        let read = tokio::spawn(frames(body));
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(!read.is_finished(), "a watch without an age limit ended by itself");
        stop.send(true).unwrap();
        let (data, status) = read.await.unwrap();
        assert_eq!(data.len(), 2, "updates due before the stop are sent");
        assert_eq!(status.as_deref(), Some("14"));
    }
}
