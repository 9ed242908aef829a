//! What is stored: allow/deny rules and sampling decide which requests are kept (a
//! response follows its request), and redaction masks secrets before anything leaves
//! the capture node.

use regex::Regex;
use serde_json::Value;

/// Headers looked at in a request head; more are ignored by the rules.
const MAX_HEADERS: usize = 128;

/// Request selection. Empty allow lists allow everything; deny wins over allow.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub allow_methods: Vec<String>,
    pub deny_methods: Vec<String>,
    pub allow_urls: Vec<Regex>,
    pub deny_urls: Vec<Regex>,
    /// (header name, value pattern)
    pub allow_headers: Vec<(String, Regex)>,
    pub deny_headers: Vec<(String, Regex)>,
    /// Share of connections kept, 0..=1, by a hash of the connection id.
    pub sample: f64,
}

impl Selection {
    /// Whether the connection is in the sample.
    pub fn samples(&self, connection_id: &str) -> bool {
        if self.sample >= 1.0 {
            return true;
        }
        let hash = crc32fast::hash(connection_id.as_bytes());
        (f64::from(hash) / f64::from(u32::MAX)) < self.sample
    }

    /// Whether the request whose head (start line and headers) is `head` is kept.
    pub fn keeps_head(&self, head: &[u8]) -> bool {
        let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut slots);
        let _ = request.parse(head);
        self.keeps(request.method.unwrap_or(""), request.path.unwrap_or(""), request.headers)
    }

    /// Whether a request (method, target, headers) is kept.
    pub fn keeps(&self, method: &str, target: &str, headers: &[httparse::Header<'_>]) -> bool {
        let method_in = |list: &[String]| list.iter().any(|m| m.eq_ignore_ascii_case(method));
        let header_matches = |rules: &[(String, Regex)]| {
            rules.iter().any(|(name, pattern)| {
                headers
                    .iter()
                    .any(|h| h.name.eq_ignore_ascii_case(name) && pattern.is_match(&String::from_utf8_lossy(h.value)))
            })
        };
        if method_in(&self.deny_methods)
            || self.deny_urls.iter().any(|r| r.is_match(target))
            || header_matches(&self.deny_headers)
        {
            return false;
        }
        (self.allow_methods.is_empty() || method_in(&self.allow_methods))
            && (self.allow_urls.is_empty() || self.allow_urls.iter().any(|r| r.is_match(target)))
            && (self.allow_headers.is_empty() || header_matches(&self.allow_headers))
    }
}

/// Parses `Name: regex` header rules.
pub fn parse_header_rule(rule: &str) -> Result<(String, Regex), String> {
    let (name, pattern) = rule
        .split_once(':')
        .ok_or_else(|| format!("bad header rule {rule:?}: give NAME:REGEX (e.g. \"X-Tenant: ^a$\")"))?;
    let pattern = Regex::new(pattern.trim()).map_err(|e| format!("bad header rule {rule:?}: {}", regex_reason(&e)))?;
    Ok((name.trim().to_string(), pattern))
}

/// Why a pattern is refused, on one line: regex's own message spans several (the
/// pattern, a caret under the fault, then the reason).
pub fn regex_reason(error: &regex::Error) -> String {
    let text = error.to_string();
    let last = text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or_default();
    last.trim().trim_start_matches("error: ").to_string()
}

/// Masking of secrets in stored messages.
#[derive(Debug, Clone)]
pub struct Redaction {
    /// Header names (case-insensitive) whose values are replaced by the mask.
    pub headers: Vec<String>,
    /// JSON object keys (at any depth) whose values are replaced by the mask.
    pub json_fields: Vec<String>,
    pub mask: String,
}

impl Redaction {
    /// The message with secrets masked. Content-Length is rewritten when a JSON body
    /// changes size; bodies that were cut or are chunked are left as they are.
    pub fn apply(&self, message: &[u8], head_len: usize, complete_plain_body: bool) -> Vec<u8> {
        let (head, body) = message.split_at(head_len.min(message.len()));
        let mut lines: Vec<Vec<u8>> = head.split(|&b| b == b'\n').map(|l| l.to_vec()).collect();
        let mut is_json = false;
        for line in lines.iter_mut().skip(1) {
            let text = String::from_utf8_lossy(line).into_owned();
            let Some((name, value)) = text.split_once(':') else { continue };
            if self.headers.iter().any(|h| h.eq_ignore_ascii_case(name.trim())) {
                *line = format!("{name}: {}\r", self.mask).into_bytes();
            }
            if name.trim().eq_ignore_ascii_case("content-type") && value.to_ascii_lowercase().contains("json") {
                is_json = true;
            }
        }
        let mut body = body.to_vec();
        if is_json
            && complete_plain_body
            && !self.json_fields.is_empty()
            && let Ok(mut doc) = serde_json::from_slice::<Value>(&body)
            && self.mask_fields(&mut doc)
        {
            body = serde_json::to_vec(&doc).expect("serialisable");
            for line in lines.iter_mut().skip(1) {
                let text = String::from_utf8_lossy(line).into_owned();
                if text.split_once(':').is_some_and(|(n, _)| n.trim().eq_ignore_ascii_case("content-length")) {
                    *line = format!("Content-Length: {}\r", body.len()).into_bytes();
                }
            }
        }
        let mut out = lines.join(&b'\n');
        out.extend_from_slice(&body);
        out
    }

    fn mask_fields(&self, value: &mut Value) -> bool {
        let mut changed = false;
        match value {
            Value::Object(map) => {
                for (key, v) in map.iter_mut() {
                    if self.json_fields.iter().any(|f| f == key) {
                        *v = Value::String(self.mask.clone());
                        changed = true;
                    } else {
                        changed |= self.mask_fields(v);
                    }
                }
            }
            Value::Array(items) => {
                for v in items {
                    changed |= self.mask_fields(v);
                }
            }
            _ => {}
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(list: &[(&'static str, &'static [u8])]) -> Vec<httparse::Header<'static>> {
        list.iter().map(|(name, value)| httparse::Header { name, value }).collect()
    }

    #[test]
    fn deny_wins_and_empty_allow_lists_allow_all() {
        let mut s = Selection { sample: 1.0, ..Default::default() };
        assert!(s.keeps("GET", "/a", &[]));
        s.allow_methods = vec!["get".into(), "POST".into()];
        s.deny_urls = vec![Regex::new("^/health").unwrap()];
        s.allow_headers = vec![parse_header_rule("X-Tenant: ^(a|b)$").unwrap()];
        assert!(s.keeps("GET", "/a", &headers(&[("x-tenant", b"a")])));
        assert!(!s.keeps("GET", "/a", &headers(&[("x-tenant", b"c")])));
        assert!(!s.keeps("GET", "/healthz", &headers(&[("x-tenant", b"a")])));
        assert!(!s.keeps("DELETE", "/a", &headers(&[("x-tenant", b"a")])));
    }

    #[test]
    fn sampling_keeps_about_the_share_asked() {
        let s = Selection { sample: 0.25, ..Default::default() };
        let kept = (0..4000).filter(|i| s.samples(&format!("conn-{i}"))).count();
        assert!((800..1200).contains(&kept), "{kept}");
    }

    #[test]
    fn redacts_headers_and_json_fields_keeping_lengths_right() {
        let r = Redaction {
            headers: vec!["authorization".into()],
            json_fields: vec!["password".into()],
            mask: "***".into(),
        };
        let body = br#"{"user":"ann","password":"hunter2","nested":[{"password":"x"}]}"#;
        let head = format!(
            "POST /login HTTP/1.1\r\nAuthorization: Bearer abc\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let mut message = head.clone().into_bytes();
        message.extend_from_slice(body);
        let out = String::from_utf8(r.apply(&message, head.len(), true)).unwrap();
        assert!(out.contains("Authorization: ***\r\n"));
        assert!(!out.contains("hunter2") && !out.contains("abc"));
        let (out_head, out_body) = out.split_once("\r\n\r\n").unwrap();
        assert!(out_head.contains(&format!("Content-Length: {}", out_body.len())), "{out}");
        assert!(out_body.contains(r#""user":"ann""#));
    }
}
