//! Inputs that hand over whole messages (GoReplay files, access logs) instead of
//! packets go through the same selection and redaction as framed TCP traffic
//! ([`crate::policy`]): sampling by connection, the allow/deny rules on the request head,
//! a response following its request, and masking before anything is stored.

use std::collections::VecDeque;
use std::sync::Arc;

use reprise_proto::v1::{MessageKind, TrafficRecord};

use crate::http::{HttpConfig, HttpStats};

/// Unparseable pieces of an input reported one by one; the rest are only counted.
const REPORTED_UNPARSEABLE: usize = 5;

/// What an import could not parse (access-log lines, GoReplay messages): skipped and
/// counted; at the end the first few are reported (a warning each), or named in the
/// error of an input in which nothing parses.
#[derive(Debug, Default)]
pub(crate) struct Unparseable {
    pub count: u64,
    /// The first ones: where and why.
    first: Vec<String>,
}

impl Unparseable {
    /// Notes one that did not parse; `why` says where and why.
    pub(crate) fn note(&mut self, why: String) {
        self.count += 1;
        if self.first.len() < REPORTED_UNPARSEABLE {
            self.first.push(why);
        }
    }

    /// Ends an input of which `parsed` pieces (each a `what`, e.g. "access-log line")
    /// parsed: an error naming the first unparseable ones if none did, else a warning for
    /// each of them and one with the count.
    pub(crate) fn finish(&self, what: &str, parsed: u64) -> anyhow::Result<()> {
        if parsed == 0 && self.count > 0 {
            anyhow::bail!("no {what} parses; the first: {}", self.first.join("; "));
        }
        for why in &self.first {
            tracing::warn!("{what} skipped: {why}");
        }
        if self.count > 0 {
            tracing::warn!("{} {what}s skipped (unparseable), {parsed} imported", self.count);
        }
        Ok(())
    }
}

/// Requests left out whose responses may still come (bounded: a GoReplay file may hold
/// requests without responses).
const DROPPED_KEPT: usize = 4096;

/// Applies the capture's policy to whole records.
pub struct RecordFilter {
    config: Arc<HttpConfig>,
    /// (connection id, sequence) of requests left out.
    dropped: VecDeque<(String, u64)>,
    pub stats: HttpStats,
}

impl RecordFilter {
    pub fn new(config: Arc<HttpConfig>) -> Self {
        RecordFilter { config, dropped: VecDeque::new(), stats: HttpStats::default() }
    }

    /// The record as it is to be stored (redacted), or `None` when the policy leaves it out.
    pub fn apply(&mut self, record: TrafficRecord) -> Option<TrafficRecord> {
        let head_len = record.http.windows(4).position(|w| w == b"\r\n\r\n").map_or(record.http.len(), |p| p + 4);
        let head = &record.http[..head_len];
        match record.kind() {
            MessageKind::Response => {
                self.stats.responses += 1;
                let key = (record.connection_id.clone(), record.sequence);
                if let Some(p) = self.dropped.iter().position(|d| *d == key) {
                    self.dropped.remove(p);
                    return None;
                }
            }
            _ => {
                self.stats.requests += 1;
                let selection = &self.config.selection;
                if !(selection.samples(&[record.connection_id.as_bytes()]) && selection.keeps_head(head)) {
                    self.stats.filtered += 1;
                    self.dropped.push_back((record.connection_id.clone(), record.sequence));
                    if self.dropped.len() > DROPPED_KEPT {
                        self.dropped.pop_front();
                    }
                    return None;
                }
            }
        }
        self.stats.truncated_bodies += u64::from(record.body_truncated);
        let plain_body = !record.body_truncated && !is_chunked(head);
        Some(match self.config.redaction.apply(&record.http, head_len, plain_body) {
            Some(http) => TrafficRecord { http: http.into(), ..record },
            None => record,
        })
    }
}

fn is_chunked(head: &[u8]) -> bool {
    head.split(|&b| b == b'\n').any(|line| {
        let line = String::from_utf8_lossy(line).to_ascii_lowercase();
        line.split_once(':')
            .is_some_and(|(name, value)| name.trim() == "transfer-encoding" && value.contains("chunked"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Redaction;
    use reprise_rules::selection::Selection;

    fn filter() -> RecordFilter {
        RecordFilter::new(Arc::new(HttpConfig {
            node: "n".into(),
            run: 1,
            max_body: 1 << 20,
            track_responses: true,
            selection: Selection { sample: 1.0, deny_methods: vec!["DELETE".into()], ..Default::default() },
            redaction: Redaction { headers: vec!["cookie".into()], json_fields: vec![], mask: "***".into() },
        }))
    }

    fn record(kind: MessageKind, connection: &str, http: &str) -> TrafficRecord {
        TrafficRecord {
            kind: kind as i32,
            connection_id: connection.into(),
            http: http.as_bytes().to_vec().into(),
            ..Default::default()
        }
    }

    #[test]
    fn selects_redacts_and_drops_the_responses_of_dropped_requests() {
        let mut f = filter();
        let kept = f.apply(record(MessageKind::Request, "a", "GET / HTTP/1.1\r\nCookie: s=1\r\n\r\n")).unwrap();
        assert_eq!(kept.http, &b"GET / HTTP/1.1\r\nCookie: ***\r\n\r\n"[..]);
        assert!(f.apply(record(MessageKind::Response, "a", "HTTP/1.1 200 OK\r\n\r\n")).is_some());
        assert!(f.apply(record(MessageKind::Request, "b", "DELETE /x HTTP/1.1\r\n\r\n")).is_none());
        assert!(f.apply(record(MessageKind::Response, "b", "HTTP/1.1 200 OK\r\n\r\n")).is_none());
        assert_eq!((f.stats.requests, f.stats.responses, f.stats.filtered), (2, 2, 1));
    }
}
