//! A cap on the request bytes the whole server holds at once (`limits.max_request_bytes_in_flight`).
//!
//! Each request may be 512 KiB and each connection may have 512 streams open, so without a shared
//! cap one authenticated client could make the server hold ~260 MiB per connection: bodies sent
//! one byte short of complete until the request timeout. tonic even reserves a message's declared
//! length as soon as its 5-byte gRPC header arrives. So every authenticated request's body is
//! charged, as it arrives, for each message header's declared length (capped at the message size
//! cap; tonic refuses longer ones itself), and gives the charge back when the body is dropped.
//! A request whose charge doesn't fit is refused at once with ThrottlingException, which AWS SDKs
//! retry with back-off; waiting instead would let the held bodies stall everyone until they time
//! out. The budget is one atomic counter: no lock on the hot path.
//!
//! Each caller also has a share of its own (`limits.max_request_bytes_per_principal`): an
//! authenticated principal; callers without credentials (health and reflection) get one such
//! share between them, split by address (`ANONYMOUS_SHARES`).
//! Without it one client holding the whole budget would throttle every other for up to the
//! request timeout. Principals come from the configuration (tokens, certificate rules, dev mode),
//! so the map of shares stays small; it is read without a lock and copied only when a principal
//! is seen for the first time.

use std::collections::HashMap;
use std::convert::Infallible;
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use tonic::body::Body;
use tonic::codegen::http::{HeaderMap, Request, Response};
use tonic::codegen::Service;
use tonic::server::NamedService;
use tonic::Status;

use super::source_ip::remote_addr;
use super::status::{without_request_id, ERROR_TYPE};
use crate::error::KmsError;

/// At most one warning this often: a flood of refusals must not flood the log.
const WARN_EVERY: Duration = Duration::from_secs(10);
/// A gRPC message's header: a compression flag and a 4-byte big-endian length.
const HEADER_BYTES: usize = 5;
/// The shares of callers without credentials are named from this (no principal is: principals
/// are ARNs).
const UNAUTHENTICATED: &str = "unauthenticated";
/// Callers without credentials (health checks, reflection) are spread over this many shares by
/// their address, each 1/64 of a principal's share. One address holding all its share throttles
/// only the addresses that fall in the same one (a load balancer's health checks most likely do
/// not), and all of them together still hold no more than one principal may, so they can't take
/// the budget from authenticated callers. The address is hashed with a key chosen at start, so a
/// client can't pick its victims' share; an IPv6 address counts by its /64, which one host holds.
const ANONYMOUS_SHARES: u64 = 64;
/// Shares kept before the map starts over: principals are configured, so only a configuration
/// reloaded many times with new principals gets here. Requests in flight keep their old share.
const MAX_SHARES: usize = 4096;

/// The bytes left to hand out, shared by every request, and each caller's share of them.
pub struct RequestBudget {
    left: AtomicUsize,
    total: usize,
    /// The most one caller may hold (at most `total`).
    share: usize,
    /// Keyed by authenticated principals and the 64 anonymous parts, which callers can't choose:
    /// foldhash, not SipHash (looked up on every request).
    shares: ArcSwap<HashMap<Box<str>, Arc<Share>, foldhash::fast::RandomState>>,
    shares_fill: Mutex<()>,
    /// The largest message a request may carry: a longer declared length is charged as this.
    max_message: usize,
    warned: Mutex<Option<Instant>>,
}

/// What one caller may still take.
struct Share {
    left: AtomicUsize,
}

/// Which limit a charge did not fit in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Over {
    Share,
    Server,
}

impl RequestBudget {
    pub fn new(total: usize, share: usize, max_message: usize) -> Arc<Self> {
        Arc::new(RequestBudget {
            left: AtomicUsize::new(total),
            total,
            share: share.min(total),
            shares: ArcSwap::default(),
            shares_fill: Mutex::new(()),
            max_message,
            warned: Mutex::new(None),
        })
    }

    /// `body`, charged against the budget and `caller`'s share as it is read, and for `headers`
    /// bytes (`header_bytes`) from the start: a request whose body never comes holds its headers
    /// as long, so a stalled body must not be free. Headers that don't fit refuse the body at its
    /// first read.
    pub fn charge(self: &Arc<Self>, caller: &str, headers: usize, body: Body) -> Body {
        let share = self.share_of(caller);
        let over = self.take(&share, headers).err();
        // Boxed as tonic boxes bodies, so that `Body::new` takes it as it is, without a layer
        // mapping its errors (they are statuses already).
        Body::new(
            Charged {
                inner: body,
                budget: self.clone(),
                share,
                held: if over.is_none() { headers } else { 0 },
                framing: Framing::default(),
                over,
                refused: false,
            }
            .boxed_unsync(),
        )
    }

    fn share_of(&self, caller: &str) -> Arc<Share> {
        if let Some(share) = self.shares.load().get(caller) {
            return share.clone();
        }
        let _filling = self.shares_fill.lock().unwrap_or_else(|p| p.into_inner());
        let shares = self.shares.load();
        if let Some(share) = shares.get(caller) {
            return share.clone();
        }
        let mut more = if shares.len() >= MAX_SHARES {
            HashMap::default()
        } else {
            (**shares).clone()
        };
        let size = match caller.starts_with(UNAUTHENTICATED) {
            true => self.share / ANONYMOUS_SHARES as usize,
            false => self.share,
        };
        let share = Arc::new(Share {
            left: AtomicUsize::new(size),
        });
        more.insert(caller.into(), share.clone());
        self.shares.store(Arc::new(more));
        share
    }

    /// Takes `n` from the caller's share and from the server's budget, or from neither. The share
    /// first: a caller past it must not hold, even for a moment, bytes other callers could use.
    /// A charge that fits neither is reported as the server's.
    fn take(&self, share: &Share, n: usize) -> Result<(), Over> {
        if !take_from(&share.left, n) {
            return Err(match self.left.load(Ordering::Acquire) < n {
                true => Over::Server,
                false => Over::Share,
            });
        }
        if !take_from(&self.left, n) {
            share.left.fetch_add(n, Ordering::AcqRel);
            return Err(Over::Server);
        }
        Ok(())
    }

    fn give_back(&self, share: &Share, n: usize) {
        share.left.fetch_add(n, Ordering::AcqRel);
        self.left.fetch_add(n, Ordering::AcqRel);
    }

    fn refusal(&self, over: Over) -> Status {
        let mut warned = self.warned.lock().unwrap_or_else(|p| p.into_inner());
        if !warned.is_some_and(|at| at.elapsed() < WARN_EVERY) {
            *warned = Some(Instant::now());
            match over {
                Over::Server => tracing::warn!(
                    "requests hold {} bytes (limits.max_request_bytes_in_flight): refusing more with ThrottlingException",
                    self.total
                ),
                Over::Share => tracing::warn!(
                    "a caller's requests hold {} bytes (limits.max_request_bytes_per_principal): refusing its next ones with ThrottlingException",
                    self.share
                ),
            }
        }
        let message = match over {
            Over::Server => "The server is holding as many request bytes as it may; retry the request later",
            Over::Share => "The caller's requests hold as many bytes as one caller may; retry the request later",
        };
        without_request_id(&KmsError::Throttling(message.into()))
    }
}

/// The share of a caller without credentials from `ip` (None: no address known).
fn anonymous_share(ip: Option<IpAddr>) -> String {
    static KEY: OnceLock<RandomState> = OnceLock::new();
    // (IPv4 or not, the address or its /64): the two kinds never collide by construction.
    let who: (bool, u128) = match ip.map(|ip| ip.to_canonical()) {
        Some(IpAddr::V4(v4)) => (true, u32::from(v4).into()),
        Some(IpAddr::V6(v6)) => (false, u128::from(v6) >> 64),
        None => (false, u128::MAX),
    };
    let bucket = KEY.get_or_init(RandomState::new).hash_one(who) % ANONYMOUS_SHARES;
    format!("{UNAUTHENTICATED}#{bucket}")
}

fn take_from(left: &AtomicUsize, n: usize) -> bool {
    left.fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| left.checked_sub(n))
        .is_ok()
}

/// Wraps a service whose requests are charged against the budget as they are read: the health and
/// reflection services, which answer without credentials, each request from its address's
/// anonymous share (the KMS service is charged by `PreAuth`, once a request is authenticated).
#[derive(Clone)]
pub struct Charging<S> {
    inner: S,
    budget: Arc<RequestBudget>,
}

impl<S> Charging<S> {
    pub fn new(inner: S, budget: Arc<RequestBudget>) -> Self {
        Charging { inner, budget }
    }
}

impl<S: NamedService> NamedService for Charging<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> Service<Request<Body>> for Charging<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> S::Future {
        let share = anonymous_share(remote_addr(&request).map(|a| a.ip()));
        let headers = header_bytes(request.headers());
        let request = request.map(|body| self.budget.charge(&share, headers, body));
        self.inner.call(request)
    }
}

/// What a request's headers count against the budget: as HTTP/2 counts a header list (RFC 9113,
/// SETTINGS_MAX_HEADER_LIST_SIZE), each field's name and value plus 32 bytes.
pub fn header_bytes(headers: &HeaderMap) -> usize {
    headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 32)
        .sum()
}

/// Whether `status` is the budget's refusal (so that it is passed on as it is, not as a failed body).
pub fn is_refusal(status: &Status) -> bool {
    status
        .metadata()
        .get(ERROR_TYPE)
        .is_some_and(|t| t.as_bytes() == b"ThrottlingException")
}

/// Where a body is in its gRPC framing: how much of the next header has come, and how much of the
/// current message is still to come.
#[derive(Default)]
struct Framing {
    header: [u8; HEADER_BYTES],
    header_read: usize,
    message_left: usize,
}

impl Framing {
    /// The charge for `data`, the body's next bytes: each header completed in it costs the
    /// header and the message length it declares (at most `max_message`).
    fn charge(&mut self, mut data: &[u8], max_message: usize) -> usize {
        let mut charge = 0;
        while !data.is_empty() {
            if self.message_left > 0 {
                let n = self.message_left.min(data.len());
                self.message_left -= n;
                data = &data[n..];
                continue;
            }
            let n = (HEADER_BYTES - self.header_read).min(data.len());
            self.header[self.header_read..self.header_read + n].copy_from_slice(&data[..n]);
            self.header_read += n;
            data = &data[n..];
            if self.header_read == HEADER_BYTES {
                self.header_read = 0;
                let [_, a, b, c, d] = self.header;
                let declared = usize::try_from(u32::from_be_bytes([a, b, c, d])).unwrap_or(usize::MAX);
                self.message_left = declared;
                charge += HEADER_BYTES + declared.min(max_message);
            }
        }
        charge
    }
}

/// A request body holding its charge until it is dropped.
struct Charged {
    inner: Body,
    budget: Arc<RequestBudget>,
    share: Arc<Share>,
    held: usize,
    framing: Framing,
    /// The headers didn't fit: the first read refuses the body.
    over: Option<Over>,
    refused: bool,
}

impl Drop for Charged {
    fn drop(&mut self) {
        self.budget.give_back(&self.share, self.held);
    }
}

impl HttpBody for Charged {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = &mut *self;
        if this.refused {
            return Poll::Ready(None);
        }
        if let Some(over) = this.over.take() {
            this.refused = true;
            return Poll::Ready(Some(Err(this.budget.refusal(over))));
        }
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        if let Some(data) = frame.as_ref().and_then(|f| f.as_ref().ok()).and_then(Frame::data_ref) {
            let charge = this.framing.charge(data, this.budget.max_message);
            if charge > 0 {
                if let Err(over) = this.budget.take(&this.share, charge) {
                    this.refused = true;
                    return Poll::Ready(Some(Err(this.budget.refusal(over))));
                }
                this.held += charge;
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.refused || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(len: u32) -> Vec<u8> {
        let mut h = vec![0];
        h.extend_from_slice(&len.to_be_bytes());
        h
    }

    #[test]
    fn each_message_is_charged_its_declared_length_when_its_header_is_complete() {
        let mut f = Framing::default();
        let mut h = header(100);
        // The header split over three reads: nothing until its last byte.
        assert_eq!(f.charge(&h[..2], 1000), 0);
        assert_eq!(f.charge(&h[2..4], 1000), 0);
        assert_eq!(f.charge(&h[4..], 1000), 105);
        // The message's own bytes are already paid for.
        assert_eq!(f.charge(&[7; 60], 1000), 0);
        // The rest of it, a second message whole and the first byte of a third's header.
        let mut rest = vec![7; 40];
        rest.extend(header(3));
        rest.extend([1, 2, 3]);
        rest.push(0);
        assert_eq!(f.charge(&rest, 1000), 8);
        // A declared length over the cap is charged as the cap (tonic refuses the message).
        h = header(u32::MAX);
        assert_eq!(f.charge(&h[1..], 1000), 1005);
    }

    const ALICE: &str = "arn:aws:iam::111122223333:user/alice";
    const BOB: &str = "arn:aws:iam::111122223333:user/bob";

    /// A message of `len` bytes with its header, in two frames.
    fn message(len: u32) -> Vec<Vec<u8>> {
        let mut m = header(len);
        m.extend(vec![0; len as usize]);
        vec![m[..50].to_vec(), m[50..].to_vec()]
    }

    /// A body of `frames` (data frames, then the end).
    fn body(frames: Vec<Vec<u8>>) -> Body {
        let (mut tx, rx) = http_body_util::channel::Channel::<Bytes, Status>::new(frames.len().max(1));
        for f in frames {
            tx.try_send(Frame::data(Bytes::from(f))).unwrap();
        }
        drop(tx);
        Body::new(rx)
    }

    async fn read(mut b: Body) -> (Body, Result<usize, Status>) {
        let mut n = 0;
        while let Some(frame) = b.frame().await {
            match frame {
                Ok(f) => n += f.data_ref().map_or(0, Bytes::len),
                Err(e) => return (b, Err(e)),
            }
        }
        (b, Ok(n))
    }

    /// A request's headers are charged from the start, so that requests whose bodies never come
    /// can't hold headers for free; ones that don't fit refuse the body at its first read.
    #[tokio::test]
    async fn headers_are_charged_until_the_body_is_dropped() {
        let budget = RequestBudget::new(1000, 1000, 800);
        let (_sender, stalled) = http_body_util::channel::Channel::<Bytes, Status>::new(1);
        let held = budget.charge(ALICE, 600, Body::new(stalled));
        assert_eq!(
            budget.left.load(Ordering::Acquire),
            400,
            "held before any byte of the body"
        );
        let (refused_body, refused) = read(budget.charge(ALICE, 500, body(message(100)))).await;
        assert!(is_refusal(&refused.unwrap_err()));
        drop(refused_body);
        assert_eq!(
            budget.left.load(Ordering::Acquire),
            400,
            "a refused request holds nothing"
        );
        drop(held);
        assert_eq!(budget.left.load(Ordering::Acquire), 1000);
        let mut headers = HeaderMap::new();
        headers.insert("x-pad", "a".repeat(100).parse().unwrap());
        assert_eq!(header_bytes(&headers), 5 + 100 + 32);
    }

    #[tokio::test]
    async fn a_body_that_does_not_fit_is_refused_and_a_dropped_body_gives_its_charge_back() {
        let budget = RequestBudget::new(1000, 1000, 800);
        let (first, read_first) = read(budget.charge(ALICE, 0, body(message(600)))).await;
        assert_eq!(read_first.unwrap(), 605);
        assert_eq!(budget.left.load(Ordering::Acquire), 395);
        // 405 more does not fit in 395: refused, not read on.
        let (second, refused) = read(budget.charge(ALICE, 0, body(message(400)))).await;
        let status = refused.unwrap_err();
        assert!(is_refusal(&status), "{status:?}");
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert!(status.metadata().get(super::super::status::REQUEST_ID).is_none());
        drop(second);
        assert_eq!(budget.left.load(Ordering::Acquire), 395, "a refused body holds nothing");
        // Once the first is dropped, the same request fits.
        drop(first);
        assert_eq!(budget.left.load(Ordering::Acquire), 1000);
        let (third, read_third) = read(budget.charge(ALICE, 0, body(message(400)))).await;
        assert_eq!(read_third.unwrap(), 405);
        drop(third);
        assert_eq!(budget.left.load(Ordering::Acquire), 1000);
    }

    #[tokio::test]
    async fn a_caller_past_its_share_is_refused_while_another_is_served() {
        let budget = RequestBudget::new(1000, 700, 800);
        let (first, read_first) = read(budget.charge(ALICE, 0, body(message(400)))).await;
        assert_eq!(read_first.unwrap(), 405);
        // Alice's 405 more fit in the server's 595 left but not in her 295.
        let (refused_body, refused) = read(budget.charge(ALICE, 0, body(message(400)))).await;
        let status = refused.unwrap_err();
        assert!(is_refusal(&status), "{status:?}");
        assert_eq!(
            status.message(),
            "The caller's requests hold as many bytes as one caller may; retry the request later"
        );
        drop(refused_body);
        assert_eq!(
            budget.left.load(Ordering::Acquire),
            595,
            "a refused charge is given back whole"
        );
        // Bob has a share of his own.
        let (bob, read_bob) = read(budget.charge(BOB, 0, body(message(400)))).await;
        assert_eq!(read_bob.unwrap(), 405);
        // The server's budget still binds: 190 left, and Bob's share has 295.
        let (_, refused) = read(budget.charge(BOB, 0, body(message(200)))).await;
        assert_eq!(
            refused.unwrap_err().message(),
            "The server is holding as many request bytes as it may; retry the request later"
        );
        // Each share comes back with its caller's bodies.
        drop(first);
        let (again, read_again) = read(budget.charge(ALICE, 0, body(message(400)))).await;
        assert_eq!(read_again.unwrap(), 405);
        drop((again, bob));
        assert_eq!(budget.left.load(Ordering::Acquire), 1000);
        let shares = budget.shares.load();
        assert!(shares.values().all(|s| s.left.load(Ordering::Acquire) == 700));
        assert_eq!(shares.len(), 2);
    }

    /// Callers without credentials hold shares by address: one filling its share leaves the
    /// others theirs, and each is 1/64 of a principal's. An IPv6 /64 is one address.
    #[tokio::test]
    async fn callers_without_credentials_have_shares_by_address() {
        let budget = RequestBudget::new(1 << 20, 64_000, 4096);
        let v4 = |i: u32| Some(IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i)));
        let first = anonymous_share(v4(1));
        let other = (2..10_000)
            .map(v4)
            .map(anonymous_share)
            .find(|s| *s != first)
            .expect("every address in one share");
        assert_eq!(budget.share_of(&first).left.load(Ordering::Acquire), 1000);
        let (held, read_held) = read(budget.charge(&first, 0, body(message(995)))).await;
        assert_eq!(read_held.unwrap(), 1000);
        let (_, refused) = read(budget.charge(&first, 0, body(message(60)))).await;
        assert!(is_refusal(&refused.unwrap_err()));
        let (_, served) = read(budget.charge(&other, 0, body(message(60)))).await;
        assert_eq!(served.unwrap(), 65, "another address's share is its own");
        drop(held);
        let v6 = |s: &str| anonymous_share(Some(s.parse().unwrap()));
        assert_eq!(v6("2001:db8::1"), v6("2001:db8::ffff:1"), "one /64");
        assert_eq!(
            v6("::ffff:10.0.0.1"),
            first,
            "an IPv4 address wrapped in IPv6 is that address"
        );
    }

    #[test]
    fn a_share_is_never_more_than_the_whole_budget() {
        let budget = RequestBudget::new(1000, 5000, 800);
        assert_eq!(budget.share_of(ALICE).left.load(Ordering::Acquire), 1000);
        assert!(Arc::ptr_eq(&budget.share_of(ALICE), &budget.share_of(ALICE)));
    }
}
