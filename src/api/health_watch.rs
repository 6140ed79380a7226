//! Health `Watch` streams that end. A Watch stream lasts as long as its client keeps it, and gRPC
//! clients with client-side health checking open one on every connection. hyper closes a
//! connection past `limits.max_connection_age_seconds` only once its streams are over, and a
//! stopping server waits for them too (up to its grace), so one Watch stream kept a connection
//! open for ever. Here a Watch stream ends with UNAVAILABLE once it is as old as the connection
//! age limit (then its connection, at least that old, closes; the client watches again on a new
//! one), or when the server stops. Updates already due are sent first: a watcher sees the
//! NOT_SERVING that a stopping server sets before its stream ends.
//!
//! A Watch needs no credentials and holds a task and tonic's buffers for as long as it lasts, and
//! its request bytes are given back once it starts: so a source address (an IPv6 /64) may hold
//! two per connection it may open (a client watches once per connection and service: the
//! server's and the KMS service's), and the server two per connection in all; past that a Watch
//! is refused with ThrottlingException (RESOURCE_EXHAUSTED), and the client's health checking
//! retries.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
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

use super::source_ip::remote_addr;
use super::status::without_request_id;
use super::Answer;
use crate::error::KmsError;

const WATCH_PATH: &str = "/grpc.health.v1.Health/Watch";

/// Watch streams open at once, from one source and in all.
#[derive(Clone, Copy)]
pub struct WatchCaps {
    pub per_source: usize,
    pub total: usize,
}

impl WatchCaps {
    /// Two per connection: one for the server, one for the KMS service.
    pub fn for_connections(limits: &super::connections::ConnectionLimits) -> WatchCaps {
        WatchCaps {
            per_source: limits.per_source().saturating_mul(2),
            total: limits.max().saturating_mul(2),
        }
    }
}

/// How many Watch streams are open, by source (None: no address known) and in all.
#[derive(Default)]
struct OpenWatches {
    by_source: HashMap<Option<IpAddr>, usize>,
    total: usize,
}

/// One open Watch stream, counted until it is dropped.
struct WatchSlot {
    open: Arc<Mutex<OpenWatches>>,
    source: Option<IpAddr>,
}

impl WatchSlot {
    fn take(open: &Arc<Mutex<OpenWatches>>, caps: WatchCaps, ip: Option<IpAddr>) -> Option<WatchSlot> {
        let source = ip.map(super::connections::source);
        let mut counts = open.lock().unwrap_or_else(|p| p.into_inner());
        let mine = counts.by_source.get(&source).copied().unwrap_or(0);
        if mine >= caps.per_source || counts.total >= caps.total {
            return None;
        }
        counts.by_source.insert(source, mine + 1);
        counts.total += 1;
        Some(WatchSlot {
            open: open.clone(),
            source,
        })
    }
}

impl Drop for WatchSlot {
    fn drop(&mut self) {
        let mut counts = self.open.lock().unwrap_or_else(|p| p.into_inner());
        counts.total -= 1;
        if let Some(n) = counts.by_source.get_mut(&self.source) {
            *n -= 1;
            if *n == 0 {
                counts.by_source.remove(&self.source);
            }
        }
    }
}

/// Wraps the health service: each Watch stream ends after `max_age` (if any) or when `stopped`
/// turns true.
#[derive(Clone)]
pub struct EndingWatches<S> {
    inner: S,
    max_age: Option<Duration>,
    stopped: tokio::sync::watch::Receiver<bool>,
    caps: WatchCaps,
    open: Arc<Mutex<OpenWatches>>,
}

impl<S> EndingWatches<S> {
    pub fn new(
        inner: S,
        max_age: Option<Duration>,
        stopped: tokio::sync::watch::Receiver<bool>,
        caps: WatchCaps,
    ) -> Self {
        EndingWatches {
            inner,
            max_age,
            stopped,
            caps,
            open: Arc::default(),
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
        if request.uri().path() != WATCH_PATH {
            return Box::pin(self.inner.call(request));
        }
        let Some(slot) = WatchSlot::take(&self.open, self.caps, remote_addr(&request).map(|a| a.ip())) else {
            let refusal = KmsError::Throttling("Too many health Watch streams are open from this address".into());
            return Box::pin(std::future::ready(Ok(without_request_id(&refusal).into_http())));
        };
        let answer = self.inner.call(request);
        let end: Pin<Box<dyn Future<Output = &'static str> + Send>> =
            Box::pin(end_of_watch(self.max_age, self.stopped.clone()));
        Box::pin(async move {
            let response = answer.await?;
            Ok(response.map(move |inner| {
                let end = Some(end);
                Body::new(
                    Ending {
                        inner,
                        end,
                        _slot: slot,
                    }
                    .boxed_unsync(),
                )
            }))
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
    /// Counted until the stream is dropped (ended, or reset by the client).
    _slot: WatchSlot,
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
            _slot: WatchSlot::take(&Arc::default(), CAPS, None).unwrap(),
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

    const CAPS: WatchCaps = WatchCaps {
        per_source: 4,
        total: 10,
    };

    /// Watches are counted by source (an IPv6 /64 is one) and in all, and given back when dropped.
    #[test]
    fn watches_are_capped_by_source_and_in_all() {
        let open = Arc::default();
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        let mine: Vec<_> = (0..CAPS.per_source)
            .map(|_| WatchSlot::take(&open, CAPS, ip("2001:db8::1")).unwrap())
            .collect();
        assert!(
            WatchSlot::take(&open, CAPS, ip("2001:db8::2")).is_none(),
            "one /64 is one source"
        );
        let other = WatchSlot::take(&open, CAPS, ip("192.0.2.1")).expect("another source refused");
        drop(mine);
        assert!(
            WatchSlot::take(&open, CAPS, ip("2001:db8::1")).is_some(),
            "dropped watches not given back"
        );
        drop(other);
        let all: Vec<_> = (0..CAPS.total)
            .map(|i| WatchSlot::take(&open, CAPS, Some(IpAddr::from((i as u32).to_be_bytes()))).unwrap())
            .collect();
        assert!(
            WatchSlot::take(&open, CAPS, ip("198.51.100.1")).is_none(),
            "past the total"
        );
        drop(all);
        assert_eq!(open.lock().unwrap().total, 0);
        assert!(
            open.lock().unwrap().by_source.is_empty(),
            "sources with no watch are forgotten"
        );
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
