//! What is stored: the selection (`reprise_rules::selection`) decides which requests are kept (a response follows
//! its request), and redaction masks secrets before anything leaves the capture node.

use serde_json::Value;

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
    /// The message with secrets masked, or `None` when nothing in it is to be masked (the
    /// common case, which then costs no copy). Content-Length is rewritten when a JSON
    /// body changes size; bodies that were cut or are chunked are left as they are.
    pub fn apply(&self, message: &[u8], head_len: usize, complete_plain_body: bool) -> Option<Vec<u8>> {
        let (head, body) = message.split_at(head_len.min(message.len()));
        let mut masked_headers = false;
        let mut is_json = false;
        for (name, value) in header_lines(head) {
            masked_headers |= self.masks_header(name);
            is_json |= name.eq_ignore_ascii_case(b"content-type") && contains_ignore_case(value, b"json");
        }
        let json_body = (is_json && complete_plain_body && self.may_hold_json_field(body))
            .then(|| serde_json::from_slice::<Value>(body).ok())
            .flatten()
            .and_then(|mut doc| self.mask_fields(&mut doc).then(|| serde_json::to_vec(&doc).expect("serialisable")));
        if !masked_headers && json_body.is_none() {
            return None;
        }
        let mut out = Vec::with_capacity(message.len() + 16);
        for (index, line) in head.split_inclusive(|&b| b == b'\n').enumerate() {
            let name = (index > 0).then(|| line.iter().position(|&b| b == b':')).flatten().map(|colon| &line[..colon]);
            let replaced = match name {
                Some(name) if self.masks_header(name.trim_ascii()) => {
                    out.extend_from_slice(name);
                    out.extend_from_slice(b": ");
                    out.extend_from_slice(self.mask.as_bytes());
                    true
                }
                Some(name) if json_body.is_some() && name.trim_ascii().eq_ignore_ascii_case(b"content-length") => {
                    let length = json_body.as_ref().map_or(0, Vec::len);
                    out.extend_from_slice(format!("Content-Length: {length}").as_bytes());
                    true
                }
                _ => false,
            };
            match (replaced, line.ends_with(b"\n")) {
                (false, _) => out.extend_from_slice(line),
                (true, true) => out.extend_from_slice(b"\r\n"),
                (true, false) => out.push(b'\r'),
            }
        }
        out.extend_from_slice(json_body.as_deref().unwrap_or(body));
        Some(out)
    }

    /// Whether a header's (or an HTTP/2 trailer's) value is masked.
    pub fn masks_header(&self, name: &[u8]) -> bool {
        self.headers.iter().any(|h| h.as_bytes().eq_ignore_ascii_case(name))
    }

    /// Whether a JSON body may hold a field to mask: without escapes a key is spelled out
    /// between quotes, so a body with neither an escape nor `"field"` has none.
    fn may_hold_json_field(&self, body: &[u8]) -> bool {
        !self.json_fields.is_empty()
            && (body.contains(&b'\\')
                || self.json_fields.iter().any(|f| body.windows(f.len() + 2).any(|w| quoted(w, f.as_bytes()))))
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

/// The head's header lines (after the start line) as (trimmed name, value).
fn header_lines(head: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    head.split(|&b| b == b'\n').skip(1).filter_map(|line| {
        let colon = line.iter().position(|&b| b == b':')?;
        Some((line[..colon].trim_ascii(), &line[colon + 1..]))
    })
}

fn contains_ignore_case(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w.eq_ignore_ascii_case(needle))
}

fn quoted(window: &[u8], field: &[u8]) -> bool {
    window.first() == Some(&b'"') && window.last() == Some(&b'"') && &window[1..window.len() - 1] == field
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let out = String::from_utf8(r.apply(&message, head.len(), true).unwrap()).unwrap();
        assert!(out.contains("Authorization: ***\r\n"));
        assert!(!out.contains("hunter2") && !out.contains("abc"));
        let (out_head, out_body) = out.split_once("\r\n\r\n").unwrap();
        assert!(out_head.contains(&format!("Content-Length: {}", out_body.len())), "{out}");
        assert!(out_body.contains(r#""user":"ann""#));
    }

    fn redaction() -> Redaction {
        Redaction { headers: vec!["cookie".into()], json_fields: vec!["password".into()], mask: "x".into() }
    }

    #[test]
    fn a_message_with_nothing_to_mask_is_left_alone() {
        let message =
            b"POST /a HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 13\r\n\r\n{\"user\":\"an\"}";
        let head_len = message.len() - 13;
        assert_eq!(redaction().apply(message, head_len, true), None);
        // A colon in the start line is no header.
        assert_eq!(redaction().apply(b"GET http://cookie:1/ HTTP/1.1\r\n\r\n", 33, true), None);
    }

    #[test]
    fn an_escaped_key_is_masked_too() {
        let body = br#"{"pass\u0077ord":"hunter2"}"#;
        let head =
            format!("POST /a HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n", body.len());
        let message = [head.as_bytes(), body].concat();
        let out = String::from_utf8(redaction().apply(&message, head.len(), true).unwrap()).unwrap();
        assert!(out.ends_with(r#"{"password":"x"}"#), "{out}");
        assert!(out.contains("Content-Length: 16\r\n"), "{out}");
    }

    #[test]
    fn masked_lines_keep_the_line_ends_they_had() {
        let message = b"GET / HTTP/1.1\r\n cookie : a=1\r\nCookie: b=2";
        let out = redaction().apply(message, message.len(), false).unwrap();
        assert_eq!(out, b"GET / HTTP/1.1\r\n cookie : x\r\nCookie: x\r");
    }
}
