//! A replay's request rules (`ReplayOptions.rules`): selection on the request as
//! recorded, then the URL rewrite, the removed headers, the set headers and the marker.

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use regex::Regex;
use reprise_proto::v1::RequestRules;

use crate::selection::{Selection, regex_reason};

/// The header that marks every replayed request with its replay's id, so the target's
/// logs can tell replayed traffic from real traffic.
pub const MARKER: HeaderName = HeaderName::from_static("x-reprise-replay");

/// Why a rule is refused; the message names the flag as `ctl replay` spells it.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RuleError {
    #[error("bad --method {0:?}: not an HTTP method")]
    Method(String),
    #[error("bad --{flag} {pattern:?}: {reason}")]
    Pattern { flag: &'static str, pattern: String, reason: String },
    #[error("bad --rewrite-url {0:?}: give REGEX:REPLACEMENT (e.g. \"^/v1/(.*):/v2/$1\")")]
    RewriteForm(String),
    #[error("bad --set-header {0:?}: give \"Name: value\" (e.g. \"Authorization: Bearer t0k3n\")")]
    SetForm(String),
    #[error("bad --{flag} {rule:?}: {reason}")]
    Header { flag: &'static str, rule: String, reason: String },
    #[error("bad --sample {0}: give a share above 0 and at most 1 (0.1 is 10%)")]
    Sample(f64),
    #[error("bad marker: the replay id {0:?} cannot be a header value")]
    Marker(String),
}

/// A replay's rules, compiled.
#[derive(Debug, Clone)]
pub struct ReplayRules {
    selection: Selection,
    rewrites: Vec<(Regex, String)>,
    remove: Vec<HeaderName>,
    set: Vec<(HeaderName, HeaderValue)>,
    marker: Option<HeaderValue>,
}

impl ReplayRules {
    /// Compiles `rules` for the replay `replay_id` (its marker's value).
    pub fn compile(rules: &RequestRules, replay_id: &str) -> Result<Self, RuleError> {
        let methods = rules
            .methods
            .iter()
            .map(|m| match Method::from_bytes(m.trim().as_bytes()) {
                Ok(method) if !m.trim().is_empty() => Ok(method.as_str().to_string()),
                _ => Err(RuleError::Method(m.clone())),
            })
            .collect::<Result<_, _>>()?;
        let sample = rules.sample.unwrap_or(1.0);
        if !(sample > 0.0 && sample <= 1.0) {
            return Err(RuleError::Sample(sample));
        }
        let selection = Selection {
            allow_methods: methods,
            allow_urls: patterns("allow-url", &rules.allow_urls)?,
            deny_urls: patterns("deny-url", &rules.deny_urls)?,
            sample,
            ..Selection::default()
        };
        let rewrites = rules.rewrite_urls.iter().map(|rule| rewrite(rule)).collect::<Result<_, _>>()?;
        let remove = rules
            .remove_headers
            .iter()
            .map(|name| header_name("remove-header", name, name))
            .collect::<Result<_, _>>()?;
        let set = rules.set_headers.iter().map(|rule| set_header(rule)).collect::<Result<_, _>>()?;
        let marker = match rules.no_marker {
            true => None,
            false => Some(HeaderValue::from_str(replay_id).map_err(|_| RuleError::Marker(replay_id.to_string()))?),
        };
        Ok(ReplayRules { selection, rewrites, remove, set, marker })
    }

    /// Whether the request (as recorded) is sent at all; `sample_key` names it for the
    /// sample (the same key decides the same way in every run).
    pub fn keeps(&self, method: &str, path_and_query: &str, sample_key: &[&[u8]]) -> bool {
        self.selection.keeps(method, path_and_query, &[]) && self.selection.samples(sample_key)
    }

    /// The path and query after the first rewrite rule that matches, if one does.
    pub fn rewrite_url(&self, path_and_query: &str) -> Option<String> {
        let (pattern, replacement) = self.rewrites.iter().find(|(pattern, _)| pattern.is_match(path_and_query))?;
        Some(pattern.replace(path_and_query, replacement.as_str()).into_owned())
    }

    /// Removes, sets and marks headers.
    pub fn edit_headers(&self, headers: &mut HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
        if let Some(marker) = &self.marker {
            headers.insert(MARKER, marker.clone());
        }
    }

    /// Whether the rules remove or set the header `name` (the recorded value is then not
    /// to be put back, e.g. the recorded Host with --keep-host).
    pub fn overrides(&self, name: &HeaderName) -> bool {
        self.remove.contains(name) || self.set.iter().any(|(set, _)| set == name)
    }
}

fn patterns(flag: &'static str, list: &[String]) -> Result<Vec<Regex>, RuleError> {
    list.iter()
        .map(|pattern| {
            Regex::new(pattern).map_err(|e| RuleError::Pattern {
                flag,
                pattern: pattern.clone(),
                reason: regex_reason(&e),
            })
        })
        .collect()
}

fn rewrite(rule: &str) -> Result<(Regex, String), RuleError> {
    // GoReplay's form: the pattern ends at the first colon.
    let (pattern, replacement) = rule.split_once(':').ok_or_else(|| RuleError::RewriteForm(rule.to_string()))?;
    if pattern.is_empty() {
        return Err(RuleError::RewriteForm(rule.to_string()));
    }
    let pattern = Regex::new(pattern).map_err(|e| RuleError::Pattern {
        flag: "rewrite-url",
        pattern: rule.to_string(),
        reason: regex_reason(&e),
    })?;
    Ok((pattern, replacement.to_string()))
}

fn set_header(rule: &str) -> Result<(HeaderName, HeaderValue), RuleError> {
    let (name, value) = rule.split_once(':').ok_or_else(|| RuleError::SetForm(rule.to_string()))?;
    let name = header_name("set-header", rule, name)?;
    let value = HeaderValue::from_str(value.trim()).map_err(|_| RuleError::Header {
        flag: "set-header",
        rule: rule.to_string(),
        reason: "the value holds characters a header cannot".into(),
    })?;
    Ok((name, value))
}

fn header_name(flag: &'static str, rule: &str, name: &str) -> Result<HeaderName, RuleError> {
    HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| RuleError::Header {
        flag,
        rule: rule.to_string(),
        reason: format!("{:?} is not a header name", name.trim()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(edit: impl FnOnce(&mut RequestRules)) -> Result<ReplayRules, RuleError> {
        let mut spec = RequestRules::default();
        edit(&mut spec);
        ReplayRules::compile(&spec, "r-1")
    }

    #[test]
    fn selection_keeps_methods_and_urls_asked_for() {
        let r = rules(|s| {
            s.methods = vec!["get".into(), "POST".into()];
            s.allow_urls = vec!["^/api/".into()];
            s.deny_urls = vec!["token=".into()];
        })
        .unwrap();
        assert!(r.keeps("GET", "/api/a", &[b"c"]));
        assert!(r.keeps("POST", "/api/a", &[b"c"]));
        assert!(!r.keeps("DELETE", "/api/a", &[b"c"]));
        assert!(!r.keeps("GET", "/static/a", &[b"c"]));
        assert!(!r.keeps("GET", "/api/a?token=x", &[b"c"]));
    }

    #[test]
    fn sampling_is_by_key_and_repeatable() {
        let r = rules(|s| s.sample = Some(0.3)).unwrap();
        let kept: Vec<bool> = (0..5000u64).map(|i| r.keeps("GET", "/", &[b"conn", &i.to_be_bytes()])).collect();
        let share = kept.iter().filter(|k| **k).count() as f64 / 5000.0;
        assert!((0.27..0.33).contains(&share), "{share}");
        let again: Vec<bool> = (0..5000u64).map(|i| r.keeps("GET", "/", &[b"conn", &i.to_be_bytes()])).collect();
        assert_eq!(kept, again);
    }

    #[test]
    fn the_first_matching_rewrite_applies_with_its_groups() {
        let r = rules(|s| {
            s.rewrite_urls = vec!["^/v1/users/([0-9]+)/ping:/v2/u/$1".into(), "^/v1/(.*):/old/$1".into()];
        })
        .unwrap();
        assert_eq!(r.rewrite_url("/v1/users/42/ping?x=1").as_deref(), Some("/v2/u/42?x=1"));
        assert_eq!(r.rewrite_url("/v1/other").as_deref(), Some("/old/other"));
        assert_eq!(r.rewrite_url("/v3/x"), None);
    }

    #[test]
    fn headers_are_removed_then_set_then_marked() {
        let r = rules(|s| {
            s.remove_headers = vec!["Cookie".into(), "authorization".into()];
            s.set_headers = vec!["Authorization: Bearer new".into(), "X-Env:  staging ".into()];
        })
        .unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("cookie", HeaderValue::from_static("s=1"));
        headers.insert("authorization", HeaderValue::from_static("***"));
        headers.insert("accept", HeaderValue::from_static("*/*"));
        r.edit_headers(&mut headers);
        assert!(headers.get("cookie").is_none());
        assert_eq!(headers["authorization"], "Bearer new");
        assert_eq!(headers["x-env"], "staging");
        assert_eq!(headers["accept"], "*/*");
        assert_eq!(headers[MARKER], "r-1");
        assert!(r.overrides(&HeaderName::from_static("cookie")) && !r.overrides(&http::header::ACCEPT));
        let unmarked = rules(|s| s.no_marker = true).unwrap();
        let mut headers = HeaderMap::new();
        unmarked.edit_headers(&mut headers);
        assert!(headers.is_empty());
    }

    #[test]
    fn bad_rules_are_refused_with_the_flag_named() {
        let refused = |edit: fn(&mut RequestRules)| rules(edit).unwrap_err().to_string();
        assert_eq!(refused(|s| s.allow_urls = vec!["(".into()]), "bad --allow-url \"(\": unclosed group");
        assert!(
            refused(|s| s.rewrite_urls = vec!["no-colon".into()]).starts_with("bad --rewrite-url \"no-colon\": give")
        );
        assert!(refused(|s| s.rewrite_urls = vec!["[:x".into()]).starts_with("bad --rewrite-url \"[:x\":"));
        assert!(refused(|s| s.set_headers = vec!["NoColon".into()]).starts_with("bad --set-header \"NoColon\": give"));
        assert!(refused(|s| s.set_headers = vec!["Bad Name: v".into()]).contains("\"Bad Name\" is not a header name"));
        assert!(refused(|s| s.remove_headers = vec!["a b".into()]).contains("is not a header name"));
        assert_eq!(refused(|s| s.methods = vec!["GE T".into()]), "bad --method \"GE T\": not an HTTP method");
        assert!(refused(|s| s.sample = Some(0.0)).starts_with("bad --sample 0:"));
        assert!(refused(|s| s.sample = Some(1.5)).starts_with("bad --sample 1.5:"));
    }
}
