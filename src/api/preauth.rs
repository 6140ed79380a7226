//! Authentication before the body is read. tonic decodes a request's whole message (up to the
//! size cap, and protobuf expands: an empty repeated message costs 2 bytes on the wire and ~48 in
//! memory) before the service method runs: an unauthenticated client could make the server
//! allocate hundreds of megabytes. This wrapper authenticates from what is known before the body
//! (the `authorization` header and the TLS peer certificates) and answers an unauthenticated
//! request itself: `UnrecognizedClientException` with its message, `x-kms-error-type` and a
//! request id, and an audit record. The body is then dropped unread. An authenticated request's body is charged
//! against the server's budget of request bytes in flight and its principal's share of it
//! (`budget.rs`) as it is read.
//!
//! An authenticated request goes on with its audit record begun ([`Begun`]: principal, request id,
//! source address) in its extensions, where the service's `begin` takes it: the caller is
//! authenticated once per request, and a refusal of the request before its operation begins (too
//! large, undecodable, a handler's panic) is recorded under the same request id as the records the
//! operation wrote, so a state change's `Started` record and the record of its panic go together.
//! The same holds for a request that runs past `limits.request_timeout_seconds`, timed here.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::time::Sleep;

use tonic::body::Body;
use tonic::codegen::http::{Request, Response};
use tonic::codegen::Service;
use tonic::server::NamedService;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

use super::budget::{header_bytes, RequestBudget};
use super::panics::panicked;
use super::refusals::RefusalRecords;
use super::run_to_end::{changes_state, PanicRecorder, Spawned};
use super::source_ip::{ip_text, remote_addr};
use super::status::{to_status, ERROR_TYPE, REQUEST_ID};
use super::Answer;
use crate::audit::{AuditEvent, RequestId};
use crate::auth::Authenticator;
use crate::error::{quoted, KmsError};
use crate::ops::Kms;

/// The service's method names, `&'static` for the audit record (slices of the proto text).
fn methods() -> &'static [&'static str] {
    static METHODS: OnceLock<Vec<&'static str>> = OnceLock::new();
    METHODS.get_or_init(|| {
        include_str!("../../proto/kms/v1/kms.proto")
            .lines()
            .filter_map(|l| l.trim().strip_prefix("rpc "))
            .filter_map(|l| l.split('(').next())
            .map(str::trim)
            .collect()
    })
}

/// The method a request's path names: `/<service>/<method>` exactly. tonic routes every path
/// under `/<service>/` to the service, whose generated code answers any other UNIMPLEMENTED: a
/// path such as `/<service>/x/Encrypt` must not be taken for Encrypt.
pub fn method_name<'a>(path: &'a str, service: &str) -> Option<&'a str> {
    let method = path.strip_prefix('/')?.strip_prefix(service)?.strip_prefix('/')?;
    (!method.contains('/')).then_some(method)
}

/// The audit record's operation for a method the service doesn't have.
const UNKNOWN_OPERATION: &str = "UnknownOperation";

/// Wraps the KMS service (`S::NAME` is its gRPC service name).
#[derive(Clone)]
pub struct PreAuth<S> {
    inner: S,
    auth: Arc<Authenticator>,
    kms: Arc<Kms>,
    tls: bool,
    /// Which unauthenticated refusals get an audit record of their own.
    refusals: Arc<RefusalRecords>,
    budget: Arc<RequestBudget>,
    /// `limits.request_timeout_seconds`: from the request's arrival to its answer.
    timeout: Duration,
}

impl<S> PreAuth<S> {
    pub fn new(
        inner: S,
        auth: Arc<Authenticator>,
        kms: Arc<Kms>,
        tls: bool,
        refusals: Arc<RefusalRecords>,
        budget: Arc<RequestBudget>,
        timeout: Duration,
    ) -> Self {
        PreAuth {
            inner,
            auth,
            kms,
            tls,
            refusals,
            budget,
            timeout,
        }
    }
}

impl<S: NamedService> NamedService for PreAuth<S> {
    const NAME: &'static str = S::NAME;
}

type Refusal = Pin<Box<dyn Future<Output = Answer> + Send>>;

pin_project! {
    /// An authenticated request on its way through, until its deadline; or a refusal answered
    /// here, once its audit record is written.
    #[project = CallProj]
    pub enum Call<F> {
        Through { #[pin] answer: F, caller: Option<Caller>, #[pin] deadline: Sleep },
        Refused { refusal: Refusal },
    }
}

/// An authenticated request's audit record, begun before its body is read, for the service's
/// `begin` to take from the request's extensions.
#[derive(Clone)]
pub struct Begun(pub AuditEvent);

/// Who sent an authenticated request: kept to answer and audit it if it is refused before its
/// operation begins (then `begin` never runs), its handler panics or it runs out of time.
pub struct Caller {
    operation: &'static str,
    principal: Arc<str>,
    /// The request id of the request's [`Begun`] record.
    request_id: RequestId,
    remote: Option<std::net::SocketAddr>,
    tls: bool,
    kms: Arc<Kms>,
    timeout: Duration,
    /// A state change's: whether it is running in a task of its own (`run_to_end.rs`).
    spawned: Option<Spawned>,
}

impl<F> Future for Call<F>
where
    F: Future<Output = Result<Response<Body>, Infallible>>,
{
    type Output = Result<Response<Body>, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let (answer, caller, deadline) = match self.as_mut().project() {
                CallProj::Refused { refusal } => return refusal.as_mut().poll(cx),
                CallProj::Through {
                    answer,
                    caller,
                    deadline,
                } => (answer, caller, deadline),
            };
            let refusal = match answer.poll(cx) {
                // Refused before the operation began (so before `begin`): answered, as every
                // refusal, with a request id and once its audit record is written.
                Poll::Ready(Ok(response)) => match (answered(&response), caller.take()) {
                    (Answered::TooLarge, Some(caller)) => too_large(caller),
                    (Answered::BadFraming, Some(caller)) => bad_framing(caller, &response),
                    (Answered::Refused(outcome), Some(caller)) => refused(caller, outcome, response),
                    _ => return Poll::Ready(Ok(response)),
                },
                Poll::Ready(Err(never)) => match never {},
                Poll::Pending => match deadline.poll(cx).map(|()| caller.take()) {
                    Poll::Ready(Some(caller)) => timed_out(caller),
                    // (The caller is only taken on the way to `Refused`: never None here.)
                    Poll::Ready(None) | Poll::Pending => return Poll::Pending,
                },
            };
            self.set(Call::Refused { refusal });
        }
    }
}

/// Who gave an answer, as far as this wrapper is concerned.
enum Answered {
    /// The operation (its answers carry their request id), or a success: passed on as it is.
    Operation,
    /// tonic, to a message over `max_decoding_message_size`: OUT_OF_RANGE.
    TooLarge,
    /// Something else before the operation began, with an exception name but no request id: the
    /// codec to a message that doesn't decode (`status::undecodable`, ValidationException), the
    /// budget to a body that doesn't fit (ThrottlingException), the answer to a handler that
    /// panicked (`panics.rs`, KMSInternalException), or `run_to_end`'s to a change that would
    /// start after the server began to stop (ServiceUnavailable).
    Refused(&'static str),
    /// tonic, to a request whose gRPC framing is wrong: no message, a message cut short, a bad
    /// compressed flag, a compressed message. It is INTERNAL or UNIMPLEMENTED, as if the server had
    /// failed, with neither a request id nor an exception name (`framing_error`).
    BadFraming,
}

fn answered(response: &Response<Body>) -> Answered {
    let headers = response.headers();
    // A success has its grpc-status in the trailers, not the headers: one lookup on the hot path.
    let Some(status) = headers.get("grpc-status") else {
        return Answered::Operation;
    };
    if status.as_bytes() == b"11" {
        return Answered::TooLarge;
    }
    if headers.contains_key(REQUEST_ID) {
        return Answered::Operation;
    }
    match headers.get(ERROR_TYPE).map(|t| t.as_bytes()) {
        Some(b"ValidationException") => Answered::Refused("ValidationException"),
        Some(b"ThrottlingException") => Answered::Refused("ThrottlingException"),
        Some(b"KMSInternalException") => Answered::Refused("KMSInternalException"),
        Some(b"ServiceUnavailable") => Answered::Refused("ServiceUnavailable"),
        Some(_) => Answered::Operation,
        None if framing_error(headers) => Answered::BadFraming,
        None => Answered::Operation,
    }
}

/// Whether an answer with neither a request id nor an exception name is tonic's to a request
/// framed wrong, by its code and message (tonic 0.14's `server/grpc.rs`, `codec/decode.rs` and
/// `codec/compression.rs`). Matched, not assumed: a body that stopped arriving (a client's reset,
/// a dropped connection) is answered in the same shape, and is no malformed request.
fn framing_error(headers: &tonic::codegen::http::HeaderMap) -> bool {
    let Some(status) = tonic::Status::from_header_map(headers) else {
        return false;
    };
    let m = status.message();
    match status.code() {
        tonic::Code::Internal => {
            m.starts_with("Missing request message")
                || m.starts_with("Unexpected EOF decoding stream")
                || m.starts_with("protocol error: received message with")
        }
        tonic::Code::Unimplemented => m.starts_with("Content is compressed with"),
        _ => false,
    }
}

/// The answer to a request framed wrong: the client's mistake, a ValidationException that says
/// what tonic found (its message names the framing, never the request's bytes).
fn bad_framing(caller: Caller, response: &Response<Body>) -> Refusal {
    let found = tonic::Status::from_header_map(response.headers())
        .map(|s| s.message().trim_end_matches('.').to_string())
        .unwrap_or_default();
    let e = KmsError::Validation(format!("The request is not one well-formed gRPC message: {found}"));
    let (ev, kms) = caller.refusal(e.name());
    let status = to_status(&e, &ev.request_id);
    audited(kms, ev, status.into_http())
}

/// A request refused before it began: the answer as it is, with a request id and an audit record.
fn refused(caller: Caller, outcome: &'static str, mut response: Response<Body>) -> Refusal {
    let (ev, kms) = caller.refusal(outcome);
    if let Ok(id) = ev.request_id.parse() {
        response.headers_mut().insert(REQUEST_ID, id);
    }
    audited(kms, ev, response)
}

impl Caller {
    /// The audit record of this caller's request, refused with `outcome` before it began.
    fn refusal(self, outcome: &'static str) -> (AuditEvent, Arc<Kms>) {
        (self.event(outcome), self.kms)
    }

    fn event(&self, outcome: &'static str) -> AuditEvent {
        let mut ev = AuditEvent::new(
            self.operation,
            self.principal.clone(),
            self.remote.map(|a| ip_text(a.ip())),
        );
        ev.request_id = self.request_id;
        ev.secure_transport = self.tls;
        ev.outcome = outcome;
        ev
    }

    /// For a state change's task to record its panic itself (`run_to_end.rs`): the answer to
    /// it, with the request's id (so this wrapper passes it on as it is), once its record is
    /// written.
    fn panic_recorder(&self) -> PanicRecorder {
        let ev = self.event(KmsError::Internal(String::new()).name());
        let kms = self.kms.clone();
        PanicRecorder(Arc::new(move || {
            let mut response = panicked().into_http();
            if let Ok(id) = ev.request_id.parse() {
                response.headers_mut().insert(REQUEST_ID, id);
            }
            let recorded = audited(kms.clone(), ev.clone(), response);
            Box::pin(async move {
                match recorded.await {
                    Ok(response) => response,
                    Err(never) => match never {},
                }
            })
        }))
    }
}

/// Answers `response` once `ev` is in the audit log (in a task of its own, so that the record is
/// written even if the client goes away first; if auditing fails, the refusal still stands). A
/// disk that stops answering holds the answer no longer than the audit writer's stall limit:
/// past it, records are refused anyway, and this refusal must not wait for the disk forever.
fn audited(kms: Arc<Kms>, ev: AuditEvent, response: Response<Body>) -> Refusal {
    let audit = tokio::spawn(async move {
        let _ = kms.audit(&ev).await;
    });
    answered_after(audit, crate::audit::STALLED, response)
}

/// `response`, once `record` is done or `limit` has passed.
fn answered_after(record: tokio::task::JoinHandle<()>, limit: Duration, response: Response<Body>) -> Refusal {
    Box::pin(async move {
        let _ = tokio::time::timeout(limit, record).await;
        Ok(response)
    })
}

/// The request ran past `limits.request_timeout_seconds`: DependencyTimeoutException, with a
/// request id, as AWS KMS answers a request it gave up on. The request's future is dropped: a read
/// or crypto operation stops where it is (an HSM call under way ends in its blocking thread, its
/// result unused), and so does a state change that has not begun. Those answers are audited. A
/// state change already running in a task of its own (`run_to_end.rs`) finishes and writes its
/// own outcome record under the same request id, so this answer gets none: it would read as the
/// change's outcome.
fn timed_out(caller: Caller) -> Refusal {
    let limit = format!(
        "The request did not complete within {} s (limits.request_timeout_seconds)",
        caller.timeout.as_secs()
    );
    if caller.spawned.as_ref().is_some_and(Spawned::happened) {
        let e = KmsError::DependencyTimeout(format!(
            "{limit}. The change is still under way: its outcome will be in the audit log under this \
             request id; check it before you retry"
        ));
        let status = to_status(&e, &caller.request_id);
        return Box::pin(std::future::ready(Ok(status.into_http())));
    }
    let e = KmsError::DependencyTimeout(format!("{limit}; nothing was changed, and you can retry it"));
    let (ev, kms) = caller.refusal(e.name());
    let status = to_status(&e, &ev.request_id);
    audited(kms, ev, status.into_http())
}

/// The request was too large to read: a ValidationException, with a request id and an audit
/// record, like every other refusal.
fn too_large(caller: Caller) -> Refusal {
    let limit = super::server::limits::MAX_REQUEST_BYTES / 1024;
    let e = KmsError::Validation(format!("The request is larger than the {limit} KiB a request may be"));
    let (ev, kms) = caller.refusal(e.name());
    let status = to_status(&e, &ev.request_id);
    audited(kms, ev, status.into_http())
}

impl<S> Service<Request<Body>> for PreAuth<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible> + NamedService,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Call<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        // A method this list lacks is still authenticated (fail closed: a method the proto parse
        // missed must not skip the check); an authenticated caller is then told it doesn't exist.
        let method = method_name(request.uri().path(), S::NAME).unwrap_or("");
        let operation = methods()
            .iter()
            .find(|m| **m == method)
            .copied()
            .unwrap_or(UNKNOWN_OPERATION);
        // A header that isn't visible ASCII is a malformed credential, refused as one: never taken
        // as no header (which would be dev mode's root, or the certificate's principal).
        let mut authorizations = request.headers().get_all("authorization").iter();
        let authorization = authorizations.next().map(|v| v.to_str().unwrap_or(""));
        let tls_info = request.extensions().get::<TlsConnectInfo<TcpConnectInfo>>();
        let certs = tls_info.and_then(|i| i.peer_certs());
        // Two credentials (a proxy adding its own instead of replacing the caller's): which one
        // counts would be up to their order.
        let authenticated = match authorizations.next() {
            Some(_) => Err(KmsError::Unauthenticated(
                "The request carries more than one authorization header".into(),
            )),
            None => self
                .auth
                .authenticate(authorization, certs.as_deref().map(Vec::as_slice)),
        };
        let remote = remote_addr(&request);
        let e = match authenticated {
            Ok(principal) => {
                let mut ev = AuditEvent::new(operation, principal, remote.map(|a| ip_text(a.ip())));
                ev.secure_transport = self.tls;
                if operation == UNKNOWN_OPERATION {
                    // tonic would answer UNIMPLEMENTED with no AWS name and no record.
                    let path = quoted(request.uri().path());
                    let e = KmsError::UnknownOperation(format!("The service has no operation at {path}"));
                    ev.outcome = e.name();
                    let status = to_status(&e, &ev.request_id);
                    return Call::Refused {
                        refusal: audited(self.kms.clone(), ev, status.into_http()),
                    };
                }
                let caller = Caller {
                    operation,
                    principal: ev.principal.clone(),
                    request_id: ev.request_id,
                    remote,
                    tls: self.tls,
                    kms: self.kms.clone(),
                    timeout: self.timeout,
                    spawned: changes_state(operation).then(Spawned::default),
                };
                let headers = header_bytes(request.headers());
                let mut request = request.map(|body| self.budget.charge(&ev.principal, headers, body));
                request.extensions_mut().insert(Begun(ev));
                if let Some(spawned) = &caller.spawned {
                    request.extensions_mut().insert(spawned.clone());
                    request.extensions_mut().insert(caller.panic_recorder());
                }
                return Call::Through {
                    answer: self.inner.call(request),
                    caller: Some(caller),
                    deadline: tokio::time::sleep(self.timeout),
                };
            }
            Err(e) => e,
        };
        let mut ev = AuditEvent::new(operation, "unauthenticated".into(), remote.map(|a| ip_text(a.ip())));
        ev.secure_transport = self.tls;
        ev.outcome = e.name();
        let status = to_status(&e, &ev.request_id);
        drop(request); // the body is never read
        if self.refusals.admit(remote.map(|a| a.ip())) {
            Call::Refused {
                refusal: audited(self.kms.clone(), ev, status.into_http()),
            }
        } else {
            // Past its address's share of records: counted, and in a summary record within a second.
            Call::Refused {
                refusal: Box::pin(std::future::ready(Ok(status.into_http()))),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only tonic's answers to a request framed wrong are the client's malformed request: a body
    /// that stopped arriving (reset, dropped connection, RunToEnd's failed read) is answered in the
    /// same shape and passed on as it is, unaudited, like any request its client gave up on.
    #[test]
    fn only_framing_errors_are_taken_for_bad_framing() {
        let answer = |s: tonic::Status| answered(&s.into_http());
        for framing in [
            tonic::Status::internal("Missing request message."),
            tonic::Status::internal("Unexpected EOF decoding stream."),
            tonic::Status::internal("protocol error: received message with invalid compression flag: 2"),
            tonic::Status::unimplemented("Content is compressed with `gzip` which isn't supported"),
        ] {
            assert!(matches!(answer(framing.clone()), Answered::BadFraming), "{framing:?}");
        }
        for other in [
            tonic::Status::cancelled("h2 protocol error: stream no longer needed"),
            tonic::Status::internal("h2 protocol error: error reading a body from connection"),
            tonic::Status::cancelled("the request body failed: connection reset"),
            tonic::Status::unknown("anything else"),
        ] {
            assert!(matches!(answer(other.clone()), Answered::Operation), "{other:?}");
        }
        let mut named = tonic::Status::internal("Missing request message.");
        named
            .metadata_mut()
            .insert(ERROR_TYPE, "ValidationException".parse().unwrap());
        assert!(matches!(answer(named), Answered::Refused("ValidationException")));
        assert!(matches!(
            answer(tonic::Status::out_of_range("too large")),
            Answered::TooLarge
        ));
    }

    /// A refusal waits for its record, but not past the limit: a hung disk can't hold it.
    #[tokio::test]
    async fn a_refusal_waits_for_its_record_at_most_the_limit() {
        let (written, write) = tokio::sync::oneshot::channel::<()>();
        let record = tokio::spawn(async move {
            let _ = write.await;
        });
        let mut answer = answered_after(record, Duration::from_secs(3600), Response::new(Body::empty()));
        let early = tokio::time::timeout(Duration::from_millis(50), &mut answer).await;
        assert!(early.is_err(), "answered before its record");
        written.send(()).unwrap();
        answer.await.unwrap();

        let hung = tokio::spawn(std::future::pending::<()>());
        let answer = answered_after(hung, Duration::from_millis(100), Response::new(Body::empty()));
        let answered = tokio::time::timeout(Duration::from_secs(5), answer).await;
        assert!(answered.is_ok(), "still waiting for a record that never comes");
    }

    #[test]
    fn a_method_is_named_by_the_whole_path() {
        let service = "kms.v1.KeyManagementService";
        assert_eq!(
            method_name("/kms.v1.KeyManagementService/Encrypt", service),
            Some("Encrypt")
        );
        for path in [
            "/kms.v1.KeyManagementService/x/Encrypt",
            "/other.Service/Encrypt",
            "/kms.v1.KeyManagementServiceX/Encrypt",
            "kms.v1.KeyManagementService/Encrypt",
            "/kms.v1.KeyManagementService",
        ] {
            assert_eq!(method_name(path, service), None, "{path}");
        }
    }

    #[test]
    fn every_method_of_the_service_is_known() {
        let m = methods();
        assert!(m.len() > 30, "{m:?}");
        for name in ["CreateKey", "Encrypt", "CreateGrant", "ListRetirableGrants"] {
            assert!(m.contains(&name), "{name}");
        }
    }
}
