//! Where replays may be sent: the controller's `--allow-target` list. A replay cluster
//! aimed at the wrong host is a weapon, so a target outside the list is refused before
//! anything is planned; with no list, every replay says so.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;

/// One `--allow-target` entry.
#[derive(Debug, Clone, PartialEq)]
pub enum TargetPattern {
    /// `host` or `host:port` (an IP literal or a name; any port when none is given).
    Host { host: String, port: Option<u16> },
    /// `*.example.com[:port]`: any name under the domain (not the domain itself).
    Under { domain: String, port: Option<u16> },
    /// `10.0.0.0/8`, `::1/128`: IP literals inside the network (names never match: they
    /// could resolve elsewhere by the time requests are sent).
    Net(IpNet),
}

impl FromStr for TargetPattern {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Some((_, rest)) = s.split_once("://") {
            let authority = rest.split('/').next().unwrap_or_default();
            return Err(format!("{s:?} is a URL: give its host[:port] ({authority})"));
        }
        if s.contains('/') {
            return s.parse::<IpNet>().map(TargetPattern::Net).map_err(|e| format!("{s:?} is not a CIDR network: {e}"));
        }
        let (host, port) = split_port(s)?;
        if host.is_empty() {
            return Err(format!("{s:?} names no host"));
        }
        let host = host.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
        match host.strip_prefix("*.") {
            Some(domain) if !domain.is_empty() && !domain.contains('*') => {
                Ok(TargetPattern::Under { domain: domain.to_string(), port })
            }
            _ if host.contains('*') => Err(format!("{s:?}: a wildcard is only allowed as *.domain")),
            _ => Ok(TargetPattern::Host { host, port }),
        }
    }
}

/// `host:port` → (host, Some(port)); an IPv6 literal needs brackets to carry a port.
fn split_port(s: &str) -> Result<(&str, Option<u16>), String> {
    let colons = s.matches(':').count();
    let with_port = (colons == 1 && !s.starts_with('[')) || (s.starts_with('[') && s.contains("]:"));
    if !with_port {
        return Ok((s, None));
    }
    let (host, port) = s.rsplit_once(':').expect("a colon");
    let port = port.parse::<u16>().map_err(|_| format!("{s:?}: {port:?} is not a port"))?;
    Ok((host, Some(port)))
}

impl TargetPattern {
    fn matches(&self, host: &str, port: u16) -> bool {
        let port_ok = |p: &Option<u16>| p.is_none_or(|p| p == port);
        match self {
            TargetPattern::Host { host: h, port: p } => h == host && port_ok(p),
            TargetPattern::Under { domain, port: p } => {
                host.strip_suffix(domain.as_str()).is_some_and(|sub| sub.len() > 1 && sub.ends_with('.')) && port_ok(p)
            }
            TargetPattern::Net(net) => host.parse::<IpAddr>().is_ok_and(|ip| net.contains(&ip)),
        }
    }
}

impl fmt::Display for TargetPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let with_port = |f: &mut fmt::Formatter<'_>, host: &str, port: &Option<u16>| match port {
            Some(p) if host.contains(':') => write!(f, "[{host}]:{p}"),
            Some(p) => write!(f, "{host}:{p}"),
            None => f.write_str(host),
        };
        match self {
            TargetPattern::Host { host, port } => with_port(f, host, port),
            TargetPattern::Under { domain, port } => with_port(f, &format!("*.{domain}"), port),
            TargetPattern::Net(net) => write!(f, "{net}"),
        }
    }
}

/// The controller's allow-list; empty: any target (and every replay says so).
#[derive(Debug, Clone, Default)]
pub struct AllowList(Vec<TargetPattern>);

/// The warning every replay carries when the controller has no allow-list.
pub const NO_ALLOW_LIST: &str =
    "the controller has no --allow-target list: replays may be sent to any host it is given";

impl AllowList {
    pub fn new(patterns: Vec<TargetPattern>) -> Self {
        AllowList(patterns)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether replays may go to `target` (an http:// or https:// URL); the refusal names
    /// the list.
    pub fn check(&self, target: &str) -> Result<(), String> {
        if self.0.is_empty() {
            return Ok(());
        }
        let uri: http::Uri = target.parse().map_err(|e| format!("target {target:?}: {e}"))?;
        let host = uri.host().unwrap_or("").trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
        let port = uri.port_u16().unwrap_or(if uri.scheme_str() == Some("https") { 443 } else { 80 });
        if self.0.iter().any(|p| p.matches(&host, port)) {
            return Ok(());
        }
        let list: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        Err(format!("target {target} is not allowed: this controller only replays to {}", list.join(", ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(patterns: &[&str]) -> AllowList {
        AllowList::new(patterns.iter().map(|p| p.parse().unwrap()).collect())
    }

    #[test]
    fn targets_match_hosts_ports_domains_and_networks() {
        let allowed = list(&["staging.internal", "127.0.0.1:8080", "*.example.com", "10.1.0.0/16", "[::1]:9000"]);
        for ok in [
            "http://staging.internal:1234/x",
            "https://STAGING.internal",
            "http://127.0.0.1:8080",
            "https://api.example.com",
            "http://a.b.example.com:81",
            "http://10.1.200.3:9999",
            "http://[::1]:9000",
        ] {
            assert_eq!(allowed.check(ok), Ok(()), "{ok}");
        }
        for refused in [
            "http://127.0.0.1:8081",
            "http://example.com",
            "http://evilexample.com",
            "http://10.2.0.1",
            "http://[::1]:9001",
            "http://127.0.0.1",
        ] {
            assert!(allowed.check(refused).is_err(), "{refused}");
        }
        let message = list(&["127.0.0.1:8080", "*.example.com"]).check("http://10.0.0.1").unwrap_err();
        assert_eq!(
            message,
            "target http://10.0.0.1 is not allowed: this controller only replays to 127.0.0.1:8080, *.example.com"
        );
        assert_eq!(AllowList::default().check("http://anything"), Ok(()));
    }

    #[test]
    fn bad_patterns_are_refused_with_the_reason() {
        for (bad, why) in [
            ("10.0.0.0/33", "CIDR"),
            ("host:http", "not a port"),
            ("a.*.com", "wildcard"),
            (":80", "no host"),
            ("http://staging:8080/x", "is a URL: give its host[:port] (staging:8080)"),
        ] {
            let error = bad.parse::<TargetPattern>().unwrap_err();
            assert!(error.contains(why), "{bad}: {error}");
        }
    }
}
