//! Response diffs: which fields of two responses to the same request differ. The status,
//! the headers (but those that differ on every response, such as Date), and the body: a
//! JSON body field by field, anything else as one text. Fields are named so that the
//! same field of every request of an endpoint has one name: `status`, `header:etag`,
//! `$.items[*].price` (array indices folded), `body`, `trailer:grpc-status`.

use http::{HeaderMap, HeaderName};
use serde_json::Value;

/// Headers that differ between any two responses, or describe the transfer rather than
/// the content; never compared.
pub const DEFAULT_IGNORED_HEADERS: &[&str] = &[
    "date",
    "server",
    "content-length",
    "connection",
    "keep-alive",
    "transfer-encoding",
    "age",
    "expires",
    "last-modified",
    "via",
    "x-request-id",
];

/// Values in samples are cut to this many characters.
const SAMPLE_CHARS: usize = 120;

/// A response as a diff sees it.
#[derive(Debug, Clone, PartialEq)]
#[expect(clippy::large_enum_variant, reason = "nearly every response is answered; boxing would allocate for each")]
pub enum Response {
    Answered {
        status: u16,
        headers: HeaderMap,
        body: bytes::Bytes,
        /// HTTP/2 trailers (a gRPC call's status is there); empty if none.
        trailers: HeaderMap,
    },
    /// No response: how the send failed.
    Failed(String),
}

/// One differing field of one request, with both values (cut) for a sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Difference {
    pub field: String,
    pub left: String,
    pub right: String,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DiffRuleError {
    #[error("bad --diff-ignore {0:?}: give a JSON path ($.meta.time, $.items[*].id) or a header name")]
    Ignore(String),
}

/// What a diff leaves out: headers, and JSON paths (with their children).
#[derive(Debug, Clone, Default)]
pub struct DiffRules {
    ignored_headers: Vec<HeaderName>,
    ignored_paths: Vec<String>,
}

impl DiffRules {
    /// The default ignored headers plus `ignore`: entries starting with `$` are JSON
    /// paths, the others header names.
    pub fn new(ignore: &[String]) -> Result<Self, DiffRuleError> {
        let mut rules = DiffRules {
            ignored_headers: DEFAULT_IGNORED_HEADERS.iter().map(|h| HeaderName::from_static(h)).collect(),
            ignored_paths: Vec::new(),
        };
        for entry in ignore {
            let entry = entry.trim();
            if entry.starts_with('$') {
                rules.ignored_paths.push(fold_indices(entry).ok_or_else(|| DiffRuleError::Ignore(entry.into()))?);
            } else {
                let name =
                    HeaderName::from_bytes(entry.as_bytes()).map_err(|_| DiffRuleError::Ignore(entry.to_string()))?;
                rules.ignored_headers.push(name);
            }
        }
        Ok(rules)
    }

    /// The fields in which `right` differs from `left`, each once, in field order.
    pub fn compare(&self, left: &Response, right: &Response) -> Vec<Difference> {
        let mut out = Vec::new();
        let (
            Response::Answered { status: ls, headers: lh, body: lb, trailers: lt },
            Response::Answered { status: rs, headers: rh, body: rb, trailers: rt },
        ) = (left, right)
        else {
            if left != right {
                out.push(difference("status", &outcome(left), &outcome(right)));
            }
            return out;
        };
        if ls != rs {
            out.push(difference("status", &ls.to_string(), &rs.to_string()));
        }
        self.field_diff("header", lh, rh, &mut out);
        match (json(lh, lb), json(rh, rb)) {
            (Some(l), Some(r)) => {
                let mut path = String::from("$");
                self.json_diff(&mut path, Some(&l), Some(&r), &mut out);
            }
            _ if lb != rb => out.push(difference("body", &String::from_utf8_lossy(lb), &String::from_utf8_lossy(rb))),
            _ => {}
        }
        self.field_diff("trailer", lt, rt, &mut out);
        let mut seen = std::collections::BTreeSet::new();
        out.retain(|d| seen.insert(d.field.clone()));
        out
    }

    /// The header (or trailer) fields of `left` and `right` that differ, by name, but
    /// the ignored ones; `kind` starts the field's name.
    fn field_diff(&self, kind: &str, left: &HeaderMap, right: &HeaderMap, out: &mut Vec<Difference>) {
        let mut names: Vec<&HeaderName> = left.keys().chain(right.keys()).collect();
        names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        names.dedup();
        for name in names.into_iter().filter(|n| !self.ignored_headers.contains(n)) {
            let (l, r) = (header_text(left, name), header_text(right, name));
            if l != r {
                out.push(difference(&format!("{kind}:{name}"), &l, &r));
            }
        }
    }

    fn json_diff(&self, path: &mut String, left: Option<&Value>, right: Option<&Value>, out: &mut Vec<Difference>) {
        if self.ignored_paths.iter().any(|p| path.starts_with(p.as_str()) && is_boundary(path, p.len())) {
            return;
        }
        let len = path.len();
        match (left, right) {
            (Some(Value::Object(l)), Some(Value::Object(r))) => {
                let mut keys: Vec<&String> = l.keys().chain(r.keys()).collect();
                keys.sort();
                keys.dedup();
                for key in keys {
                    push_key(path, key);
                    self.json_diff(path, l.get(key), r.get(key), out);
                    path.truncate(len);
                }
            }
            (Some(Value::Array(l)), Some(Value::Array(r))) => {
                path.push_str("[*]");
                for i in 0..l.len().max(r.len()) {
                    self.json_diff(path, l.get(i), r.get(i), out);
                }
                path.truncate(len);
            }
            (l, r) if l != r => out.push(difference(path, &value_text(l), &value_text(r))),
            _ => {}
        }
    }
}

/// Whether `path` ends or goes on to a child at `at` (so `$.a` ignores `$.a.b` and
/// `$.a[*]` but not `$.ab`).
fn is_boundary(path: &str, at: usize) -> bool {
    matches!(path.as_bytes().get(at), None | Some(b'.' | b'['))
}

fn push_key(path: &mut String, key: &str) {
    let plain = !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if plain {
        path.push('.');
        path.push_str(key);
    } else {
        path.push_str(&format!("[{}]", Value::String(key.to_string())));
    }
}

/// A user's path with array indices folded (`$.items[3].id` → `$.items[*].id`); `None`
/// if its brackets do not close.
fn fold_indices(path: &str) -> Option<String> {
    let mut out = String::with_capacity(path.len());
    let mut rest = path;
    while let Some(open) = rest.find('[') {
        out.push_str(&rest[..open]);
        let close = rest[open..].find(']')? + open;
        let inside = &rest[open + 1..close];
        if inside == "*" || (!inside.is_empty() && inside.bytes().all(|b| b.is_ascii_digit())) {
            out.push_str("[*]");
        } else {
            out.push_str(&rest[open..=close]);
        }
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    Some(out)
}

fn json(headers: &HeaderMap, body: &[u8]) -> Option<Value> {
    let declared = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().contains("json"));
    declared.then(|| serde_json::from_slice(body).ok()).flatten()
}

fn header_text(headers: &HeaderMap, name: &HeaderName) -> String {
    let values: Vec<String> =
        headers.get_all(name).iter().map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()).collect();
    if values.is_empty() { "(absent)".into() } else { values.join(", ") }
}

fn value_text(value: Option<&Value>) -> String {
    value.map_or("(absent)".into(), Value::to_string)
}

fn outcome(response: &Response) -> String {
    match response {
        Response::Answered { status, .. } => status.to_string(),
        Response::Failed(why) => format!("no response ({why})"),
    }
}

fn difference(field: &str, left: &str, right: &str) -> Difference {
    let cut = |s: &str| {
        let mut text: String = s.chars().take(SAMPLE_CHARS).collect();
        if s.chars().count() > SAMPLE_CHARS {
            text.push('…');
        }
        text
    };
    Difference { field: field.to_string(), left: cut(left), right: cut(right) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json_response(status: u16, body: &str, extra: &[(&'static str, &'static str)]) -> Response {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", "application/json".parse().unwrap());
        for (name, value) in extra {
            headers.insert(*name, value.parse().unwrap());
        }
        Response::Answered {
            status,
            headers,
            body: bytes::Bytes::copy_from_slice(body.as_bytes()),
            trailers: HeaderMap::new(),
        }
    }

    fn fields(diffs: Vec<Difference>) -> Vec<String> {
        diffs.into_iter().map(|d| d.field).collect()
    }

    #[test]
    fn json_bodies_differ_field_by_field_with_indices_folded() {
        let rules = DiffRules::new(&[]).unwrap();
        let a = json_response(200, r#"{"id":1,"items":[{"p":1},{"p":2}],"who":{"n":"a"},"gone":1}"#, &[("date", "x")]);
        let b = json_response(200, r#"{"id":1,"items":[{"p":1},{"p":3}],"who":{"n":"b"},"new":2}"#, &[("date", "y")]);
        assert_eq!(fields(rules.compare(&a, &b)), ["$.gone", "$.items[*].p", "$.new", "$.who.n"]);
        let diffs = rules.compare(&a, &b);
        assert_eq!((diffs[0].left.as_str(), diffs[0].right.as_str()), ("1", "(absent)"));
        assert!(rules.compare(&a, &a).is_empty());
    }

    #[test]
    fn status_headers_and_text_bodies_are_compared_but_volatile_headers_are_not() {
        let rules = DiffRules::new(&["x-trace".into()]).unwrap();
        let text = |status, body: &str, etag: &'static str, trace: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert("etag", etag.parse().unwrap());
            headers.insert("x-trace", trace.parse().unwrap());
            headers.insert("server", trace.parse().unwrap());
            Response::Answered {
                status,
                headers,
                body: bytes::Bytes::copy_from_slice(body.as_bytes()),
                trailers: HeaderMap::new(),
            }
        };
        let diffs = fields(rules.compare(&text(200, "ok", "1", "a"), &text(500, "oops", "2", "b")));
        assert_eq!(diffs, ["status", "header:etag", "body"]);
        let failed = Response::Failed("timeout".into());
        let d = rules.compare(&text(200, "ok", "1", "a"), &failed);
        assert_eq!((d[0].field.as_str(), d[0].right.as_str()), ("status", "no response (timeout)"));
    }

    #[test]
    fn trailers_are_compared_as_fields_of_their_own() {
        let rules = DiffRules::new(&[]).unwrap();
        let grpc = |status: &'static str| {
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", status.parse().unwrap());
            Response::Answered { status: 200, headers: HeaderMap::new(), body: bytes::Bytes::new(), trailers }
        };
        let d = rules.compare(&grpc("0"), &grpc("14"));
        assert_eq!(fields(d.clone()), ["trailer:grpc-status"]);
        assert_eq!((d[0].left.as_str(), d[0].right.as_str()), ("0", "14"));
        assert!(rules.compare(&grpc("0"), &grpc("0")).is_empty());
    }

    #[test]
    fn ignored_paths_take_their_children_and_only_them() {
        let rules = DiffRules::new(&["$.meta".into(), "$.rows[0].at".into()]).unwrap();
        let a = json_response(200, r#"{"meta":{"t":1},"metadata":1,"rows":[{"at":1,"v":1}]}"#, &[]);
        let b = json_response(200, r#"{"meta":{"t":2},"metadata":2,"rows":[{"at":2,"v":2}]}"#, &[]);
        assert_eq!(fields(rules.compare(&a, &b)), ["$.metadata", "$.rows[*].v"]);
        assert!(DiffRules::new(&["$.a[1".into()]).is_err());
        assert!(DiffRules::new(&["bad header".into()]).is_err());
    }
}
