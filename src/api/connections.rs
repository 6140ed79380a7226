//! Caps on open connections, so that clients (or one client) opening connections without end
//! can't take the process's file descriptors: the store, the audit log and the HSM need some
//! too, and an `EMFILE` there fails requests of every client.
//!
//! - At `max_connections` open, the server stops accepting until one closes: new clients wait
//!   in the kernel's backlog (and their connect times out if none closes), while the open
//!   connections are served as before.
//! - A source address with `max_connections_per_ip` open has its next connections closed as soon
//!   as they are accepted, so one address can't take every slot.
//! - A connection must send its HTTP/2 preface soon after it is accepted (`opening.rs`; over TLS
//!   after its handshake, `tls.rs`), or it is closed.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_stream::Stream;
use tonic::transport::server::{Connected, TcpConnectInfo};

/// Descriptors kept for the store, the audit log, the HSM library and the process itself when
/// the cap is derived from the open-files limit.
const RESERVED_DESCRIPTORS: u64 = 128;
/// At most one warning per cap this often: a flood must not flood the log.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// The caps, shared by every connection the server accepts.
pub struct ConnectionLimits {
    slots: Arc<Semaphore>,
    max: usize,
    per_ip: usize,
    open_by_ip: Mutex<HashMap<IpAddr, usize>>,
    warned: Mutex<[Option<Instant>; 2]>,
    /// Connections closed for their source's share since the last warning about it.
    turned_away: AtomicU64,
}

impl ConnectionLimits {
    /// Connections open at once, at most.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Connections open at once from one source, at most.
    pub fn per_source(&self) -> usize {
        if self.per_ip == 0 {
            self.max
        } else {
            self.per_ip.min(self.max)
        }
    }

    /// `per_ip` 0: no cap per address.
    pub fn new(max: usize, per_ip: usize) -> Arc<Self> {
        Arc::new(ConnectionLimits {
            slots: Arc::new(Semaphore::new(max)),
            max,
            per_ip,
            open_by_ip: Mutex::new(HashMap::new()),
            warned: Mutex::new([None, None]),
            turned_away: AtomicU64::new(0),
        })
    }

    /// The configured cap, lowered to fit under the process's open-files limit (`ulimit -n`)
    /// with room for everything else the server opens. None: the limit is too low to serve.
    pub fn effective_max(configured: usize, open_files_limit: Option<u64>) -> Option<usize> {
        match open_files_limit {
            None => Some(configured),
            Some(limit) => {
                let room = limit.saturating_sub(RESERVED_DESCRIPTORS);
                (room > 0).then(|| configured.min(usize::try_from(room).unwrap_or(usize::MAX)))
            }
        }
    }

    /// Takes a slot for `ip`, or None when that address already has its share open.
    fn admit(self: &Arc<Self>, ip: Option<IpAddr>) -> Option<IpGuard> {
        let Some(ip) = ip.filter(|_| self.per_ip > 0).map(source) else {
            return Some(IpGuard {
                limits: self.clone(),
                ip: None,
            });
        };
        let mut open = self.open_by_ip.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(ip).or_insert(0);
        if *n >= self.per_ip {
            return None;
        }
        *n += 1;
        Some(IpGuard {
            limits: self.clone(),
            ip: Some(ip),
        })
    }

    /// Logs that a cap was reached, at most once per `WARN_EVERY` for each cap.
    fn warn(&self, which: usize, message: impl FnOnce() -> String) {
        let mut warned = self.warned.lock().unwrap_or_else(|p| p.into_inner());
        if warned[which].is_some_and(|at| at.elapsed() < WARN_EVERY) {
            return;
        }
        warned[which] = Some(Instant::now());
        tracing::warn!("{}", message());
    }
}

/// What counts as one source: an IPv4 address (also when it comes IPv4-mapped), or an IPv6 /64,
/// the smallest network a host is usually given (it could otherwise take every slot by
/// rotating its addresses).
pub(super) fn source(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !(u128::MAX >> 64)).into()),
        },
    }
}

/// One source's count of open connections, given back when the connection closes.
struct IpGuard {
    limits: Arc<ConnectionLimits>,
    ip: Option<IpAddr>,
}

impl Drop for IpGuard {
    fn drop(&mut self) {
        let Some(ip) = self.ip else { return };
        let mut open = self.limits.open_by_ip.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&ip);
            }
        }
    }
}

type Acquire = Pin<Box<dyn Future<Output = Option<OwnedSemaphorePermit>> + Send>>;

/// Accepted connections, at most `max` open at once and `per_ip` from one address.
pub struct Limited<S> {
    inner: S,
    limits: Arc<ConnectionLimits>,
    acquiring: Option<Acquire>,
    slot: Option<OwnedSemaphorePermit>,
}

impl<S> Limited<S> {
    pub fn new(inner: S, limits: Arc<ConnectionLimits>) -> Self {
        Limited {
            inner,
            limits,
            acquiring: None,
            slot: None,
        }
    }

    /// Holds a slot before the next accept; Pending while all are taken. False if the slots
    /// were closed (nothing closes them; the stream would end).
    fn poll_slot(&mut self, cx: &mut Context<'_>) -> Poll<bool> {
        if self.slot.is_some() {
            return Poll::Ready(true);
        }
        let acquiring = match &mut self.acquiring {
            Some(acquiring) => acquiring,
            None => {
                if let Ok(slot) = self.limits.slots.clone().try_acquire_owned() {
                    self.slot = Some(slot);
                    return Poll::Ready(true);
                }
                let max = self.limits.max;
                self.limits.warn(0, || {
                    format!("{max} connections are open (limits.max_connections): not accepting until one closes")
                });
                let slots = self.limits.slots.clone();
                self.acquiring
                    .insert(Box::pin(async move { slots.acquire_owned().await.ok() }))
            }
        };
        let Poll::Ready(slot) = acquiring.as_mut().poll(cx) else {
            return Poll::Pending;
        };
        self.acquiring = None;
        self.slot = slot;
        Poll::Ready(self.slot.is_some())
    }
}

impl<S> Stream for Limited<S>
where
    S: Stream<Item = io::Result<TcpStream>> + Unpin,
{
    type Item = io::Result<LimitedConnection>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            match this.poll_slot(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(false) => return Poll::Ready(None),
                Poll::Ready(true) => {}
            }
            let stream = match Pin::new(&mut this.inner).poll_next(cx) {
                Poll::Ready(Some(Ok(stream))) => stream,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            };
            let ip = stream.peer_addr().ok().map(|a| a.ip());
            match this.limits.admit(ip) {
                Some(ip_guard) => {
                    let slot = this.slot.take().expect("a slot is held before accepting");
                    return Poll::Ready(Some(Ok(LimitedConnection {
                        stream,
                        _slot: slot,
                        _ip: ip_guard,
                    })));
                }
                None => {
                    // Closed at once (dropped); the slot stays for the next accept.
                    let limits = &this.limits;
                    limits.turned_away.fetch_add(1, Ordering::Relaxed);
                    limits.warn(1, || {
                        format!(
                            "{} connection(s) closed since the last such warning: their source had {} open \
                             (limits.max_connections_per_ip); the latest from {}",
                            limits.turned_away.swap(0, Ordering::Relaxed),
                            limits.per_ip,
                            ip.map_or("?".into(), |ip| ip.to_string())
                        )
                    });
                }
            }
        }
    }
}

/// An accepted connection holding its slot (and its address's count) until it is dropped.
pub struct LimitedConnection {
    stream: TcpStream,
    _slot: OwnedSemaphorePermit,
    _ip: IpGuard,
}

impl Connected for LimitedConnection {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for LimitedConnection {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for LimitedConnection {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// Raises the soft open-files limit to the hard one, as Go's runtime does and systemd advises
/// for programs that don't use select(): the soft default of 1024 is kept for select()'s sake,
/// and would bound connections long before the cap. Returns the soft limit now in force; None:
/// unlimited.
pub fn raise_open_files_limit() -> Option<u64> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let raised = Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => return limit.maximum,
            Err(e) => tracing::warn!(error = %e, "cannot raise the open-files limit to its hard value"),
        }
    }
    limit.current
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio_stream::wrappers::TcpListenerStream;
    use tokio_stream::StreamExt;

    async fn listener() -> (TcpListenerStream, std::net::SocketAddr) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        (TcpListenerStream::new(listener), addr)
    }

    async fn next_within<S: Stream + Unpin>(s: &mut S, ms: u64) -> Option<S::Item> {
        tokio::time::timeout(Duration::from_millis(ms), s.next())
            .await
            .ok()
            .flatten()
    }

    #[tokio::test]
    async fn at_the_cap_nothing_is_accepted_until_a_connection_closes() {
        let (inner, addr) = listener().await;
        let mut accepted = Limited::new(inner, ConnectionLimits::new(2, 0));
        let _clients: Vec<_> = connect_n(addr, 3).await;
        let first = next_within(&mut accepted, 2000).await.unwrap().unwrap();
        let _second = next_within(&mut accepted, 2000).await.unwrap().unwrap();
        assert!(
            next_within(&mut accepted, 300).await.is_none(),
            "a third accepted past the cap"
        );
        // Closed while the stream waits for a slot: the wait must wake.
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            drop(first);
        });
        assert!(
            next_within(&mut accepted, 2000).await.is_some(),
            "the freed slot is not used"
        );
    }

    #[tokio::test]
    async fn an_address_past_its_share_is_closed_and_its_count_comes_back() {
        let (inner, addr) = listener().await;
        let mut accepted = Limited::new(inner, ConnectionLimits::new(10, 1));
        let _a = TcpStream::connect(addr).await.unwrap();
        let a_served = next_within(&mut accepted, 2000).await.unwrap().unwrap();
        let mut b = TcpStream::connect(addr).await.unwrap();
        // The stream accepts b and closes it; nothing is handed to the server.
        assert!(
            next_within(&mut accepted, 300).await.is_none(),
            "a second connection from one address"
        );
        let mut buf = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(2), b.read(&mut buf)).await;
        assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "b is still open: {read:?}");
        drop(a_served);
        let _c = TcpStream::connect(addr).await.unwrap();
        let c_served = next_within(&mut accepted, 2000).await;
        assert!(
            c_served.is_some(),
            "the address's count did not come back when its connection closed"
        );
        assert_eq!(accepted.limits.open_by_ip.lock().unwrap().get(&addr.ip()), Some(&1));
        drop(c_served);
        assert!(
            accepted.limits.open_by_ip.lock().unwrap().is_empty(),
            "counts of closed connections are kept"
        );
    }

    #[test]
    fn the_cap_fits_under_the_open_files_limit() {
        assert_eq!(ConnectionLimits::effective_max(4096, None), Some(4096));
        assert_eq!(ConnectionLimits::effective_max(4096, Some(1024)), Some(1024 - 128));
        assert_eq!(ConnectionLimits::effective_max(100, Some(1024)), Some(100));
        assert_eq!(ConnectionLimits::effective_max(4096, Some(100)), None);
    }

    #[test]
    fn a_source_is_an_ipv4_address_or_an_ipv6_64() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(source(ip("192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(source(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(source(ip("2001:db8:1:2:aaaa:bbbb:cccc:dddd")), ip("2001:db8:1:2::"));
        assert_eq!(source(ip("2001:db8:1:2::9")), source(ip("2001:db8:1:2:ffff::1")));
        assert_ne!(source(ip("2001:db8:1:2::9")), source(ip("2001:db8:1:3::9")));
    }

    #[test]
    fn the_open_files_limit_is_raised_to_its_hard_value() {
        use rustix::process::{getrlimit, Resource};
        let now = raise_open_files_limit();
        let limit = getrlimit(Resource::Nofile);
        assert_eq!(now, limit.current);
        assert_eq!(limit.current, limit.maximum);
    }

    async fn connect_n(addr: std::net::SocketAddr, n: usize) -> Vec<TcpStream> {
        let mut out = vec![];
        for _ in 0..n {
            out.push(TcpStream::connect(addr).await.unwrap());
        }
        out
    }
}
