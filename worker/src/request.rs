//! Turning a recorded request into the request to replay.
//!
//! The recorded bytes are parsed once per record (not per copy): method, path and query,
//! end-to-end headers and the body. Hop-by-hop headers and the framing headers are
//! dropped: the sender's own connection decides framing and keep-alive.
//!
//! An HTTP/2 record is stored in HTTP/1.1 form (see `TrafficRecord.http`) and replayed
//! over HTTP/2: its body is everything after the head (HTTP/2 has no chunking), `te:
//! trailers` stays (gRPC servers refuse a call without it), its recorded trailers are
//! sent as trailers, and a length is declared only if the original declared one.

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method, Uri, Version};
use reprise_proto::v1::HttpProtocol;

/// A recorded request, ready to be sent any number of times.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: Method,
    /// Path and query as recorded (`/a/b?c=d`).
    pub path_and_query: String,
    pub headers: HeaderMap,
    /// The recorded `Host` header, sent instead of the target's with `keep_host`.
    pub host: Option<HeaderValue>,
    pub body: Bytes,
    /// HTTP/1.1, or HTTP/2 for a record captured on HTTP/2.
    pub version: Version,
    /// Sent after the body (HTTP/2 only).
    pub trailers: Option<HeaderMap>,
    /// Whether the request declares its body's length. HTTP/1.x always does (the sender
    /// frames it); an HTTP/2 request only if the original had a `content-length`.
    pub declares_length: bool,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RequestError {
    #[error("not an HTTP/1.x request: {0}")]
    Parse(String),
    #[error("the recorded request is incomplete (headers not terminated)")]
    Incomplete,
    #[error("malformed chunked body")]
    BadChunk,
    #[error("malformed trailer line: {0:?}")]
    BadTrailer(String),
}

/// Headers that describe one hop, not the request.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "te",
    "trailer",
    "content-length",
];

/// Headers HTTP/2 forbids (RFC 9113 8.2.2), and the length, which the sender declares.
/// `te` is handled apart: `te: trailers` is allowed and must stay.
const HTTP2_CONNECTION_SPECIFIC: &[&str] =
    &["connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "content-length"];

const MAX_HEADERS: usize = 128;

/// Parses a recorded request: its raw bytes, the protocol it was captured on and, for
/// HTTP/2, its trailer lines (`TrafficRecord.trailers`).
pub fn parse(raw: &Bytes, protocol: HttpProtocol, trailers: &[u8]) -> Result<RecordedRequest, RequestError> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut slots);
    let header_len = match parsed.parse(raw) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Err(RequestError::Incomplete),
        Err(e) => return Err(RequestError::Parse(e.to_string())),
    };
    let method = Method::from_bytes(parsed.method.unwrap_or_default().as_bytes())
        .map_err(|e| RequestError::Parse(format!("method: {e}")))?;
    let path_and_query = parsed.path.unwrap_or("/").to_string();
    let http2 = protocol == HttpProtocol::Http2;
    let mut headers = HeaderMap::with_capacity(parsed.headers.len());
    let mut host = None;
    let mut chunked = false;
    let mut content_length = None;
    for h in parsed.headers.iter() {
        let name =
            HeaderName::from_bytes(h.name.as_bytes()).map_err(|e| RequestError::Parse(format!("header name: {e}")))?;
        let value = HeaderValue::from_bytes(h.value).map_err(|e| RequestError::Parse(format!("header value: {e}")))?;
        match name.as_str() {
            "host" => host = Some(value),
            "transfer-encoding" => chunked = value.to_str().is_ok_and(|v| v.to_ascii_lowercase().contains("chunked")),
            "content-length" => content_length = value.to_str().ok().and_then(|v| v.trim().parse::<usize>().ok()),
            "te" if http2 && value.as_bytes().eq_ignore_ascii_case(b"trailers") => {
                headers.append(name, value);
            }
            n if http2 && (n == "te" || HTTP2_CONNECTION_SPECIFIC.contains(&n)) => {}
            n if !http2 && HOP_BY_HOP.contains(&n) => {}
            _ => {
                headers.append(name, value);
            }
        }
    }
    // Fields the request named in `Connection` were for that hop only (an h2c upgrade's
    // `HTTP2-Settings`, say).
    for named in connection_named(parsed.headers) {
        headers.remove(named);
    }
    let rest = &raw[header_len..];
    let body = if http2 {
        // Stored as received: never chunk-coded, and a cut body is what there is.
        raw.slice(header_len..)
    } else if chunked {
        Bytes::from(dechunk(rest)?)
    } else {
        // A truncated capture keeps what it has; the sender frames what is there.
        let len = content_length.map_or(rest.len(), |n| n.min(rest.len()));
        raw.slice(header_len..header_len + len)
    };
    let (version, trailers) = match http2 {
        true => (Version::HTTP_2, parse_trailers(trailers)?),
        false => (Version::HTTP_11, None),
    };
    let declares_length = !http2 || content_length.is_some();
    Ok(RecordedRequest { method, path_and_query, headers, host, body, version, trailers, declares_length })
}

/// The field names a message's `Connection` headers list.
fn connection_named<'a>(fields: &'a [httparse::Header<'_>]) -> impl Iterator<Item = HeaderName> + 'a {
    fields
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("connection"))
        .flat_map(|h| h.value.split(|&b| b == b','))
        .filter_map(|name| HeaderName::from_bytes(name.trim_ascii()).ok())
}

/// Recorded trailer lines (`name: value\r\n` each) as a map; `None` if there are none.
fn parse_trailers(lines: &[u8]) -> Result<Option<HeaderMap>, RequestError> {
    if lines.is_empty() {
        return Ok(None);
    }
    let mut trailers = HeaderMap::new();
    for line in lines.split(|&b| b == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l)).filter(|l| !l.is_empty()) {
        let bad = || RequestError::BadTrailer(String::from_utf8_lossy(line).into_owned());
        let colon = line.iter().position(|&b| b == b':').ok_or_else(bad)?;
        let name = HeaderName::from_bytes(&line[..colon]).map_err(|_| bad())?;
        let value = HeaderValue::from_bytes(line[colon + 1..].trim_ascii()).map_err(|_| bad())?;
        trailers.append(name, value);
    }
    Ok(Some(trailers))
}

/// Parses a recorded response (for `--compare`): status, headers, body (HTTP/1.x:
/// de-chunked, cut to its Content-Length) and trailers (HTTP/2).
pub fn parse_response(
    raw: &Bytes,
    protocol: HttpProtocol,
    trailers: &[u8],
) -> Result<reprise_rules::diff::Response, RequestError> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut slots);
    let header_len = match parsed.parse(raw) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Err(RequestError::Incomplete),
        Err(e) => return Err(RequestError::Parse(e.to_string())),
    };
    let status = parsed.code.ok_or_else(|| RequestError::Parse("no status".into()))?;
    let mut headers = HeaderMap::with_capacity(parsed.headers.len());
    for h in parsed.headers.iter() {
        let name =
            HeaderName::from_bytes(h.name.as_bytes()).map_err(|e| RequestError::Parse(format!("header name: {e}")))?;
        let value = HeaderValue::from_bytes(h.value).map_err(|e| RequestError::Parse(format!("header value: {e}")))?;
        headers.append(name, value);
    }
    let chunked = headers
        .get(http::header::TRANSFER_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let rest = &raw[header_len..];
    let body = if protocol == HttpProtocol::Http2 {
        raw.slice(header_len..)
    } else if chunked {
        Bytes::from(dechunk(rest)?)
    } else {
        let declared = headers.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.trim().parse().ok());
        raw.slice(header_len..header_len + declared.map_or(rest.len(), |n: usize| n.min(rest.len())))
    };
    let trailers = parse_trailers(trailers)?.unwrap_or_default();
    Ok(reprise_rules::diff::Response::Answered { status, headers, body, trailers })
}

/// Decodes a chunked body, ignoring trailers. A body cut short keeps the complete chunks.
fn dechunk(mut input: &[u8]) -> Result<Vec<u8>, RequestError> {
    let mut out = Vec::with_capacity(input.len());
    loop {
        let Some(line_end) = input.windows(2).position(|w| w == b"\r\n") else {
            return Ok(out);
        };
        let size_text = std::str::from_utf8(&input[..line_end]).map_err(|_| RequestError::BadChunk)?;
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| RequestError::BadChunk)?;
        input = &input[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        let take = size.min(input.len());
        out.extend_from_slice(&input[..take]);
        if take < size || input.len() < size + 2 {
            return Ok(out);
        }
        input = &input[size + 2..];
    }
}

/// Where replayed requests go: scheme, authority and an optional path prefix of the
/// target URL replace the recorded ones.
#[derive(Debug, Clone)]
pub struct Target {
    pub scheme: http::uri::Scheme,
    pub authority: http::uri::Authority,
    /// Prepended to every recorded path (no trailing slash).
    pub path_prefix: String,
}

impl Target {
    pub fn parse(url: &str) -> Result<Self, String> {
        let uri: Uri = url.parse().map_err(|e| format!("target {url:?} is not a URL: {e}"))?;
        let scheme =
            uri.scheme().cloned().ok_or_else(|| format!("target {url:?} has no scheme (http:// or https://)"))?;
        if scheme != http::uri::Scheme::HTTP && scheme != http::uri::Scheme::HTTPS {
            return Err(format!("target {url:?}: only http:// and https:// are supported"));
        }
        let authority = uri.authority().cloned().ok_or_else(|| format!("target {url:?} has no host"))?;
        let path_prefix = uri.path().trim_end_matches('/').to_string();
        Ok(Target { scheme, authority, path_prefix })
    }

    /// The URI to send `request` to.
    pub fn uri_for(&self, request: &RecordedRequest) -> Result<Uri, http::Error> {
        let path = if request.path_and_query.starts_with('/') {
            format!("{}{}", self.path_prefix, request.path_and_query)
        } else {
            // An absolute-form or asterisk target: keep only its path and query.
            let recorded: Uri = request.path_and_query.parse().unwrap_or_else(|_| Uri::from_static("/"));
            format!("{}{}", self.path_prefix, recorded.path_and_query().map_or("/", |p| p.as_str()))
        };
        Uri::builder().scheme(self.scheme.clone()).authority(self.authority.clone()).path_and_query(path).build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h1(raw: &'static [u8]) -> Result<RecordedRequest, RequestError> {
        parse(&Bytes::from_static(raw), HttpProtocol::Http1, b"")
    }

    #[test]
    fn an_http2_record_keeps_te_trailers_its_whole_body_and_its_trailers() {
        let raw = b"POST /pkg.Greeter/SayHello HTTP/1.1\r\nhost: svc:50051\r\ncontent-type: application/grpc\r\n\
                    te: trailers\r\nuser-agent: tonic\r\n\r\n\x00\x00\x00\x00\x05\x0a\x03ann\r\n0\r\n";
        let r = parse(&Bytes::from_static(raw), HttpProtocol::Http2, b"x-checksum: 7\r\nx-n: 1\r\nx-n: 2\r\n").unwrap();
        assert_eq!((r.version, r.declares_length), (Version::HTTP_2, false));
        assert_eq!(r.headers["te"], "trailers", "gRPC servers refuse a call without it");
        assert_eq!(r.host.as_ref().unwrap(), "svc:50051");
        assert_eq!(&r.body[..], b"\x00\x00\x00\x00\x05\x0a\x03ann\r\n0\r\n", "everything after the head, as received");
        let trailers = r.trailers.unwrap();
        assert_eq!(trailers["x-checksum"], "7");
        assert_eq!(trailers.get_all("x-n").iter().collect::<Vec<_>>(), ["1", "2"]);

        let with_length = b"PUT /a HTTP/1.1\r\ncontent-length: 2\r\nte: gzip\r\nconnection: close\r\n\r\nok";
        let r = parse(&Bytes::from_static(with_length), HttpProtocol::Http2, b"").unwrap();
        assert!(r.declares_length && r.trailers.is_none());
        assert!(r.headers.is_empty(), "te other than trailers and connection fields are not HTTP/2's: {:?}", r.headers);
        assert!(matches!(
            parse(&Bytes::from_static(with_length), HttpProtocol::Http2, b"no colon\r\n"),
            Err(RequestError::BadTrailer(_))
        ));
    }

    #[test]
    fn an_http2_response_keeps_its_whole_body_and_trailers() {
        let raw = b"HTTP/1.1 200 OK\r\ncontent-type: application/grpc\r\n\r\n\x00\x00\x00\x00\x00";
        let reprise_rules::diff::Response::Answered { status, body, trailers, .. } =
            parse_response(&Bytes::from_static(raw), HttpProtocol::Http2, b"grpc-status: 0\r\n").unwrap()
        else {
            panic!("answered")
        };
        assert_eq!((status, &body[..]), (200, &b"\x00\x00\x00\x00\x00"[..]));
        assert_eq!(trailers["grpc-status"], "0");
    }

    #[test]
    fn parses_method_path_headers_and_body() {
        let raw = b"POST /api/items?x=1 HTTP/1.1\r\nHost: shop.example\r\nContent-Type: application/json\r\nContent-Length: 7\r\nConnection: keep-alive, HTTP2-Settings\r\nHTTP2-Settings: AAMA\r\nX-Id: 42\r\n\r\n{\"a\":1}";
        let r = h1(raw).unwrap();
        assert_eq!(r.method, Method::POST);
        assert_eq!(r.path_and_query, "/api/items?x=1");
        assert_eq!(r.host.as_ref().unwrap(), "shop.example");
        assert_eq!(r.headers.get("x-id").unwrap(), "42");
        assert!(r.headers.get("connection").is_none());
        assert!(r.headers.get("http2-settings").is_none(), "named in Connection: this hop's only");
        assert!(r.headers.get("content-length").is_none());
        assert_eq!(&r.body[..], b"{\"a\":1}");
    }

    #[test]
    fn dechunks_bodies() {
        let raw = b"PUT /u HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n";
        let r = h1(raw).unwrap();
        assert_eq!(&r.body[..], b"hello world");
        assert!(r.headers.get("transfer-encoding").is_none());
    }

    #[test]
    fn parses_recorded_responses_for_a_compare() {
        let raw = b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\n\r\n";
        let reprise_rules::diff::Response::Answered { status, headers, body, .. } =
            parse_response(&Bytes::from_static(raw), HttpProtocol::Http1, b"").unwrap()
        else {
            panic!("answered")
        };
        assert_eq!((status, &body[..]), (201, &b"{\"a\":1}"[..]));
        assert_eq!(headers["content-type"], "application/json");
        assert!(
            parse_response(&Bytes::from_static(b"GET / HTTP/1.1\r\n\r\n"), HttpProtocol::Http1, b"").is_err(),
            "a request is no response"
        );
    }

    #[test]
    fn refuses_garbage_and_incomplete_requests() {
        assert!(matches!(h1(b"\x00\x01garbage\r\n\r\n"), Err(RequestError::Parse(_))));
        assert_eq!(h1(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap_err(), RequestError::Incomplete);
    }

    #[test]
    fn target_replaces_scheme_and_authority_and_prefixes_the_path() {
        let t = Target::parse("http://127.0.0.1:8080/staging/").unwrap();
        let r = h1(b"GET /a?b=c HTTP/1.1\r\nHost: prod\r\n\r\n").unwrap();
        assert_eq!(t.uri_for(&r).unwrap().to_string(), "http://127.0.0.1:8080/staging/a?b=c");
        let proxy_form = h1(b"GET http://prod/x?y HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(t.uri_for(&proxy_form).unwrap().to_string(), "http://127.0.0.1:8080/staging/x?y");
        assert!(Target::parse("ftp://x").is_err());
        assert!(Target::parse("127.0.0.1:80").is_err());
    }
}
