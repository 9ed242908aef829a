//! Parsing of the `scheme://host:port[,host:port]/rest?k=v` URLs that name a traffic log
//! or a catalog. Hand-parsed because a comma-separated host list is not a URL authority.

use std::collections::BTreeMap;

/// A storage URL split into its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoreUrl {
    pub scheme: String,
    /// `host:port` entries (empty for `file://`).
    pub hosts: Vec<String>,
    /// The path after the host list, without its leading `/` (for `file://`, the whole path).
    pub path: String,
    pub params: BTreeMap<String, String>,
}

/// A store URL as it may be shown (errors, logs): the values of secret parameters
/// (`sasl.password`, `ssl.key.password`, an inline `ssl.key.pem`, anything named like a
/// secret or token) become `***`.
pub fn redact_url(url: &str) -> String {
    let Some((base, query)) = url.split_once('?') else { return url.to_string() };
    let secret = |name: &str| {
        let name = name.to_ascii_lowercase();
        ["password", "secret", "token", "key.pem"].iter().any(|word| name.contains(word))
    };
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) if secret(name) => format!("{name}=***"),
            _ => pair.to_string(),
        })
        .collect();
    format!("{base}?{}", pairs.join("&"))
}

/// Parses a URL whose scheme must be one of `schemes`.
pub(crate) fn parse(url: &str, schemes: &[&str]) -> Result<StoreUrl, String> {
    let expected = || schemes.iter().map(|s| format!("{s}://")).collect::<Vec<_>>().join(" or ");
    let (scheme, rest) = url.split_once("://").ok_or_else(|| format!("expected {}", expected()))?;
    let scheme = scheme.to_ascii_lowercase();
    if !schemes.contains(&scheme.as_str()) {
        return Err(format!("unknown scheme {scheme:?} (use {})", expected()));
    }
    let (body, query) = match rest.split_once('?') {
        Some((body, query)) => (body, Some(query)),
        None => (rest, None),
    };
    let mut params = BTreeMap::new();
    for pair in query.into_iter().flat_map(|q| q.split('&')).filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').ok_or_else(|| format!("query parameter {pair:?} has no '='"))?;
        params.insert(k.to_string(), v.to_string());
    }
    if scheme == "file" {
        if body.is_empty() {
            return Err("file:// needs a path, e.g. file:///var/lib/reprise/log".into());
        }
        return Ok(StoreUrl { scheme, hosts: Vec::new(), path: body.to_string(), params });
    }
    let (hosts, path) = match body.split_once('/') {
        Some((hosts, path)) => (hosts, path.trim_matches('/')),
        None => (body, ""),
    };
    let hosts: Vec<String> = hosts.split(',').map(str::trim).filter(|h| !h.is_empty()).map(str::to_string).collect();
    if hosts.is_empty() {
        return Err("no host:port given".into());
    }
    for host in &hosts {
        let port = host.rsplit_once(':').map(|(_, p)| p);
        if port.and_then(|p| p.parse::<u16>().ok()).is_none() {
            return Err(format!("{host:?} is not host:port"));
        }
    }
    Ok(StoreUrl { scheme, hosts, path: path.to_string(), params })
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: &[&str] = &["kafka", "etcd", "file"];

    #[test]
    fn secrets_in_a_url_are_masked_and_the_rest_kept() {
        let url = "kafka://b:9092/t?security.protocol=sasl_ssl&sasl.username=u&sasl.password=hunter2&ssl.key.pem=K";
        assert_eq!(
            redact_url(url),
            "kafka://b:9092/t?security.protocol=sasl_ssl&sasl.username=u&sasl.password=***&ssl.key.pem=***"
        );
        assert_eq!(redact_url("etcd://e:2379/p"), "etcd://e:2379/p");
    }

    #[test]
    fn parses_host_lists_paths_and_params() {
        let u = parse("kafka://a:9092,b:9093/traffic?linger.ms=5&acks=all", S).unwrap();
        assert_eq!(u.scheme, "kafka");
        assert_eq!(u.hosts, vec!["a:9092", "b:9093"]);
        assert_eq!(u.path, "traffic");
        assert_eq!(u.params.get("linger.ms").map(String::as_str), Some("5"));
        let u = parse("etcd://127.0.0.1:2379", S).unwrap();
        assert_eq!(u.path, "");
        let u = parse("file:///var/lib/reprise", S).unwrap();
        assert_eq!(u.path, "/var/lib/reprise");
        let u = parse("file://relative/dir", S).unwrap();
        assert_eq!(u.path, "relative/dir");
    }

    #[test]
    fn rejects_malformed_urls() {
        assert!(parse("127.0.0.1:9092", S).is_err());
        assert!(parse("kafka:///topic", S).is_err());
        assert!(parse("kafka://host/topic", S).is_err());
        assert!(parse("kafka://host:99999/topic", S).is_err());
        assert!(parse("kafka://h:1/t?novalue", S).is_err());
        assert!(parse("file://", S).is_err());
        assert!(parse("bogus://x", S).unwrap_err().contains("unknown scheme"));
    }
}
