//! JSON access-log lines (one object per line, as nginx's `escape=json` formats, Caddy,
//! Envoy or a log shipper write them). Each part of a request is looked up under the
//! field name given for its role, else under the names servers commonly use; a dotted
//! name (`request.method`) reaches into nested objects.

use std::collections::BTreeMap;

use serde_json::Value;

use super::parse::{LogLine, split_request};
use super::time;

/// The roles a JSON field can play, with the names tried when none is given.
const ROLES: &[(&str, &[&str])] = &[
    ("time", &["time", "timestamp", "@timestamp", "ts", "time_iso8601", "msec", "time_local"]),
    ("method", &["method", "request_method", "verb"]),
    ("url", &["url", "uri", "request_uri", "target"]),
    ("request", &["request"]),
    ("path", &["path"]),
    ("query", &["query", "query_string", "args"]),
    ("host", &["host", "http_host", "authority"]),
    ("user_agent", &["user_agent", "http_user_agent", "agent", "ua"]),
    ("referer", &["referer", "referrer", "http_referer"]),
    ("headers", &["headers", "request_headers"]),
    ("body", &["body", "request_body"]),
    ("client", &["client", "remote_addr", "client_ip", "ip"]),
];

/// Where each role's value is found.
#[derive(Debug, Clone, Default)]
pub struct JsonFields {
    names: BTreeMap<&'static str, String>,
}

impl JsonFields {
    /// From `ROLE=NAME` settings; unknown roles are an error naming the known ones.
    pub fn new(settings: &[String]) -> Result<JsonFields, String> {
        let mut names = BTreeMap::new();
        for setting in settings {
            let (role, name) = setting
                .split_once('=')
                .ok_or_else(|| format!("{setting:?} is not ROLE=NAME (e.g. time=@timestamp)"))?;
            let known = ROLES.iter().find(|(r, _)| *r == role.trim()).ok_or_else(|| {
                let roles: Vec<&str> = ROLES.iter().map(|(r, _)| *r).collect();
                format!("unknown JSON field role {role:?}; the roles are {}", roles.join(", "))
            })?;
            names.insert(known.0, name.trim().to_string());
        }
        Ok(JsonFields { names })
    }

    /// The value playing `role` in `doc`, if any (empty strings and `-` are "not logged").
    fn get<'a>(&self, doc: &'a Value, role: &str) -> Option<&'a Value> {
        let value = match self.names.get(role) {
            Some(name) => lookup(doc, name),
            None => ROLES.iter().find(|(r, _)| *r == role)?.1.iter().find_map(|name| lookup(doc, name)),
        }?;
        match value {
            Value::Null => None,
            Value::String(s) if s.is_empty() || s == "-" => None,
            _ => Some(value),
        }
    }

    fn text(&self, doc: &Value, role: &str) -> Option<Vec<u8>> {
        self.get(doc, role).map(text)
    }

    /// Parses one JSON line.
    pub fn parse(&self, line: &[u8]) -> Result<LogLine, &'static str> {
        let doc: Value = serde_json::from_slice(line).map_err(|_| "not a JSON object")?;
        if !doc.is_object() {
            return Err("not a JSON object");
        }
        let timestamp_ns = match self.get(&doc, "time").ok_or("no time field")? {
            Value::Number(n) => time::parse_epoch(&n.to_string())
                .or_else(|| n.as_f64().and_then(|f| time::parse_epoch(&format!("{f:.9}")))),
            other => time::parse_any(&String::from_utf8_lossy(&text(other))),
        }
        .ok_or("unreadable time")?;
        let (method, target) = self.method_and_target(&doc)?;
        let mut line = LogLine {
            timestamp_ns,
            method,
            target,
            host: self.text(&doc, "host"),
            user_agent: self.text(&doc, "user_agent"),
            referer: self.text(&doc, "referer"),
            body: self.text(&doc, "body"),
            client: self.text(&doc, "client").map(|c| String::from_utf8_lossy(&c).into_owned()).unwrap_or_default(),
            headers: self.get(&doc, "headers").map(headers).unwrap_or_default(),
        };
        if line.host.is_none() {
            line.host = absolute_host(&doc, self);
        }
        Ok(line)
    }

    /// The method and target: from the method and url fields (an absolute URL gives its
    /// path and query), else a whole request line, else the path and query fields.
    fn method_and_target(&self, doc: &Value) -> Result<(String, Vec<u8>), &'static str> {
        if let Some(request) = self.text(doc, "request")
            && self.get(doc, "method").is_none()
        {
            return split_request(&request);
        }
        let method = self.text(doc, "method").ok_or("no method field")?;
        let target = match self.text(doc, "url") {
            Some(url) => origin_form(&url).to_vec(),
            None => {
                let mut target = self.text(doc, "path").ok_or("no url or path field")?;
                if let Some(query) = self.text(doc, "query") {
                    if !query.starts_with(b"?") {
                        target.push(b'?');
                    }
                    target.extend_from_slice(&query);
                }
                target
            }
        };
        let mut request = method;
        request.push(b' ');
        request.extend_from_slice(&target);
        split_request(&request)
    }
}

/// A field by name, or by a dotted path into nested objects.
fn lookup<'a>(doc: &'a Value, name: &str) -> Option<&'a Value> {
    doc.get(name).or_else(|| name.split('.').try_fold(doc, |v, part| v.get(part)))
}

fn text(value: &Value) -> Vec<u8> {
    match value {
        Value::String(s) => s.as_bytes().to_vec(),
        other => other.to_string().into_bytes(),
    }
}

/// `{"name": "value" | ["v1", "v2"]}` or `[["name", "value"], ...]` into header pairs.
fn headers(value: &Value) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    match value {
        Value::Object(map) => {
            for (name, value) in map {
                match value {
                    Value::Array(values) => out.extend(values.iter().map(|v| (name.clone(), text(v)))),
                    v => out.push((name.clone(), text(v))),
                }
            }
        }
        Value::Array(pairs) => {
            for pair in pairs {
                if let Some([name, value]) = pair.as_array().map(Vec::as_slice) {
                    out.push((String::from_utf8_lossy(&text(name)).into_owned(), text(value)));
                }
            }
        }
        _ => {}
    }
    out
}

/// The path and query of an absolute URL (`http://h/p?q` is `/p?q`); anything else as is.
fn origin_form(url: &[u8]) -> &[u8] {
    let Some(scheme_end) = url.windows(3).position(|w| w == b"://") else { return url };
    let after = &url[scheme_end + 3..];
    match after.iter().position(|&b| b == b'/' || b == b'?') {
        Some(p) if after[p] == b'/' => &after[p..],
        _ => b"/",
    }
}

/// The host of an absolute URL in the url field.
fn absolute_host(doc: &Value, fields: &JsonFields) -> Option<Vec<u8>> {
    let url = fields.text(doc, "url")?;
    let scheme_end = url.windows(3).position(|w| w == b"://")?;
    let after = &url[scheme_end + 3..];
    let end = after.iter().position(|&b| b == b'/' || b == b'?').unwrap_or(after.len());
    (end > 0).then(|| after[..end].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nginx_style_fields_are_found_without_settings() {
        let fields = JsonFields::default();
        let line = fields
            .parse(
                br#"{"msec":"971211336.125","request_method":"PUT","request_uri":"/a?b=1","http_host":"shop",
                "http_user_agent":"curl/8","http_referer":"-","request_body":"x=1","remote_addr":"10.0.0.1"}"#,
            )
            .unwrap();
        assert_eq!(line.timestamp_ns, 971_211_336_125_000_000);
        assert_eq!((line.method.as_str(), &line.target[..]), ("PUT", &b"/a?b=1"[..]));
        assert_eq!((line.host.as_deref(), line.referer), (Some(&b"shop"[..]), None));
        assert_eq!((line.body.as_deref(), line.client.as_str()), (Some(&b"x=1"[..]), "10.0.0.1"));
    }

    #[test]
    fn configured_names_nested_fields_absolute_urls_and_headers() {
        let fields = JsonFields::new(&["time=ts".into(), "method=req.verb".into(), "url=req.link".into()]).unwrap();
        let line = fields
            .parse(
                br#"{"ts":971211336,"req":{"verb":"GET","link":"https://api.example:8443/v1/x?y=2"},
                "headers":{"X-A":"1","Accept":["a","b"]}}"#,
            )
            .unwrap();
        assert_eq!(line.timestamp_ns, 971_211_336_000_000_000);
        assert_eq!((line.method.as_str(), &line.target[..]), ("GET", &b"/v1/x?y=2"[..]));
        assert_eq!(line.host.as_deref(), Some(&b"api.example:8443"[..]));
        assert_eq!(line.headers.len(), 3);
        let by_path = JsonFields::default()
            .parse(br#"{"time":"2000-10-10T20:55:36Z","request":"DELETE /x?y HTTP/1.1","client":"c"}"#)
            .unwrap();
        assert_eq!((by_path.method.as_str(), &by_path.target[..]), ("DELETE", &b"/x?y"[..]));
        let path_query =
            JsonFields::default().parse(br#"{"time":"971211336","method":"GET","path":"/p","query":"a=1"}"#).unwrap();
        assert_eq!(path_query.target, b"/p?a=1");
    }

    #[test]
    fn malformed_json_lines_say_why() {
        let fields = JsonFields::default();
        assert_eq!(fields.parse(b"{not json").unwrap_err(), "not a JSON object");
        assert_eq!(fields.parse(b"[1]").unwrap_err(), "not a JSON object");
        assert_eq!(fields.parse(br#"{"method":"GET","url":"/"}"#).unwrap_err(), "no time field");
        assert_eq!(fields.parse(br#"{"time":"soon","method":"GET","url":"/"}"#).unwrap_err(), "unreadable time");
        assert_eq!(fields.parse(br#"{"time":1,"url":"/"}"#).unwrap_err(), "no method field");
        assert!(JsonFields::new(&["colour=c".into()]).unwrap_err().contains("the roles are time"));
    }
}
