//! hyper's HTTP/2 client and server talk over an in-memory pipe whose writes are
//! tapped; the tapped bytes, fed to the decoder, must give back every request as the
//! server received it and every response as the client received it.

use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderMap, HeaderValue};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};

use super::*;

/// Every write either peer made, in the order they were made (so in causal order).
type Wire = Arc<Mutex<Vec<(Direction, Vec<u8>)>>>;

/// One peer's end of the pipe, copying what it writes to the wire log.
struct Tap {
    io: DuplexStream,
    dir: Direction,
    wire: Wire,
}

impl AsyncRead for Tap {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Tap {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let tap = self.get_mut();
        let written = Pin::new(&mut tap.io).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = written {
            tap.wire.lock().unwrap().push((tap.dir, buf[..n].to_vec()));
        }
        written
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// A message as one peer's HTTP/2 stack saw it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Seen {
    pub pseudo: Pseudo,
    pub headers: Vec<Field>,
    pub body: Bytes,
    pub trailers: Vec<Field>,
}

fn fields(map: &HeaderMap) -> Vec<Field> {
    map.iter()
        .map(|(name, value)| (Bytes::copy_from_slice(name.as_ref()), Bytes::copy_from_slice(value.as_bytes())))
        .collect()
}

fn seen_as_decoded(message: &H2Message) -> Seen {
    Seen {
        pseudo: message.pseudo.clone(),
        headers: message.headers.clone(),
        body: message.body.clone(),
        trailers: message.trailers.clone(),
    }
}

type Body = BoxBody<Bytes, Infallible>;

/// Answers by path; records each request as received.
async fn serve(
    request: Request<hyper::body::Incoming>,
    received: Arc<Mutex<Vec<Seen>>>,
) -> Result<Response<Body>, Infallible> {
    let (parts, body) = request.into_parts();
    let collected = body.collect().await.expect("a request body");
    let trailers = collected.trailers().map(fields).unwrap_or_default();
    let body = collected.to_bytes();
    let path = parts.uri.path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_default();
    received.lock().unwrap().push(Seen {
        pseudo: Pseudo::Request {
            method: Bytes::copy_from_slice(parts.method.as_str().as_bytes()),
            scheme: parts.uri.scheme_str().map(|s| Bytes::copy_from_slice(s.as_bytes())),
            authority: parts.uri.authority().map(|a| Bytes::copy_from_slice(a.as_str().as_bytes())),
            path: Some(Bytes::from(path.clone())),
        },
        headers: fields(&parts.headers),
        body: body.clone(),
        trailers,
    });
    let mut trailers = HeaderMap::new();
    let response = Response::builder().header("x-echo-path", &path).header("x-served-by", "reprise-test");
    let response = match path.as_str() {
        "/pkg.Greeter/SayHello" => {
            trailers.insert("grpc-status", HeaderValue::from_static("0"));
            trailers.insert("grpc-message", HeaderValue::from_static("fine"));
            let reply = Full::new(Bytes::from_static(b"\x00\x00\x00\x00\x07\x0a\x05hello"));
            response
                .header("content-type", "application/grpc")
                .body(reply.with_trailers(async { Some(Ok(trailers)) }).boxed())
        }
        "/trailers" => {
            trailers.insert("x-checksum", HeaderValue::from_static("5d41402abc4b2a76"));
            let body = Full::new(Bytes::from_static(b"with trailers"));
            response.status(202).body(body.with_trailers(async { Some(Ok(trailers)) }).boxed())
        }
        "/large-response" => response.body(Full::new(Bytes::from(vec![b'L'; 300_000])).boxed()),
        _ => response
            .status(if parts.method == hyper::Method::POST { 201 } else { 200 })
            .header("content-type", "text/plain")
            .body(Full::new(Bytes::from(format!("{} {path}: {} bytes", parts.method, body.len()))).boxed()),
    };
    Ok(response.expect("a valid response"))
}

fn requests() -> Vec<Request<Full<Bytes>>> {
    let get = |path: &str| {
        Request::get(format!("http://svc.test{path}"))
            // Repeated on every request: indexed in the dynamic table after the first.
            .header("x-trace-id", "4bf92f3577b34da6a3ce929d0e0e4736")
            .header("user-agent", "reprise-test/1.0")
            .header("accept", "application/json")
    };
    vec![
        get("/items?page=1").body(Full::default()),
        get("/items?page=2").header("x-page-token", "Zm9vYmFy").body(Full::default()),
        get("/items?page=3").header("x-page-token", "YmFyYmF6").body(Full::default()),
        Request::post("http://svc.test/orders")
            .header("content-type", "application/json")
            .header("x-trace-id", "4bf92f3577b34da6a3ce929d0e0e4736")
            .body(Full::new(Bytes::from_static(b"{\"item\":\"book\",\"quantity\":2}"))),
        Request::put("http://svc.test/large")
            .header("content-type", "application/octet-stream")
            .body(Full::new(Bytes::from((0..200_000u32).map(|i| (i % 251) as u8).collect::<Vec<u8>>()))),
        get("/trailers").body(Full::default()),
        get("/large-response").body(Full::default()),
        Request::post("http://svc.test/pkg.Greeter/SayHello")
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .header("grpc-timeout", "1S")
            // Two length-prefixed messages.
            .body(Full::new(Bytes::from_static(b"\x00\x00\x00\x00\x05\x0a\x03ann\x00\x00\x00\x00\x05\x0a\x03bob"))),
    ]
    .into_iter()
    .map(|request| request.expect("a valid request"))
    .collect()
}

/// Runs the exchange; the wire log, the requests as the server saw them and the
/// responses as the client saw them.
pub(crate) async fn exchange() -> (Vec<(Direction, Vec<u8>)>, Vec<Seen>, Vec<Seen>) {
    let wire = Wire::default();
    let received = Arc::new(Mutex::new(Vec::new()));
    let (client_end, server_end) = tokio::io::duplex(64 << 10);
    let server_io = Tap { io: server_end, dir: Direction::ServerToClient, wire: wire.clone() };
    let service_received = received.clone();
    let service = hyper::service::service_fn(move |request| serve(request, service_received.clone()));
    let server = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(server_io), service);
    let server = tokio::spawn(server);
    let client_io = Tap { io: client_end, dir: Direction::ClientToServer, wire: wire.clone() };
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(client_io)).await.expect("handshake");
    let client = tokio::spawn(connection);
    // Two at a time, so streams interleave.
    let mut responses = Vec::new();
    let mut pending = requests().into_iter().peekable();
    while pending.peek().is_some() {
        let pair: Vec<Request<Full<Bytes>>> = pending.by_ref().take(2).collect();
        let calls = pair.into_iter().map(|request| {
            let mut sender = sender.clone();
            async move {
                let response = sender.send_request(request).await.expect("a response");
                let (parts, body) = response.into_parts();
                let collected = body.collect().await.expect("a response body");
                Seen {
                    pseudo: Pseudo::Response { status: parts.status.as_u16() },
                    headers: fields(&parts.headers),
                    trailers: collected.trailers().map(fields).unwrap_or_default(),
                    body: collected.to_bytes(),
                }
            }
        });
        responses.extend(futures::future::join_all(calls).await);
    }
    drop(sender);
    client.await.expect("the client connection task").expect("the client connection");
    server.await.expect("the server task").expect("the server connection");
    let wire = wire.lock().unwrap().clone();
    let received = received.lock().unwrap().clone();
    (wire, received, responses)
}

#[tokio::test]
async fn hyper_client_and_server_traffic_decodes_exactly() {
    let (wire, received, responses) = exchange().await;
    let mut connection = H2Connection::new(Arc::new(H2Config::default()));
    let mut out = H2Emitted::default();
    for (i, (dir, bytes)) in wire.iter().enumerate() {
        connection.data(&mut out, *dir, i as i64, bytes);
    }
    connection.closed(&mut out, Direction::ClientToServer);
    connection.closed(&mut out, Direction::ServerToClient);
    assert_eq!(connection.undecodable(), None);

    let by_path = |path: &Option<Bytes>| -> u32 {
        let request = out.messages.iter().find(|m| matches!(&m.pseudo, Pseudo::Request { path: p, .. } if p == path));
        request.expect("the request was decoded").stream_id
    };
    assert_eq!((received.len(), responses.len()), (requests().len(), requests().len()));
    assert_eq!(out.messages.len(), 2 * requests().len(), "{:?}", out.stats);
    for seen_request in &received {
        let Pseudo::Request { path, .. } = &seen_request.pseudo else { unreachable!() };
        let stream_id = by_path(path);
        let decoded: Vec<&H2Message> = out.messages.iter().filter(|m| m.stream_id == stream_id).collect();
        assert_eq!(decoded.len(), 2, "a request and its response on stream {stream_id}");
        assert!(decoded.iter().all(|m| m.end == MessageEnd::Complete && !m.body_truncated()));
        assert_eq!(&seen_as_decoded(decoded[0]), seen_request, "the request on {path:?}");
        assert_eq!(decoded[0].body_len, seen_request.body.len() as u64);
        let response = responses
            .iter()
            .find(|r| r.headers.iter().any(|(n, v)| n == "x-echo-path" && Some(v) == path.as_ref()))
            .expect("the client got a response");
        assert_eq!(&seen_as_decoded(decoded[1]), response, "the response on {path:?}");
    }
    let grpc: Vec<&H2Message> = out.messages.iter().filter(|m| m.is_grpc()).collect();
    assert_eq!(grpc.len(), 2);
    assert_eq!(grpc[1].trailers[0], (Bytes::from_static(b"grpc-status"), Bytes::from_static(b"0")));
    assert_eq!(out.stats, H2Stats { requests: 8, responses: 8, ..H2Stats::default() });
}
