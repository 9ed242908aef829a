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
