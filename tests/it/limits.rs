//! Transport limits through the real server: the request size cap, the HTTP/2 settings and the
//! reset-flood limit (raw HTTP/2 frames), and the deadlines on a new connection's TLS handshake
//! and HTTP/2 preface.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use kms::proto as pb;
use tonic::transport::Channel;
use tonic::Code;

use crate::common::*;
use crate::tls::Pki;

/// The server's cap on one request message (src/api/server.rs `limits::MAX_REQUEST_BYTES`).
const MAX_REQUEST_BYTES: usize = 512 * 1024;

#[tokio::test]
async fn a_request_over_the_size_cap_is_refused_and_the_server_stays_up() {
    let server = Server::start().await;
    let mut c = server.client().await;
    // Over the 512 KiB cap, under tonic's 4 MiB default: without the cap this would decode and
    // fail validation (the description is too long) instead.
    let big = pb::CreateKeyRequest {
        description: "x".repeat(MAX_REQUEST_BYTES + 1024),
        ..Default::default()
    };
    let too_large = c.create_key(big).await.unwrap_err();
    assert_eq!(error_type(&too_large), "ValidationException", "{}", too_large.message());
    assert_eq!(too_large.code(), Code::InvalidArgument, "{}", too_large.message());
    assert_eq!(
        too_large.message(),
        "The request is larger than the 512 KiB a request may be"
    );
    // Just under the cap is read (and refused by validation, as any too-long description).
    let under = pb::CreateKeyRequest {
        description: "x".repeat(MAX_REQUEST_BYTES - 64),
        ..Default::default()
    };
    let err = c.create_key(under).await.unwrap_err();
    assert_eq!(error_type(&err), "ValidationException", "{}", err.message());
    // The server is still there, for this connection and for new ones.
    create_key(&mut c).await;
    create_key(&mut server.client().await).await;
    // And the refusal was audited under its request id.
    let record = server.audit_record_of(&too_large);
    assert_eq!(record["operation"], "CreateKey");
    assert_eq!(record["outcome"], "ValidationException");
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    f.extend_from_slice(&[kind, flags]);
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

const SETTINGS: u8 = 4;
const HEADERS: u8 = 1;
const RST_STREAM: u8 = 3;
const GOAWAY: u8 = 7;

/// Opens a prior-knowledge HTTP/2 connection (preface and empty SETTINGS sent).
fn h2_connect(addr: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    hello.extend(frame(SETTINGS, 0, 0, &[]));
    s.write_all(&hello).unwrap();
    s
}

/// Reads frames until `stop` says so, EOF or a read timeout; returns them (type, payload).
fn read_frames(s: &mut TcpStream, mut stop: impl FnMut(u8, &[u8]) -> bool) -> Vec<(u8, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut frames = Vec::new();
    let mut chunk = [0u8; 65536];
    loop {
        while buf.len() >= 9 {
            let len = u32::from_be_bytes([0, buf[0], buf[1], buf[2]]) as usize;
            if buf.len() < 9 + len {
                break;
            }
            let kind = buf[3];
            let payload = buf[9..9 + len].to_vec();
            buf.drain(..9 + len);
            let done = stop(kind, &payload);
            frames.push((kind, payload));
            if done {
                return frames;
            }
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return frames,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

#[tokio::test]
async fn the_server_advertises_a_stream_limit() {
    let server = Server::start().await;
    let addr = server.addr.clone();
    let settings = tokio::task::spawn_blocking(move || {
        let mut s = h2_connect(&addr);
        let frames = read_frames(&mut s, |kind, _| kind == SETTINGS);
        frames
            .into_iter()
            .find(|(k, _)| *k == SETTINGS)
            .expect("a SETTINGS frame")
            .1
    })
    .await
    .unwrap();
    let max_streams = settings
        .chunks(6)
        .find(|p| u16::from_be_bytes([p[0], p[1]]) == 3) // SETTINGS_MAX_CONCURRENT_STREAMS
        .map(|p| u32::from_be_bytes([p[2], p[3], p[4], p[5]]))
        .expect("the server must advertise MAX_CONCURRENT_STREAMS (unlimited otherwise)");
    // The benchmark keeps 256 requests in flight over two connections; allow them on one.
    assert!(
        (256..=1024).contains(&max_streams),
        "MAX_CONCURRENT_STREAMS {max_streams}"
    );
}

#[tokio::test]
async fn a_flood_of_streams_the_server_must_reset_gets_a_goaway() {
    let server = Server::start().await;
    let addr = server.addr.clone();
    let (resets, goaway) = tokio::task::spawn_blocking(move || {
        let mut s = h2_connect(&addr);
        // HPACK: POST, http, path "/", authority "localhost", then a `connection: x` header:
        // connection-specific headers are malformed in HTTP/2, so the server resets the stream
        // itself (a local error reset, what MadeYouReset provokes).
        let block = b"\x83\x86\x84\x41\x09localhost\x00\x0aconnection\x01x";
        let mut out = Vec::new();
        for i in 0..3000u32 {
            out.extend(frame(HEADERS, 0x5, 2 * i + 1, block)); // END_STREAM | END_HEADERS
            if out.len() > 60_000 {
                if s.write_all(&out).is_err() {
                    break; // already closed
                }
                out.clear();
            }
        }
        let _ = s.write_all(&out);
        let frames = read_frames(&mut s, |kind, _| kind == GOAWAY);
        let resets = frames.iter().filter(|(k, _)| *k == RST_STREAM).count();
        let goaway = frames.into_iter().find(|(k, _)| *k == GOAWAY).map(|(_, p)| p);
        (resets, goaway)
    })
    .await
    .unwrap();
    let goaway = goaway.unwrap_or_else(|| panic!("no GOAWAY after {resets} RST_STREAMs from the server"));
    let code = u32::from_be_bytes([goaway[4], goaway[5], goaway[6], goaway[7]]);
    assert_eq!(code, 0xb, "GOAWAY with ENHANCE_YOUR_CALM, got error code {code:#x}");
    assert!(resets <= 1100, "{resets} streams reset before the GOAWAY");
    // Other clients are served.
    create_key(&mut server.client().await).await;
}

#[tokio::test]
async fn a_tls_connection_that_never_says_hello_is_closed() {
    let pki = Pki::new();
    let server = Server::start_with(&pki.tls_config()).await;
    // Nothing sent: the server's 10 s handshake timeout must close it.
    assert_closed_after_10_s(server.addr.clone(), b"").await;
}

/// A client that finishes its TLS handshake and then says nothing is closed 10 s after it
/// connected, as one that never says hello is, and its slot goes to the next client: the
/// deadline on the HTTP/2 preface counts decrypted bytes, which the handshake's own are not.
#[tokio::test]
async fn a_tls_connection_silent_after_its_handshake_is_closed() {
    use tokio::io::AsyncReadExt;
    use tokio_rustls::rustls::pki_types::{pem::PemObject, CertificateDer, ServerName};
    use tokio_rustls::rustls::{ClientConfig, RootCertStore};

    let pki = Pki::new();
    let server = Server::start_with(&format!("{}[limits]\nmax_connections = 1\n", pki.tls_config())).await;
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(&pki.ca.cert).unwrap())
        .unwrap();
    let mut config = ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let start = Instant::now();
    let tcp = tokio::net::TcpStream::connect(&server.addr).await.unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("the handshake must succeed");
    // Read (and drop) the server's SETTINGS until it closes the connection; longer than the
    // server's deadline, as without one the read never returns.
    let outcome = tokio::time::timeout(Duration::from_secs(20), async {
        let mut buf = [0u8; 256];
        loop {
            match tls.read(&mut buf).await {
                Ok(n) if n > 0 => continue,
                other => break other.map_err(|e| e.kind()),
            }
        }
    })
    .await;
    let elapsed = start.elapsed();
    assert!(
        matches!(
            outcome,
            Ok(Ok(0) | Err(std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset))
        ),
        "the server did not close the silent connection: {outcome:?} after {elapsed:?}"
    );
    assert!(
        elapsed >= Duration::from_secs(9) && elapsed < Duration::from_secs(15),
        "closed after {elapsed:?}"
    );
    let mut next = tls_client(&server, &pki.ca.cert, None, Bearer::default())
        .await
        .unwrap();
    next.list_keys(pb::ListKeysRequest::default()).await.unwrap();
}

/// Connects, sends `opening`, reads (and drops) whatever the server sends until it closes the
/// connection, and checks that this took the server's 10 s.
async fn assert_closed_after_10_s(addr: String, opening: &'static [u8]) {
    let (elapsed, outcome) = tokio::task::spawn_blocking(move || {
        let start = Instant::now();
        let mut s = TcpStream::connect(&addr).unwrap();
        s.write_all(opening).unwrap();
        // Longer than the server's deadline: without one the read never returns.
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let outcome = loop {
            match s.read(&mut [0u8; 256]) {
                Ok(n) if n > 0 => continue,
                other => break other.map_err(|e| e.kind()),
            }
        };
        (start.elapsed(), outcome)
    })
    .await
    .unwrap();
    assert!(
        matches!(outcome, Ok(0) | Err(std::io::ErrorKind::ConnectionReset)),
        "the server did not close the silent connection: {outcome:?} after {elapsed:?}"
    );
    assert!(
        elapsed >= Duration::from_secs(9) && elapsed < Duration::from_secs(15),
        "closed after {elapsed:?}"
    );
}

/// A plaintext connection that sends no HTTP/2 preface is closed after 10 s, and its slot goes
/// to the next client: HTTP/2 itself sets no deadline on the preface.
#[tokio::test]
async fn a_connection_that_never_sends_its_preface_is_closed() {
    let server = Server::start_with("[limits]\nmax_connections = 1").await;
    // Part of the preface, then nothing; the server's SETTINGS come first.
    assert_closed_after_10_s(server.addr.clone(), b"PRI * HTTP/2.0").await;
    create_key(&mut server.client().await).await;
}

/// The server's peak resident set (VmHWM), in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test]
async fn unauthenticated_requests_are_refused_before_their_body_is_read() {
    use crate::auth::{auth_config, expect_unrecognized, BOB, BOB_TOKEN};
    let server = Server::start_with(&auth_config(false, &[(BOB_TOKEN, BOB)], &[], None)).await;
    let anonymous = plain_client(&server, Bearer::default()).await;
    let wrong = plain_client(&server, Bearer::token(Some("not-a-configured-token"))).await;
    // 200,000 empty tags: 400 KB on the wire (under the size cap), ~9.6 MB once decoded (two
    // empty Strings per tag), more with the Vec's growth.
    const TAGS: usize = 200_000;
    let request = pb::CreateKeyRequest {
        tags: vec![pb::Tag::default(); TAGS],
        ..Default::default()
    };
    assert!(prost::Message::encoded_len(&request) < MAX_REQUEST_BYTES);
    let before = peak_rss_kib(server.pid());
    const CALLS: usize = 64;
    let calls = (0..CALLS).map(|i| {
        let mut c = if i % 2 == 0 { anonymous.clone() } else { wrong.clone() };
        let request = request.clone();
        async move { c.create_key(request).await }
    });
    let results = futures_join_all(calls).await;
    let mut messages = Vec::new();
    for r in results {
        if let Err(s) = &r {
            assert!(s.metadata().get("x-kms-request-id").is_some(), "no request id");
        }
        messages.push(expect_unrecognized(r));
    }
    assert!(messages.contains(&"Requests need a bearer token or a client certificate".to_string()));
    assert!(messages.contains(&"The bearer token is not recognised".to_string()));
    let grown_mib = (peak_rss_kib(server.pid()) - before) / 1024;
    eprintln!("peak RSS grew by {grown_mib} MiB for {CALLS} refused 400 KB requests");
    // Decoding them would need ~10-20 MB per request in flight (measured: 85 MiB of growth for
    // these 64 requests without the check before the body); refused from the headers, the
    // bodies are never buffered and the peak hardly moves (measured: 0-1 MiB).
    assert!(
        grown_mib < 16,
        "peak RSS grew by {grown_mib} MiB for {CALLS} refused requests"
    );
    // Each refusal is audited as `begin` audits it.
    let (_, records) = server.audit_records();
    let refused = records
        .iter()
        .filter(|r| {
            r["operation"] == "CreateKey"
                && r["principal"] == "unauthenticated"
                && r["outcome"] == "UnrecognizedClientException"
        })
        .count();
    assert_eq!(refused, CALLS, "{records:?}");
    // A caller with a token gets through to authorization (bob has no identity policy).
    let mut bob = plain_client(&server, Bearer::token(Some(BOB_TOKEN))).await;
    expect_err(
        bob.create_key(pb::CreateKeyRequest::default()).await,
        "AccessDeniedException",
    );
}

/// Sends an empty message to `method` of the KMS service, bypassing the generated client.
async fn call_method(server: &Server, bearer: Bearer, method: &str) -> tonic::Status {
    let channel = plain_channel(server).await;
    let mut grpc = tonic::client::Grpc::new(tonic::service::interceptor::InterceptedService::new(channel, bearer));
    grpc.ready().await.unwrap();
    let path = format!("/kms.v1.KeyManagementService/{method}").parse().unwrap();
    let codec = tonic_prost::ProstCodec::<pb::ListKeysRequest, pb::ListKeysResponse>::default();
    grpc.unary(tonic::Request::new(pb::ListKeysRequest::default()), path, codec)
        .await
        .expect_err("not a method of the service")
}

/// Authentication before the body fails closed: a method it doesn't know is refused to an
/// unauthenticated caller too (an authenticated one is told it doesn't exist, with AWS's
/// UnknownOperationException and an audit record).
#[tokio::test]
async fn an_unknown_method_is_authenticated_first() {
    use crate::auth::{auth_config, BOB, BOB_TOKEN};
    let server = Server::start_with(&auth_config(false, &[(BOB_TOKEN, BOB)], &[], None)).await;
    let anonymous = call_method(&server, Bearer::default(), "NoSuchMethod").await;
    assert_eq!(anonymous.code(), Code::Unauthenticated, "{anonymous:?}");
    assert_eq!(error_type(&anonymous), "UnrecognizedClientException");
    let bob = call_method(&server, Bearer::token(Some(BOB_TOKEN)), "NoSuchMethod").await;
    assert_eq!(bob.code(), Code::Unimplemented, "{bob:?}");
    assert_eq!(error_type(&bob), "UnknownOperationException");
    assert!(bob.message().contains("NoSuchMethod"), "{bob:?}");
    let record = server.audit_record_of(&bob);
    assert_eq!(record["principal"], BOB, "{record}");
    assert_eq!(record["operation"], "UnknownOperation", "{record}");
    assert_eq!(record["outcome"], "UnknownOperationException", "{record}");
    // tonic hands the service every path under its name; only `/<service>/<method>` names one.
    let nested = call_method(&server, Bearer::token(Some(BOB_TOKEN)), "x/Encrypt").await;
    assert_eq!(error_type(&nested), "UnknownOperationException", "{nested:?}");
    assert!(nested.message().contains("/x/Encrypt"), "{nested:?}");
    let (_, records) = server.audit_records();
    assert!(
        records
            .iter()
            .any(|r| r["operation"] == "UnknownOperation" && r["outcome"] == "UnrecognizedClientException"),
        "{records:?}"
    );
}

/// A request whose body never comes is given up on after `limits.request_timeout_seconds`: a
/// client can't hold a stream, and what the server buffered for it, for longer. The answer is
/// AWS's DependencyTimeoutException with a request id, and is audited; a state change whose body
/// never came has not begun, and says so. Requests that come whole are not affected.
#[tokio::test]
async fn a_request_whose_body_never_comes_is_given_up_on() {
    let server = Server::start_with("[limits]\nrequest_timeout_seconds = 1").await;
    let mut c = server.client().await;
    create_key(&mut c).await;
    let channel = plain_channel(&server).await;
    for method in ["ListKeys", "CreateKey"] {
        let mut raw = tonic::client::Grpc::new(channel.clone());
        raw.ready().await.unwrap();
        let path = format!("/kms.v1.KeyManagementService/{method}");
        let path = tonic::codegen::http::uri::PathAndQuery::try_from(path).unwrap();
        let silent = tokio_stream::pending::<Vec<u8>>();
        let started = Instant::now();
        let call = raw.client_streaming(tonic::Request::new(silent), path, crate::validation::RawCodec);
        let status = tokio::time::timeout(Duration::from_secs(10), call)
            .await
            .expect("the server still waits for the body 10 s later")
            .expect_err("no body, no answer");
        assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
        assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
        assert_eq!(error_type(&status), "DependencyTimeoutException", "{status:?}");
        assert!(status.message().contains("within 1 s"), "{status:?}");
        assert!(status.message().contains("nothing was changed"), "{status:?}");
        let record = server.audit_record_of(&status);
        assert_eq!(record["operation"], method, "{record}");
        assert_eq!(record["outcome"], "DependencyTimeoutException", "{record}");
    }
    create_key(&mut c).await;
}

/// A flood of requests without credentials can't fill the audit disk: past its address's share
/// (100 at once, 20 a second after) the refusals get no record each, but one record a second
/// says how many there were. Every refusal is answered as before, and recorded one way or the
/// other.
#[tokio::test]
async fn a_flood_of_unauthenticated_requests_is_recorded_in_summaries() {
    use crate::auth::{auth_config, expect_unrecognized, BOB, BOB_TOKEN};
    let server = Server::start_with(&auth_config(false, &[(BOB_TOKEN, BOB)], &[], None)).await;
    let anonymous = plain_client(&server, Bearer::default()).await;
    const CALLS: u64 = 1000;
    let calls = (0..CALLS).map(|_| {
        let mut c = anonymous.clone();
        async move { c.list_keys(pb::ListKeysRequest::default()).await }
    });
    for r in futures_join_all(calls).await {
        expect_unrecognized(r);
    }
    // Summaries are written once a second: wait for them (a deadline, not a fixed sleep).
    let deadline = Instant::now() + Duration::from_secs(15);
    let (own, summaries) = loop {
        let (_, records) = server.audit_records();
        let refused: Vec<_> = records
            .into_iter()
            .filter(|r| r["principal"] == "unauthenticated")
            .collect();
        let own = refused.iter().filter(|r| r["operation"] == "ListKeys").count() as u64;
        let summaries: Vec<_> = refused.into_iter().filter(|r| r["operation"] == "*").collect();
        let summarised: u64 = summaries.iter().map(|r| r["count"].as_u64().unwrap()).sum();
        if own + summarised >= CALLS || Instant::now() > deadline {
            break (own, summaries);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let summarised: u64 = summaries.iter().map(|r| r["count"].as_u64().unwrap()).sum();
    // 100 at once, then 20 a second: the flood takes a few seconds on a loaded machine at most.
    assert!(own <= 300, "{own} records of their own for {CALLS} refusals");
    assert!(!summaries.is_empty());
    assert!(summaries
        .iter()
        .all(|r| r["outcome"] == "UnrecognizedClientException" && r["source_ip"] == "127.0.0.1"));
    assert_eq!(own + summarised, CALLS, "every refusal is recorded or counted");
}

/// One address can't take every connection: past `limits.max_connections_per_ip` its new
/// connections are closed as they are accepted, while its open ones are served, and its share
/// comes back when one of them closes.
#[tokio::test]
async fn an_address_past_its_connection_share_is_turned_away() {
    let server = Server::start_with("[limits]\nmax_connections_per_ip = 2").await;
    let mut first = server.client().await;
    let mut second = server.client().await;
    create_key(&mut first).await;
    create_key(&mut second).await;
    let url = format!("http://{}", server.addr);
    let third = Channel::from_shared(url.clone()).unwrap().connect().await;
    if let Ok(channel) = third {
        let mut c = Client::new(channel);
        // The connection is closed (or reset) under it: tonic says Unavailable, Cancelled or
        // Unknown ("transport error"), depending on when it notices.
        let err = c.list_keys(pb::ListKeysRequest::default()).await.unwrap_err();
        assert!(
            matches!(err.code(), Code::Unavailable | Code::Cancelled | Code::Unknown),
            "{err:?}"
        );
        assert!(
            err.metadata().get("x-kms-error-type").is_none(),
            "answered by the server: {err:?}"
        );
    }
    create_key(&mut first).await;
    drop(second);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let fourth = Channel::from_shared(url.clone()).unwrap().connect().await;
        if let Ok(channel) = fourth {
            let mut c = Client::new(channel);
            if c.list_keys(pb::ListKeysRequest::default()).await.is_ok() {
                break;
            }
        }
        assert!(Instant::now() < deadline, "the address's share did not come back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// With `limits.max_connection_age_seconds`, a connection past its age is asked to close with a
/// GOAWAY (no error), and other connections are served.
#[tokio::test]
async fn a_connection_past_its_age_gets_a_goaway() {
    let server = Server::start_with("[limits]\nmax_connection_age_seconds = 1").await;
    let addr = server.addr.clone();
    let (elapsed, goaway) = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let mut s = h2_connect(&addr);
        let frames = read_frames(&mut s, |kind, _| kind == GOAWAY);
        (
            started.elapsed(),
            frames.into_iter().find(|(k, _)| *k == GOAWAY).map(|(_, p)| p),
        )
    })
    .await
    .unwrap();
    let goaway = goaway.unwrap_or_else(|| panic!("no GOAWAY within {elapsed:?}"));
    let code = u32::from_be_bytes([goaway[4], goaway[5], goaway[6], goaway[7]]);
    assert_eq!(code, 0, "GOAWAY with NO_ERROR, got error code {code:#x}");
    assert!(
        elapsed >= Duration::from_millis(900),
        "GOAWAY before the age: {elapsed:?}"
    );
    create_key(&mut server.client().await).await;
}

/// The services listed by gRPC reflection, or the error of a server that doesn't serve it.
async fn reflected_services(server: &Server) -> Result<Vec<String>, tonic::Status> {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    let channel = Channel::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::once(request))
        .await?
        .into_inner();
    match answers.message().await?.and_then(|a| a.message_response) {
        Some(MessageResponse::ListServicesResponse(list)) => Ok(list.service.into_iter().map(|s| s.name).collect()),
        other => panic!("unexpected reflection answer {other:?}"),
    }
}

/// Reflection answers without credentials, with descriptors of ~40 KB that a client which never
/// reads them can pile up in the server's memory: it is served only when configured.
#[tokio::test]
async fn reflection_is_served_only_when_configured() {
    let server = Server::start().await;
    let refused = reflected_services(&server)
        .await
        .expect_err("reflection served by default");
    assert_eq!(refused.code(), Code::Unimplemented, "{refused:?}");

    let server = Server::start_with("reflection = true").await;
    let services = reflected_services(&server).await.unwrap();
    assert!(
        services.iter().any(|s| s == "kms.v1.KeyManagementService"),
        "{services:?}"
    );
}

/// A ListKeys request of `len` bytes or a few more: an unknown field, which decoding skips.
fn padded_list_keys(len: usize) -> Vec<u8> {
    let mut message = vec![(15 << 3) | 2];
    let mut n = len;
    while n >= 0x80 {
        message.push((n as u8) | 0x80);
        n >>= 7;
    }
    message.push(n as u8);
    message.resize(message.len() + len, 0);
    message
}

/// Sends `message` to `method` as the first message of a stream that then stays open, so the
/// server holds it until the call is dropped (a unary method waits for the end of the body).
/// `method` is of the KMS service unless it is a whole path.
async fn send_and_hold(channel: Channel, method: &'static str, message: Vec<u8>) -> Result<Vec<u8>, tonic::Status> {
    use tokio_stream::StreamExt;
    let mut raw = tonic::client::Grpc::new(channel);
    raw.ready().await.unwrap();
    let path = match method.starts_with('/') {
        true => method.parse().unwrap(),
        false => format!("/kms.v1.KeyManagementService/{method}").parse().unwrap(),
    };
    let body = tokio_stream::iter(vec![message]).chain(tokio_stream::pending());
    let call = raw.client_streaming(tonic::Request::new(body), path, crate::validation::RawCodec);
    call.await.map(tonic::Response::into_inner)
}

/// Sends `message` to `method` whole.
async fn send(channel: Channel, method: &'static str, message: Vec<u8>) -> Result<Vec<u8>, tonic::Status> {
    send_as(channel, None, method, message).await
}

/// Sends `message` to `method` whole, with `token` as its bearer token if there is one.
async fn send_as(
    channel: Channel,
    token: Option<&str>,
    method: &'static str,
    message: Vec<u8>,
) -> Result<Vec<u8>, tonic::Status> {
    let mut raw = tonic::client::Grpc::new(channel);
    raw.ready().await.unwrap();
    let path = format!("/kms.v1.KeyManagementService/{method}").parse().unwrap();
    let mut request = tonic::Request::new(message);
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    let call = raw.unary(request, path, crate::validation::RawCodec);
    call.await.map(tonic::Response::into_inner)
}

/// Sends `message` every 50 ms until `done` accepts the result (at most 10 s); returns that result.
async fn send_until(
    channel: &Channel,
    method: &'static str,
    message: &[u8],
    mut done: impl FnMut(&Result<Vec<u8>, tonic::Status>) -> bool,
) -> Result<Vec<u8>, tonic::Status> {
    let started = Instant::now();
    loop {
        let result = send(channel.clone(), method, message.to_vec()).await;
        if done(&result) || started.elapsed() > Duration::from_secs(10) {
            return result;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn throttled(result: &Result<Vec<u8>, tonic::Status>) -> bool {
    matches!(result, Err(s) if error_type(s) == "ThrottlingException")
}

/// The server holds at most `limits.max_request_bytes_in_flight` of request bodies: requests past
/// it are refused at once with ThrottlingException (a request id, an audit record), smaller ones
/// that fit are served, and the bytes come back when the held requests go. Without the cap a
/// client could pin ~260 MiB per connection with bodies it never finishes.
#[tokio::test]
async fn request_bytes_held_past_the_budget_are_refused_until_they_are_let_go() {
    let server = Server::start_with("[limits]\nmax_request_bytes_in_flight = 1048576").await;
    let channel = plain_channel(&server).await;
    // Two requests of 450 KB whose bodies never end: a ListKeys (answered on the connection's
    // task) and a CreateKey (a change, read whole before it runs on its own).
    let create_key = |description: usize| {
        prost::Message::encode_to_vec(&pb::CreateKeyRequest {
            description: "x".repeat(description),
            ..Default::default()
        })
    };
    let hold = |method, message| tokio::spawn(send_and_hold(channel.clone(), method, message));
    let mut held = [
        hold("ListKeys", padded_list_keys(450_000)),
        hold("CreateKey", create_key(450_000)),
    ];
    // 200 KB more does not fit in the 1 MiB the two leave: refused, for either kind of method.
    // (A held request whose bytes come while a probe is in flight is refused instead, and sent again.)
    let probe = padded_list_keys(200_000);
    let refused = send_until(&channel, "ListKeys", &probe, |result| {
        if !throttled(result) {
            if held[0].is_finished() {
                held[0] = hold("ListKeys", padded_list_keys(450_000));
            }
            if held[1].is_finished() {
                held[1] = hold("CreateKey", create_key(450_000));
            }
        }
        throttled(result)
    })
    .await;
    let status = refused.expect_err("200 KB past the budget was served");
    assert_eq!(error_type(&status), "ThrottlingException", "{status:?}");
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(
        status.message(),
        "The server is holding as many request bytes as it may; retry the request later"
    );
    let record = server.audit_record_of(&status);
    assert_eq!(record["operation"], "ListKeys");
    assert_eq!(record["outcome"], "ThrottlingException");
    let status = send(channel.clone(), "CreateKey", create_key(200_000))
        .await
        .unwrap_err();
    assert_eq!(error_type(&status), "ThrottlingException", "{status:?}");
    // A request that fits is served meanwhile.
    let mut c = server.client().await;
    c.list_keys(pb::ListKeysRequest::default()).await.unwrap();
    // Let go of the held requests: their bytes come back, and the same requests are read.
    for h in &held {
        h.abort();
    }
    let served = send_until(&channel, "ListKeys", &probe, |r| !throttled(r)).await;
    served.expect("the held bytes did not come back");
    let status = send(channel.clone(), "CreateKey", create_key(200_000))
        .await
        .unwrap_err();
    assert_eq!(error_type(&status), "ValidationException", "{status:?}");
}

type Held = tokio::task::JoinHandle<Result<Vec<u8>, tonic::Status>>;

/// Sends 300 health checks of 4 KB (1.2 MB) whose streams stay open, and waits (at most 10 s) for
/// the first that is answered: the ones still held, and that answer's error.
async fn hold_300_health_checks(channel: &Channel) -> (Vec<Held>, tonic::Status) {
    let mut held: Vec<Held> = (0..300)
        .map(|_| {
            let message = padded_list_keys(4000); // an unknown field: a valid HealthCheckRequest
            tokio::spawn(send_and_hold(channel.clone(), "/grpc.health.v1.Health/Check", message))
        })
        .collect();
    let started = Instant::now();
    loop {
        if let Some(i) = held.iter().position(|h| h.is_finished()) {
            let answer = held.swap_remove(i).await.unwrap();
            return (held, answer.expect_err("a held health check was answered"));
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "1.2 MB of health checks all held"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The health service answers without credentials, so its requests are charged against the same
/// budget: 300 held health checks of 4 KB do not fit in 1 MiB, and those past it are refused.
#[tokio::test]
async fn health_checks_are_charged_against_the_request_budget() {
    let server = Server::start_with("[limits]\nmax_request_bytes_in_flight = 1048576").await;
    let channel = plain_channel(&server).await;
    let (held, refused) = hold_300_health_checks(&channel).await;
    assert_eq!(error_type(&refused), "ThrottlingException", "{refused:?}");
    for h in held {
        h.abort();
    }
}

/// A request's headers count against the budget from its start: health checks with 12 KB of
/// headers and a body that never ends fill their address's part of the callers-without-credentials
/// share (1 MiB / 64 here) after one, and the next is refused. Counting only their (empty)
/// bodies, each connection could pin 512 streams x 16 KiB of headers for the request timeout.
#[tokio::test]
async fn the_headers_of_requests_whose_bodies_never_come_are_charged() {
    use tokio_stream::StreamExt;
    let server = Server::start_with("[limits]\nmax_request_bytes_in_flight = 1048576").await;
    let channel = plain_channel(&server).await;
    let hold = || {
        let channel = channel.clone();
        tokio::spawn(async move {
            let mut raw = tonic::client::Grpc::new(channel);
            raw.ready().await.unwrap();
            let body = tokio_stream::iter(Vec::<Vec<u8>>::new()).chain(tokio_stream::pending());
            let mut request = tonic::Request::new(body);
            request
                .metadata_mut()
                .insert("x-pad", "p".repeat(12_000).parse().unwrap());
            let path = "/grpc.health.v1.Health/Check".parse().unwrap();
            raw.client_streaming(request, path, crate::validation::RawCodec)
                .await
                .map(tonic::Response::into_inner)
        })
    };
    let first = hold();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!first.is_finished(), "the first is held: its body never comes");
    let second = tokio::time::timeout(Duration::from_secs(5), hold())
        .await
        .expect("the second was held too")
        .unwrap();
    let status = second.expect_err("served");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    first.abort();
    // Let go of, the first's headers come back.
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let mut served = false;
    for _ in 0..200 {
        if health
            .check(tonic_health::pb::HealthCheckRequest::default())
            .await
            .is_ok()
        {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(served, "health checks still refused");
}

const CALLERS_SHARE_REFUSED: &str =
    "The caller's requests hold as many bytes as one caller may; retry the request later";

/// Each principal may hold only its share of the request bytes (`limits.max_request_bytes_per_principal`),
/// and callers without credentials share one: a client holding all it may does not throttle a
/// client under another principal, as it did when the budget was only server-wide.
#[tokio::test]
async fn a_principal_past_its_share_of_request_bytes_does_not_throttle_another() {
    use crate::auth::{auth_config, BOB, BOB_TOKEN};
    let limits = "[limits]\nmax_request_bytes_in_flight = 2097152\nmax_request_bytes_per_principal = 1048576\n";
    let server = Server::start_with(&(auth_config(true, &[(BOB_TOKEN, BOB)], &[], None) + limits)).await;
    let channel = plain_channel(&server).await;
    let hold = || tokio::spawn(send_and_hold(channel.clone(), "ListKeys", padded_list_keys(450_000)));
    // The root (dev mode, no token) holds 900 KB of its 1 MiB share.
    let mut held = [hold(), hold()];
    let probe = padded_list_keys(200_000);
    let refused = send_until(&channel, "ListKeys", &probe, |result| {
        for h in held.iter_mut().filter(|h| h.is_finished()) {
            *h = hold();
        }
        throttled(result)
    })
    .await;
    let status = refused.expect_err("the root's 200 KB past its share was served");
    assert_eq!(error_type(&status), "ThrottlingException", "{status:?}");
    assert_eq!(status.message(), CALLERS_SHARE_REFUSED);
    assert_eq!(server.audit_record_of(&status)["outcome"], "ThrottlingException");
    // Bob's 200 KB fit in the server's budget and in his own share: read, and refused only by
    // authorization (he has no policy).
    let bob = send_as(channel.clone(), Some(BOB_TOKEN), "ListKeys", probe.clone()).await;
    assert_eq!(error_type(&bob.unwrap_err()), "AccessDeniedException");
    for h in &held {
        h.abort();
    }
    // 300 health checks of 4 KB held at once: past the 1 MiB that callers without credentials
    // share, though the server has room for them, so some are refused...
    let (checks, refused) = hold_300_health_checks(&channel).await;
    assert_eq!(error_type(&refused), "ThrottlingException", "{refused:?}");
    assert_eq!(refused.message(), CALLERS_SHARE_REFUSED, "{refused:?}");
    // ...and while they are held, the root's and Bob's requests are still read.
    send(channel.clone(), "ListKeys", Vec::new())
        .await
        .expect("the root's ListKeys was refused");
    let bob = send_as(channel.clone(), Some(BOB_TOKEN), "ListKeys", probe).await;
    assert_eq!(error_type(&bob.unwrap_err()), "AccessDeniedException");
    for h in checks {
        h.abort();
    }
}

/// The sockets the process `pid` has open (its listener and its connections). Reading another
/// process's descriptors needs it dumpable (`core_dumps = true`) or CAP_SYS_PTRACE.
fn open_sockets(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target.to_string_lossy().starts_with("socket:"))
        .count()
}

/// A health Watch stream (gRPC clients with client-side health checking keep one open on each
/// connection) ends with UNAVAILABLE once it is as old as `limits.max_connection_age_seconds`,
/// so its connection, told to go at that age, closes. Before, hyper waited for the stream, and
/// the connection stayed open as long as its client.
#[tokio::test]
async fn a_health_watch_ends_at_the_connection_age_so_its_connection_closes() {
    // Dumpable, so that a test run without CAP_SYS_PTRACE may list the server's descriptors.
    let server = Server::start_with("core_dumps = true\n[limits]\nmax_connection_age_seconds = 1").await;
    let before = open_sockets(server.pid());
    let started = Instant::now();
    let mut updates = watch_health(&server).await;
    assert_eq!(open_sockets(server.pid()), before + 1);
    let end = tokio::time::timeout(Duration::from_secs(10), updates.message())
        .await
        .expect("the watch stream outlived its connection's age by 9 s");
    let status = end.expect_err("the watch stream ended without a status");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(
        status.message(),
        "The stream is as old as a connection may be: watch again"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "ended early: {:?}",
        started.elapsed()
    );
    // With its last stream over, the connection told to go at its age closes.
    let deadline = Instant::now() + Duration::from_secs(20);
    while open_sockets(server.pid()) > before {
        assert!(
            Instant::now() < deadline,
            "the connection stayed open after its watch ended"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
