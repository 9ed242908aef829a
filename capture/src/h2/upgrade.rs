//! HTTP/1.1 `Upgrade: h2c` (RFC 7540 §3.2): the request that asked for the upgrade
//! becomes stream 1 of the HTTP/2 connection, sent whole before the upgrade.

use base64::Engine;
use base64::alphabet::URL_SAFE;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use bytes::Bytes;

use super::frame::{Settings, parse_settings};
use super::message::{Builder, Field, H2Message, MessageEnd, Pseudo};

/// The HTTP/1.1 request that was answered with `101 Switching Protocols` to h2c.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Http1RequestParts {
    pub method: Bytes,
    /// The request target.
    pub path: Bytes,
    /// The Host header's value.
    pub authority: Option<Bytes>,
    /// Header fields as on the HTTP/1.1 wire (any case), HTTP2-Settings included.
    pub headers: Vec<Field>,
    pub body: Bytes,
}

/// HTTP/1.1 fields that HTTP/2 forbids (RFC 9113 §8.2.2) or carries otherwise (Host as
/// :authority, HTTP2-Settings as the client's first settings).
const NOT_IN_HTTP2: [&str; 8] =
    ["connection", "host", "http2-settings", "keep-alive", "proxy-connection", "te", "transfer-encoding", "upgrade"];

impl Http1RequestParts {
    /// The request as HTTP/2 would carry it on stream 1: names lower-cased, the fields
    /// HTTP/2 has no place for left out (and those Connection names), `te: trailers`
    /// kept (the one TE value HTTP/2 allows, which gRPC sends).
    pub(super) fn into_message(self, max_body: usize, ts_ns: i64) -> H2Message {
        let connection_options: Vec<Vec<u8>> = self
            .headers
            .iter()
            .filter(|(name, _)| name.eq_ignore_ascii_case(b"connection"))
            .flat_map(|(_, value)| value.split(|&b| b == b','))
            .map(|option| option.trim_ascii().to_ascii_lowercase())
            .collect();
        let headers = self
            .headers
            .into_iter()
            .map(|(name, value)| (Bytes::from(name.to_ascii_lowercase()), value))
            .filter(|(name, value)| {
                let forbidden = NOT_IN_HTTP2.iter().any(|n| n.as_bytes() == name)
                    || connection_options.iter().any(|option| option == name);
                !forbidden || (name == "te" && value.trim_ascii().eq_ignore_ascii_case(b"trailers"))
            })
            .collect();
        let pseudo = Pseudo::Request {
            method: self.method,
            scheme: Some(Bytes::from_static(b"http")),
            authority: self.authority,
            path: Some(self.path),
        };
        let mut builder = Builder::new(pseudo, headers, ts_ns);
        builder.push_body(&self.body, max_body);
        builder.finish(1, ts_ns, MessageEnd::Complete, ts_ns)
    }

    /// The client's settings from its HTTP2-Settings field (a SETTINGS payload in
    /// base64url), which the server applies as if received in a SETTINGS frame.
    pub(super) fn http2_settings(&self) -> Result<Settings, &'static str> {
        let Some((_, value)) = self.headers.iter().find(|(name, _)| name.eq_ignore_ascii_case(b"http2-settings"))
        else {
            return Ok(Settings::default());
        };
        // base64url, padded or not (RFC 7540 §3.2.1 says without; be lenient).
        let lenient = GeneralPurpose::new(
            &URL_SAFE,
            GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
        );
        let payload =
            lenient.decode(value.trim_ascii()).map_err(|_| "an HTTP2-Settings field that is not base64url")?;
        parse_settings(&payload)
    }
}
