//! Turning a recorded HTTP/1.x request into the request to replay.
//!
//! The recorded bytes are parsed once per record (not per copy): method, path and query,
//! end-to-end headers and the body (de-chunked). Hop-by-hop headers and the framing
//! headers are dropped: the sender's own connection decides framing and keep-alive.

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method, Uri};

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
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RequestError {
    #[error("not an HTTP/1.x request: {0}")]
    Parse(String),
    #[error("the recorded request is incomplete (headers not terminated)")]
    Incomplete,
    #[error("malformed chunked body")]
    BadChunk,
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

const MAX_HEADERS: usize = 128;

/// Parses the raw bytes of a recorded request.
pub fn parse(raw: &Bytes) -> Result<RecordedRequest, RequestError> {
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
            n if HOP_BY_HOP.contains(&n) => {}
            _ => {
                headers.append(name, value);
            }
        }
    }
    let rest = &raw[header_len..];
    let body = if chunked {
        Bytes::from(dechunk(rest)?)
    } else {
        // A truncated capture keeps what it has; the sender frames what is there.
        let len = content_length.map_or(rest.len(), |n| n.min(rest.len()));
        raw.slice(header_len..header_len + len)
    };
    Ok(RecordedRequest { method, path_and_query, headers, host, body })
}

/// Parses a recorded HTTP/1.x response (for `--compare`): status, headers, body
/// (de-chunked, cut to its Content-Length).
pub fn parse_response(raw: &Bytes) -> Result<reprise_rules::diff::Response, RequestError> {
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
    let body = if chunked {
        Bytes::from(dechunk(rest)?)
    } else {
        let declared = headers.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.trim().parse().ok());
        raw.slice(header_len..header_len + declared.map_or(rest.len(), |n: usize| n.min(rest.len())))
    };
    Ok(reprise_rules::diff::Response::Answered { status, headers, body })
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

    #[test]
    fn parses_method_path_headers_and_body() {
        let raw = b"POST /api/items?x=1 HTTP/1.1\r\nHost: shop.example\r\nContent-Type: application/json\r\nContent-Length: 7\r\nConnection: keep-alive\r\nX-Id: 42\r\n\r\n{\"a\":1}";
        let r = parse(&Bytes::from_static(raw)).unwrap();
        assert_eq!(r.method, Method::POST);
        assert_eq!(r.path_and_query, "/api/items?x=1");
        assert_eq!(r.host.as_ref().unwrap(), "shop.example");
        assert_eq!(r.headers.get("x-id").unwrap(), "42");
        assert!(r.headers.get("connection").is_none());
        assert!(r.headers.get("content-length").is_none());
        assert_eq!(&r.body[..], b"{\"a\":1}");
    }

    #[test]
    fn dechunks_bodies() {
        let raw = b"PUT /u HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n";
        let r = parse(&Bytes::from_static(raw)).unwrap();
        assert_eq!(&r.body[..], b"hello world");
        assert!(r.headers.get("transfer-encoding").is_none());
    }

    #[test]
    fn parses_recorded_responses_for_a_compare() {
        let raw = b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\n\r\n";
        let reprise_rules::diff::Response::Answered { status, headers, body } =
            parse_response(&Bytes::from_static(raw)).unwrap()
        else {
            panic!("answered")
        };
        assert_eq!((status, &body[..]), (201, &b"{\"a\":1}"[..]));
        assert_eq!(headers["content-type"], "application/json");
        assert!(parse_response(&Bytes::from_static(b"GET / HTTP/1.1\r\n\r\n")).is_err(), "a request is no response");
    }

    #[test]
    fn refuses_garbage_and_incomplete_requests() {
        assert!(matches!(parse(&Bytes::from_static(b"\x00\x01garbage\r\n\r\n")), Err(RequestError::Parse(_))));
        assert_eq!(parse(&Bytes::from_static(b"GET / HTTP/1.1\r\nHost: x\r\n")).unwrap_err(), RequestError::Incomplete);
    }

    #[test]
    fn target_replaces_scheme_and_authority_and_prefixes_the_path() {
        let t = Target::parse("http://127.0.0.1:8080/staging/").unwrap();
        let r = parse(&Bytes::from_static(b"GET /a?b=c HTTP/1.1\r\nHost: prod\r\n\r\n")).unwrap();
        assert_eq!(t.uri_for(&r).unwrap().to_string(), "http://127.0.0.1:8080/staging/a?b=c");
        let proxy_form = parse(&Bytes::from_static(b"GET http://prod/x?y HTTP/1.1\r\n\r\n")).unwrap();
        assert_eq!(t.uri_for(&proxy_form).unwrap().to_string(), "http://127.0.0.1:8080/staging/x?y");
        assert!(Target::parse("ftp://x").is_err());
        assert!(Target::parse("127.0.0.1:80").is_err());
    }
}
