//! One access-log line into a request: the Common and Combined Log Formats of nginx and
//! Apache here, JSON lines in `json.rs`; then the request's HTTP/1.1 bytes.
//!
//! `combined` is `host ident user [time] "request" status bytes "referer" "user-agent"`
//! (anything after it, as many configurations append, is ignored); `common` stops after
//! the bytes. Quoted fields are unescaped as the servers escape them: `\xHH` for any
//! byte (nginx, Apache), `\"` and `\\`, and C escapes such as `\t` (Apache), so the
//! request target comes back byte for byte (bytes that are not UTF-8 percent-encoded,
//! see [`split_request`]).

use super::time;

/// Which format the lines are in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Each line on its own: JSON if it starts with `{`, else combined, else common.
    Auto,
    /// nginx's and Apache's combined: common, then "referer" "user-agent" (more is ignored).
    Combined,
    /// host ident user [time] "request" status bytes.
    Common,
    /// One JSON object a line (see --access-log-field).
    Json,
}

/// What a log line says about a request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogLine {
    /// When the server logged it, ns since the Unix epoch.
    pub timestamp_ns: i64,
    pub method: String,
    /// The request target exactly as the client sent it.
    pub target: Vec<u8>,
    pub host: Option<Vec<u8>>,
    pub user_agent: Option<Vec<u8>>,
    pub referer: Option<Vec<u8>>,
    /// Further request headers (JSON logs that have them).
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Option<Vec<u8>>,
    /// The client address as logged.
    pub client: String,
}

/// A cursor over one line of the Common Log Format family.
struct Fields<'a> {
    line: &'a [u8],
    at: usize,
}

impl<'a> Fields<'a> {
    fn skip_spaces(&mut self) {
        while self.line.get(self.at) == Some(&b' ') {
            self.at += 1;
        }
    }

    fn at_end(&mut self) -> bool {
        self.skip_spaces();
        self.at >= self.line.len()
    }

    /// The next field up to a space.
    fn word(&mut self) -> Result<&'a [u8], &'static str> {
        self.skip_spaces();
        let start = self.at;
        while self.at < self.line.len() && self.line[self.at] != b' ' {
            self.at += 1;
        }
        if start == self.at { Err("the line ends early") } else { Ok(&self.line[start..self.at]) }
    }

    /// A `[...]` field, without the brackets.
    fn bracketed(&mut self) -> Result<&'a [u8], &'static str> {
        self.skip_spaces();
        if self.line.get(self.at) != Some(&b'[') {
            return Err("no [time] field");
        }
        let end = self.line[self.at..].iter().position(|&b| b == b']').ok_or("unterminated [time] field")?;
        let field = &self.line[self.at + 1..self.at + end];
        self.at += end + 1;
        Ok(field)
    }

    /// A `"..."` field, unescaped.
    fn quoted(&mut self) -> Result<Vec<u8>, &'static str> {
        self.skip_spaces();
        if self.line.get(self.at) != Some(&b'"') {
            return Err("a quoted field is missing");
        }
        self.at += 1;
        let mut out = Vec::new();
        while let Some(&b) = self.line.get(self.at) {
            self.at += 1;
            match b {
                b'"' => return Ok(out),
                b'\\' => self.escape(&mut out),
                _ => out.push(b),
            }
        }
        Err("unterminated quoted field")
    }

    /// After a backslash: the byte(s) it stands for.
    fn escape(&mut self, out: &mut Vec<u8>) {
        let next = self.line.get(self.at).copied();
        let hex = |i: usize| self.line.get(i).and_then(|&d| (d as char).to_digit(16));
        let byte = match next {
            Some(b'x') => match (hex(self.at + 1), hex(self.at + 2)) {
                (Some(hi), Some(lo)) => {
                    self.at += 3;
                    out.push((hi * 16 + lo) as u8);
                    return;
                }
                _ => None,
            },
            Some(b'"') => Some(b'"'),
            Some(b'\\') => Some(b'\\'),
            Some(b'n') => Some(b'\n'),
            Some(b't') => Some(b'\t'),
            Some(b'r') => Some(b'\r'),
            Some(b'v') => Some(0x0b),
            Some(b'f') => Some(0x0c),
            Some(b'b') => Some(0x08),
            _ => None,
        };
        match byte {
            Some(b) => {
                self.at += 1;
                out.push(b);
            }
            None => out.push(b'\\'),
        }
    }
}

/// `"-"` and empty fields mean "not logged".
fn logged(value: Vec<u8>) -> Option<Vec<u8>> {
    (!value.is_empty() && value != b"-").then_some(value)
}

/// Parses a line of the Common (`combined = false`) or Combined Log Format; with
/// `combined = None` the referer and user agent are taken when they are there.
pub fn parse_clf(line: &[u8], combined: Option<bool>) -> Result<LogLine, &'static str> {
    let mut fields = Fields { line, at: 0 };
    let client = String::from_utf8_lossy(fields.word()?).into_owned();
    fields.word()?; // identd
    fields.word()?; // user
    let stamp = std::str::from_utf8(fields.bracketed()?).map_err(|_| "the time is not text")?;
    let timestamp_ns = time::parse_clf(stamp).ok_or("unreadable time")?;
    let request = fields.quoted()?;
    let status = fields.word()?;
    if !(status == b"-" || status.len() == 3 && status.iter().all(u8::is_ascii_digit)) {
        return Err("the status is not a number");
    }
    fields.word()?; // bytes sent
    let (mut referer, mut user_agent) = (None, None);
    if combined != Some(false) && !fields.at_end() {
        referer = logged(fields.quoted()?);
        user_agent = logged(fields.quoted()?);
    } else if combined == Some(true) {
        return Err("no referer and user agent: not the combined format");
    }
    let (method, target) = split_request(&request)?;
    Ok(LogLine { timestamp_ns, method, target, user_agent, referer, client, ..LogLine::default() })
}

/// `METHOD target [HTTP/x.y]` into the method and the target.
pub fn split_request(request: &[u8]) -> Result<(String, Vec<u8>), &'static str> {
    let mut parts = request.splitn(2, |&b| b == b' ');
    let method = parts.next().unwrap_or_default();
    let rest = parts.next().ok_or("the request line has no target")?;
    let target = match rest.iter().rposition(|&b| b == b' ') {
        Some(space) if rest[space + 1..].starts_with(b"HTTP/") => &rest[..space],
        _ => rest,
    };
    if method.is_empty() || !method.iter().all(is_token) {
        return Err("the request line has no method");
    }
    if target.is_empty() || target.iter().any(|&b| b <= b' ' || b == 0x7f) {
        return Err("the request target is empty or has spaces or control bytes");
    }
    Ok((String::from_utf8_lossy(method).into_owned(), utf8_target(target)))
}

/// An HTTP token byte (method, header name).
fn is_token(b: &u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b)
}

/// The target with every byte that is not part of UTF-8 percent-encoded: servers log
/// such bytes (a Latin-1 query) as `\xHH`, but a replayed request line must be UTF-8
/// to be parsed at all, and `%HH` reaches the application as the same byte.
fn utf8_target(target: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(target.len());
    for chunk in target.utf8_chunks() {
        out.extend_from_slice(chunk.valid().as_bytes());
        for byte in chunk.invalid() {
            out.extend_from_slice(format!("%{byte:02X}").as_bytes());
        }
    }
    out
}

/// The request as HTTP/1.1 bytes: the request line with the target byte for byte, Host,
/// User-Agent, Referer, the other logged headers, and the body with its length.
pub fn to_http(line: &LogLine, default_host: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(128 + line.target.len());
    out.extend_from_slice(line.method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(&line.target);
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut header = |name: &str, value: &[u8]| {
        // A header that would break the head (a name that is no token, a control byte in
        // the value) is left out rather than mangled.
        let value_byte = |&b: &u8| b == b'\t' || (b >= b' ' && b != 0x7f);
        if !name.is_empty() && name.as_bytes().iter().all(is_token) && value.iter().all(value_byte) {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value);
            out.extend_from_slice(b"\r\n");
        }
    };
    header("Host", line.host.as_deref().unwrap_or(default_host.as_bytes()));
    if let Some(agent) = &line.user_agent {
        header("User-Agent", agent);
    }
    if let Some(referer) = &line.referer {
        header("Referer", referer);
    }
    const OWN: &[&str] = &["host", "user-agent", "referer", "content-length", "transfer-encoding"];
    for (name, value) in &line.headers {
        if !OWN.iter().any(|own| own.eq_ignore_ascii_case(name)) {
            header(name, value);
        }
    }
    let body = line.body.as_deref().unwrap_or_default();
    if !body.is_empty() || matches!(line.method.as_str(), "POST" | "PUT" | "PATCH") {
        header("Content-Length", body.len().to_string().as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const COMBINED: &[u8] = br#"127.0.0.1 - frank [10/Oct/2000:13:55:36 -0700] "GET /a%20b?x=1&y=\x22q\x22 HTTP/1.1" 200 2326 "http://ref.example/start" "curl/8.0 \"quoted\"" "extra""#;

    #[test]
    fn combined_lines_give_method_target_agent_and_referer() {
        let line = parse_clf(COMBINED, None).unwrap();
        assert_eq!(line.method, "GET");
        assert_eq!(line.target, br#"/a%20b?x=1&y="q""#);
        assert_eq!(line.referer.as_deref(), Some(&b"http://ref.example/start"[..]));
        assert_eq!(line.user_agent.as_deref(), Some(&br#"curl/8.0 "quoted""#[..]));
        assert_eq!(line.timestamp_ns, 971_211_336_000_000_000);
        assert_eq!(line.client, "127.0.0.1");
        assert_eq!(parse_clf(COMBINED, Some(true)).unwrap(), line);
    }

    #[test]
    fn common_lines_have_no_agent() {
        let common = br#"::1 - - [10/Oct/2000:13:55:36 +0000] "POST /form HTTP/1.0" 201 -"#;
        let line = parse_clf(common, None).unwrap();
        assert_eq!((line.method.as_str(), &line.target[..], line.user_agent), ("POST", &b"/form"[..], None));
        assert!(parse_clf(common, Some(true)).is_err(), "combined needs the referer and agent");
        assert_eq!(parse_clf(COMBINED, Some(false)).unwrap().user_agent, None, "common ignores the rest");
    }

    #[test]
    fn what_would_break_a_stored_head_is_left_out_or_encoded() {
        // Found by the access_log fuzz target: a control byte in a logged value, or a
        // header name that is no token, made a head no HTTP parser reads back.
        let mut line = parse_clf(COMBINED, None).unwrap();
        line.target = b"/".to_vec();
        line.host = Some(b"shop\x08".to_vec());
        line.headers = vec![
            ("X(A)".into(), b"1".to_vec()),
            ("X-B".into(), b"a\x00b".to_vec()),
            ("X-C".into(), "\tc\u{e9}".as_bytes().to_vec()),
        ];
        assert_eq!(
            String::from_utf8(to_http(&line, "default")).unwrap(),
            "GET / HTTP/1.1\r\nUser-Agent: curl/8.0 \"quoted\"\r\nReferer: http://ref.example/start\r\n\
             X-C: \tc\u{e9}\r\n\r\n"
        );
        // A request line must be UTF-8 to be replayed: other bytes are sent as %HH.
        assert_eq!(split_request(b"GET /caf\xe9?q=\xff\xfe HTTP/1.1").unwrap().1, b"/caf%E9?q=%FF%FE");
        assert_eq!(split_request("GET /caf\u{e9} HTTP/1.1".as_bytes()).unwrap().1, "/caf\u{e9}".as_bytes());
    }

    #[test]
    fn malformed_lines_say_why() {
        for (bad, why) in [
            (&br#"1.2.3.4 - - [10/Oct/2000:13:55:36 -0700] "\x16\x03\x01" 400 0 "-" "-""#[..], "no target"),
            (br#"1.2.3.4 - - [10/Oct/2000:13:55:36 -0700] "GET /x HTTP/1.1" 2xx 0"#, "status"),
            (br#"1.2.3.4 - - [yesterday] "GET /x HTTP/1.1" 200 0"#, "time"),
            (br#"1.2.3.4 - - [10/Oct/2000:13:55:36 -0700] "GET /x"#, "unterminated"),
            (b"1.2.3.4 -", "early"),
        ] {
            let error = parse_clf(bad, None).unwrap_err();
            assert!(error.contains(why), "{error} for {:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn requests_become_http_1_1_bytes() {
        let mut line = parse_clf(COMBINED, None).unwrap();
        line.headers = vec![("X-Tenant".into(), b"a".to_vec()), ("Host".into(), b"ignored".to_vec())];
        let http = String::from_utf8(to_http(&line, "shop.example")).unwrap();
        assert_eq!(
            http,
            "GET /a%20b?x=1&y=\"q\" HTTP/1.1\r\nHost: shop.example\r\nUser-Agent: curl/8.0 \"quoted\"\r\n\
             Referer: http://ref.example/start\r\nX-Tenant: a\r\n\r\n"
        );
        line.method = "POST".into();
        line.body = Some(b"a=1".to_vec());
        assert!(String::from_utf8(to_http(&line, "h")).unwrap().ends_with("Content-Length: 3\r\n\r\na=1"));
    }
}
