//! Wire formats shared by every Reprise daemon: the traffic record stored in the log
//! (one per captured HTTP message), the documents kept in the catalog, and the gRPC
//! services between controller, workers and `ctl`.
//!
//! Catalog documents and the controller's status messages are also JSON documents (the
//! catalog's storage, the stats API, `ctl --json`): they derive serde with the proto
//! field names, and their enum fields read and write lower-case names (`"running"`).

/// Version of the controller/worker/ctl protocol. Every registration, assignment and
/// ctl hello carries it; a peer with another version is refused with a clear error
/// instead of being misread.
pub const PROTOCOL_VERSION: u32 = 5;

/// The newest [`v1::TrafficRecord`] format this build understands: readers skip records
/// of a newer one. Writers stamp each record with the oldest format that holds it (see
/// [`v1::HttpProtocol::format_version`]), so older builds still read what they can.
pub const TRAFFIC_FORMAT_VERSION: u32 = HTTP2_TRAFFIC_FORMAT_VERSION;

/// The format of HTTP/1.x records: they need nothing of format 2, and builds that
/// predate it read them.
pub const HTTP1_TRAFFIC_FORMAT_VERSION: u32 = 1;

/// The format of HTTP/2 records (`protocol` and `trailers` came with it).
pub const HTTP2_TRAFFIC_FORMAT_VERSION: u32 = 2;

#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("reprise.v1");
}

use v1::{
    HttpProtocol, Ledger, LedgerEntry, PacingMode, PartitionRange, Percentiles, RecordingState, ReplayState,
    ReplayStatus, WorkerReplayState,
};

/// Refuses a peer that speaks another protocol version. `peer` and `this` name the two
/// sides for the message ("ctl", "controller", "worker").
pub fn check_protocol(peer_version: u32, peer: &str, this: &str) -> Result<(), tonic::Status> {
    if peer_version == PROTOCOL_VERSION {
        Ok(())
    } else {
        Err(tonic::Status::failed_precondition(format!(
            "protocol version mismatch: the {peer} speaks {peer_version}, this {this} speaks {PROTOCOL_VERSION}; \
             use matching versions"
        )))
    }
}

/// A failed call or connection in plain words: the error and its causes, outermost
/// first, each said once, without the transport's generic wrappers ("transport error").
/// A `tonic::Status` counts as its message (its own text repeats its source).
pub fn error_causes(error: &(dyn std::error::Error + 'static)) -> String {
    const GENERIC: [&str; 4] = ["transport error", "connection error", "client error (Connect)", "grpc request error"];
    let mut said: Vec<String> = Vec::new();
    let mut next = Some(error);
    while let Some(e) = next {
        let text = e.downcast_ref::<tonic::Status>().map_or_else(|| e.to_string(), |s| s.message().to_string());
        let text = text.trim_start_matches("grpc request error: ").to_string();
        if !text.is_empty() && !GENERIC.contains(&text.as_str()) && !said.iter().any(|s| s.contains(&text)) {
            said.push(text);
        }
        next = e.source();
    }
    if said.is_empty() { error.to_string() } else { said.join(": ") }
}

/// How a TLS refusal reads in [`error_causes`]' text: a peer that hung up at or after
/// the handshake (the words vary with timing), or an alert about the client's
/// certificate. Shared by every client's hints (ctl to the controller, the catalog to
/// etcd).
pub fn reads_as_hang_up(causes: &str) -> bool {
    ["connection closed", "broken pipe", "connection reset", "connection was not ready"]
        .iter()
        .any(|s| causes.contains(s))
}

/// Whether the peer refused the client's certificate (or its lack of one) by an alert.
pub fn reads_as_certificate_refused(causes: &str) -> bool {
    ["CertificateRequired", "UnknownCA", "BadCertificate"].iter().any(|alert| causes.contains(alert))
}

impl HttpProtocol {
    /// The format a record of this protocol is written with.
    pub fn format_version(self) -> u32 {
        match self {
            HttpProtocol::Http1 => HTTP1_TRAFFIC_FORMAT_VERSION,
            HttpProtocol::Http2 => HTTP2_TRAFFIC_FORMAT_VERSION,
        }
    }
}

impl ReplayState {
    /// Done, cancelled or failed: nothing will change any more.
    pub fn is_final(self) -> bool {
        matches!(self, ReplayState::Done | ReplayState::Cancelled | ReplayState::Failed)
    }
}

impl WorkerReplayState {
    /// Done, cancelled, failed or released: the report carrying it is the worker's last.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            WorkerReplayState::Done
                | WorkerReplayState::Cancelled
                | WorkerReplayState::Failed
                | WorkerReplayState::Released
        )
    }
}

const NO_PERCENTILES: Percentiles = Percentiles { p50: 0.0, p90: 0.0, p99: 0.0, p999: 0.0, max: 0.0, mean: 0.0 };

impl ReplayStatus {
    /// Latency from each request's due time to its complete response (zeros if unset).
    pub fn latency(&self) -> &Percentiles {
        self.latency_ms.as_ref().unwrap_or(&NO_PERCENTILES)
    }

    /// Schedule lag: how late each send left against its due time (zeros if unset).
    pub fn lag(&self) -> &Percentiles {
        self.lag_ms.as_ref().unwrap_or(&NO_PERCENTILES)
    }
}

impl Ledger {
    /// What a recording's capture missed, in one line (ctl and the stats API say it so):
    /// `none`, or the counts that are not zero (HTTP/2 connections seen mid-stream in a
    /// sentence of their own: nothing of them is recorded); `(lower bound: NODE ...)`
    /// when a node did not report at both ends of the recording's window.
    pub fn summary(&self) -> String {
        if self.nodes.is_empty() {
            return "not counted (no capture node reported)".into();
        }
        let sum = |count: fn(&LedgerEntry) -> u64| self.nodes.iter().map(count).sum::<u64>();
        let counts = [
            ("kernel drops", sum(|e| e.kernel_drops)),
            ("dropped records", sum(|e| e.own_drops)),
            ("gaps", sum(|e| e.gaps)),
            ("resyncs", sum(|e| e.resyncs)),
            ("cut bodies", sum(|e| e.truncated_bodies)),
            ("malformed", sum(|e| e.malformed)),
            ("HTTP/2 protocol or HPACK errors", sum(|e| e.h2_errors)),
            ("reset HTTP/2 streams", sum(|e| e.h2_streams_reset)),
            ("HTTP/2 streams left out", sum(|e| e.h2_streams_left_out)),
        ];
        let mut said: Vec<String> =
            counts.iter().filter(|(_, n)| *n > 0).map(|(what, n)| format!("{n} {what}")).collect();
        match sum(|e| e.h2_mid_stream) {
            0 => {}
            1 => {
                said.push("1 HTTP/2 connection was seen mid-stream and cannot be decoded (HPACK state unknown)".into())
            }
            n => said.push(format!(
                "{n} HTTP/2 connections were seen mid-stream and cannot be decoded (HPACK state unknown)"
            )),
        }
        let mut summary = if said.is_empty() { "none".to_string() } else { said.join(", ") };
        let partial: Vec<&str> = self.nodes.iter().filter(|e| !e.whole_window).map(|e| e.node.as_str()).collect();
        if !partial.is_empty() {
            summary.push_str(&format!(" (lower bound: {} did not report at both ends)", partial.join(", ")));
        }
        summary
    }
}

impl PartitionRange {
    pub fn len(&self) -> u64 {
        (self.end - self.start).max(0) as u64
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A message that can be the last of a stream: a worker's final report, a replay's
/// final status event.
pub trait Final {
    fn is_final(&self) -> bool;
}

impl Final for v1::WorkerStats {
    fn is_final(&self) -> bool {
        self.state().is_final()
    }
}

impl Final for v1::ReplayEvent {
    fn is_final(&self) -> bool {
        self.status.as_ref().is_none_or(|s| s.state().is_final())
    }
}

/// `messages` up to and including the first final one, ending right after it (a watch
/// would otherwise wait forever for a change that never comes).
pub fn until_final<T, S>(messages: S) -> futures::stream::BoxStream<'static, T>
where
    T: Final + Send + 'static,
    S: futures::Stream<Item = T> + Send + 'static,
{
    use futures::StreamExt;
    futures::stream::unfold((messages.boxed(), false), |(mut messages, ended)| async move {
        if ended {
            return None;
        }
        let message = messages.next().await?;
        let ended = message.is_final();
        Some((message, (messages, ended)))
    })
    .boxed()
}

/// The lower-case names of enums (`ReplayState::Done` is `done`), as shown and stored.
macro_rules! lower_case_names {
    ($($enum:ident => $prefix:literal),* $(,)?) => {$(
        impl std::fmt::Display for $enum {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                let name = self.as_str_name();
                f.write_str(&name.strip_prefix($prefix).unwrap_or(name).to_ascii_lowercase())
            }
        }
    )*};
}

lower_case_names!(
    ReplayState => "REPLAY_STATE_",
    RecordingState => "RECORDING_STATE_",
    PacingMode => "PACING_MODE_",
    WorkerReplayState => "WORKER_REPLAY_STATE_",
);

/// serde adapters for enum fields, which prost keeps as `i32`: each writes the enum's
/// name and reads it back (an unknown number is written as `unspecified`).
pub mod names {
    macro_rules! enum_field {
        ($($module:ident: $enum:ty),* $(,)?) => {$(
            pub mod $module {
                use serde::{Deserialize, Deserializer, Serialize, Serializer};

                pub fn serialize<S: Serializer>(value: &i32, serializer: S) -> Result<S::Ok, S::Error> {
                    <$enum>::try_from(*value).unwrap_or_default().serialize(serializer)
                }

                pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i32, D::Error> {
                    <$enum>::deserialize(deserializer).map(i32::from)
                }
            }
        )*};
    }

    enum_field!(
        recording_state: crate::v1::RecordingState,
        replay_state: crate::v1::ReplayState,
        pacing_mode: crate::v1::PacingMode,
    );
}

#[cfg(test)]
mod tests {
    use super::v1::{Ledger, LedgerEntry, PacingMode, Percentiles, ReplayState, ReplayStatus};

    #[test]
    fn a_ledger_says_none_or_what_was_missed_and_whether_it_is_a_lower_bound() {
        let node = |node: &str, kernel_drops: u64, whole_window: bool| LedgerEntry {
            node: node.into(),
            kernel_drops,
            whole_window,
            ..Default::default()
        };
        assert_eq!(Ledger { nodes: vec![node("a", 0, true)] }.summary(), "none");
        let missed = Ledger { nodes: vec![node("a", 18423, true), LedgerEntry { gaps: 2, ..node("b", 0, false) }] };
        assert_eq!(missed.summary(), "18423 kernel drops, 2 gaps (lower bound: b did not report at both ends)");
        let h2 = Ledger {
            nodes: vec![LedgerEntry {
                h2_mid_stream: 3,
                h2_errors: 1,
                h2_streams_reset: 2,
                h2_streams_left_out: 4,
                ..node("a", 0, true)
            }],
        };
        assert_eq!(
            h2.summary(),
            "1 HTTP/2 protocol or HPACK errors, 2 reset HTTP/2 streams, 4 HTTP/2 streams left out, \
             3 HTTP/2 connections were seen mid-stream and cannot be decoded (HPACK state unknown)"
        );
        assert_eq!(Ledger::default().summary(), "not counted (no capture node reported)");
    }

    #[test]
    fn enums_travel_as_lower_case_names() {
        let status = ReplayStatus {
            state: ReplayState::Running.into(),
            pacing: PacingMode::Constant.into(),
            latency_ms: Some(Percentiles::default()),
            ..Default::default()
        };
        let json = serde_json::to_value(&status).unwrap();
        assert_eq!((json["state"].as_str(), json["pacing"].as_str()), (Some("running"), Some("constant")));
        assert_eq!(json["speed"], serde_json::Value::Null);
        let back: ReplayStatus = serde_json::from_value(json).unwrap();
        assert_eq!(back, status);
        assert_eq!(ReplayState::Cancelled.to_string(), "cancelled");
    }

    #[tokio::test]
    async fn a_stream_ends_right_after_its_final_message() {
        use super::v1::{WorkerReplayState, WorkerStats};
        use futures::StreamExt;
        let report = |seq, state: WorkerReplayState| WorkerStats { seq, state: state.into(), ..Default::default() };
        // A pending tail stands for a watch whose next change never comes.
        let reports = futures::stream::iter([
            report(1, WorkerReplayState::Running),
            report(2, WorkerReplayState::Done),
            report(3, WorkerReplayState::Done),
        ])
        .chain(futures::stream::pending());
        let seen: Vec<u64> = super::until_final(reports).map(|r| r.seq).collect().await;
        assert_eq!(seen, [1, 2]);
    }

    #[test]
    fn a_peer_of_another_version_is_refused() {
        assert!(super::check_protocol(super::PROTOCOL_VERSION, "ctl", "controller").is_ok());
        let refused = super::check_protocol(super::PROTOCOL_VERSION + 1, "ctl", "controller").unwrap_err();
        assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
        assert!(refused.message().contains("the ctl speaks"), "{}", refused.message());
    }
}
