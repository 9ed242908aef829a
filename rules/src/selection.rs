//! Which requests are kept: allow/deny rules on method, URL and headers, and sampling.
//! Capture applies it before anything is stored; a replay applies it again, with its own
//! rules, before anything is sent.

use regex::Regex;

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
    /// Share kept, 0..=1, by a hash (see [`Selection::samples`]).
    pub sample: f64,
}

impl Selection {
    /// Whether the item named by `key` is in the sample: a hash of the key's parts, so
    /// that every process decides alike (capture keys by connection, replay by
    /// connection and request).
    pub fn samples(&self, key: &[&[u8]]) -> bool {
        if self.sample >= 1.0 {
            return true;
        }
        let mut hasher = crc32fast::Hasher::new();
        for part in key {
            hasher.update(part);
        }
        (f64::from(hasher.finalize()) / f64::from(u32::MAX)) < self.sample
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
        let kept = (0..4000).filter(|i| s.samples(&[format!("conn-{i}").as_bytes()])).count();
        assert!((800..1200).contains(&kept), "{kept}");
    }
}
