//! A replay's counters and histograms on one worker. Counters are atomics touched once
//! per send; histograms sit behind one short lock. Reports are cumulative (a controller
//! that re-attaches loses nothing) plus per-interval histograms for the live timeline.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Serializer, V2Serializer};
use reprise_proto::v1::{Checkpoint, PartitionShare, WorkerReplayState, WorkerStats};

use crate::sender::{ErrorKind, Outcome};

/// Histogram range in microseconds: 1 µs to one hour, 3 significant digits.
const HIST_MAX_US: u64 = 3_600_000_000;

pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIST_MAX_US, 3).expect("valid histogram bounds")
}

fn serialize(h: &Histogram<u64>) -> Vec<u8> {
    let mut out = Vec::new();
    V2Serializer::new().serialize(h, &mut out).expect("serialising to memory");
    out
}

struct Histograms {
    latency_total: Histogram<u64>,
    lag_total: Histogram<u64>,
    latency_interval: Histogram<u64>,
    lag_interval: Histogram<u64>,
}

pub struct Stats {
    /// Records decoded from the log.
    pub records_decoded: AtomicU64,
    /// Shared with the decoder, which counts log messages that are not traffic records.
    pub records_undecodable: Arc<AtomicU64>,
    /// Records that are not a replayable HTTP request.
    pub records_unreplayable: AtomicU64,
    pub sent: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub in_flight: AtomicU64,
    pub planned_sends: AtomicU64,
    status: [AtomicU64; 5],
    errors: [AtomicU64; 4],
    bytes_received: AtomicU64,
    hists: Mutex<Histograms>,
    shares: Vec<PartitionShare>,
    /// Per share: every selected record below this offset has been dispatched.
    checkpoints: Vec<AtomicI64>,
}

impl Stats {
    pub fn new(shares: &[PartitionShare]) -> Self {
        Stats {
            records_decoded: AtomicU64::new(0),
            records_undecodable: Arc::new(AtomicU64::new(0)),
            records_unreplayable: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            planned_sends: AtomicU64::new(0),
            status: Default::default(),
            errors: Default::default(),
            bytes_received: AtomicU64::new(0),
            hists: Mutex::new(Histograms {
                latency_total: new_histogram(),
                lag_total: new_histogram(),
                latency_interval: new_histogram(),
                lag_interval: new_histogram(),
            }),
            shares: shares.to_vec(),
            checkpoints: shares.iter().map(|s| AtomicI64::new(s.start_offset)).collect(),
        }
    }

    /// A send left the dispatcher `lag_us` after it was due.
    pub fn record_dispatch(&self, lag_us: u64, request_bytes: u64) {
        self.sent.fetch_add(1, Ordering::Relaxed);
        self.bytes_sent.fetch_add(request_bytes, Ordering::Relaxed);
        let mut h = self.hists.lock().expect("stats lock");
        h.lag_total.saturating_record(lag_us.max(1));
        h.lag_interval.saturating_record(lag_us.max(1));
    }

    /// A send completed; `latency_us` counts from when it was due.
    pub fn record_outcome(&self, outcome: Outcome, latency_us: u64) {
        match outcome {
            Outcome::Response { status, body_bytes } => {
                let class = (usize::from(status / 100)).clamp(1, 5) - 1;
                self.status[class].fetch_add(1, Ordering::Relaxed);
                self.bytes_received.fetch_add(body_bytes, Ordering::Relaxed);
                let mut h = self.hists.lock().expect("stats lock");
                h.latency_total.saturating_record(latency_us.max(1));
                h.latency_interval.saturating_record(latency_us.max(1));
            }
            Outcome::Error(kind) => {
                let i = match kind {
                    ErrorKind::Connect => 0,
                    ErrorKind::Timeout => 1,
                    ErrorKind::Reset => 2,
                    ErrorKind::Other => 3,
                };
                self.errors[i].fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Records that every selected record of share `share` below `next_offset` is dispatched.
    pub fn checkpoint(&self, share: usize, next_offset: i64) {
        self.checkpoints[share].store(next_offset, Ordering::Relaxed);
    }

    /// Sends finished so far, with a response or an error.
    pub fn completed(&self) -> u64 {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        self.status.iter().map(load).sum::<u64>() + self.errors.iter().map(load).sum::<u64>()
    }

    /// A cumulative report; starts a new interval.
    pub fn report(
        &self,
        worker_id: &str,
        replay_id: &str,
        seq: u64,
        state: WorkerReplayState,
        error: &str,
    ) -> WorkerStats {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let (latency_us_total, lag_us_total, latency_us_interval, lag_us_interval) = {
            let mut h = self.hists.lock().expect("stats lock");
            let out = (
                serialize(&h.latency_total),
                serialize(&h.lag_total),
                serialize(&h.latency_interval),
                serialize(&h.lag_interval),
            );
            h.latency_interval.reset();
            h.lag_interval.reset();
            out
        };
        WorkerStats {
            worker_id: worker_id.to_string(),
            replay_id: replay_id.to_string(),
            seq,
            at_unix_ns: reprise_store::now_ns(),
            state: state as i32,
            records_read: load(&self.records_decoded) + load(&self.records_undecodable),
            records_skipped: load(&self.records_undecodable) + load(&self.records_unreplayable),
            sent: load(&self.sent),
            status_1xx: load(&self.status[0]),
            status_2xx: load(&self.status[1]),
            status_3xx: load(&self.status[2]),
            status_4xx: load(&self.status[3]),
            status_5xx: load(&self.status[4]),
            errors_connect: load(&self.errors[0]),
            errors_timeout: load(&self.errors[1]),
            errors_reset: load(&self.errors[2]),
            errors_other: load(&self.errors[3]),
            bytes_sent: load(&self.bytes_sent),
            bytes_received: load(&self.bytes_received),
            in_flight: load(&self.in_flight),
            planned_sends: load(&self.planned_sends),
            latency_us_total,
            lag_us_total,
            latency_us_interval,
            lag_us_interval,
            checkpoints: self
                .shares
                .iter()
                .zip(&self.checkpoints)
                .map(|(share, next)| Checkpoint { share: Some(*share), next_offset: next.load(Ordering::Relaxed) })
                .collect(),
            error: error.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hdrhistogram::serialization::Deserializer;

    #[test]
    fn reports_are_cumulative_with_fresh_intervals() {
        let stats = Stats::new(&[PartitionShare { partition: 0, start_offset: 5, end_offset: 9, stride: 1, phase: 0 }]);
        stats.record_dispatch(100, 10);
        stats.record_outcome(Outcome::Response { status: 204, body_bytes: 3 }, 2_000);
        stats.record_dispatch(50, 10);
        stats.record_outcome(Outcome::Error(ErrorKind::Timeout), 0);
        stats.checkpoint(0, 7);
        let first = stats.report("w", "r", 1, WorkerReplayState::Running, "");
        assert_eq!((first.sent, first.status_2xx, first.errors_timeout, first.bytes_sent), (2, 1, 1, 20));
        assert_eq!(first.checkpoints[0].next_offset, 7);
        let second = stats.report("w", "r", 2, WorkerReplayState::Running, "");
        let decode = |b: &[u8]| -> Histogram<u64> { Deserializer::new().deserialize(&mut &b[..]).unwrap() };
        assert_eq!(decode(&second.lag_us_total).len(), 2);
        assert_eq!(decode(&second.lag_us_interval).len(), 0, "interval restarts after a report");
        assert_eq!(decode(&first.latency_us_interval).max(), decode(&first.latency_us_total).max());
    }
}
