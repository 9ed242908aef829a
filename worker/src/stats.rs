//! A replay's counters and histograms on one worker. Counters are atomics touched once
//! per send; histograms are sharded, one shard per dispatch thread, so the hot path takes
//! only its own uncontended lock and the reporter merges copies outside it. Reports are
//! cumulative (a controller that re-attaches loses nothing) plus per-interval histograms
//! for the live timeline.

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

#[derive(Clone)]
struct Histograms {
    latency_total: Histogram<u64>,
    lag_total: Histogram<u64>,
    latency_interval: Histogram<u64>,
    lag_interval: Histogram<u64>,
}

impl Histograms {
    fn new() -> Self {
        Histograms {
            latency_total: new_histogram(),
            lag_total: new_histogram(),
            latency_interval: new_histogram(),
            lag_interval: new_histogram(),
        }
    }

    fn add(&mut self, other: &Histograms) {
        // Same bounds everywhere, so adding cannot fail.
        let _ = self.latency_total.add(&other.latency_total);
        let _ = self.lag_total.add(&other.lag_total);
        let _ = self.latency_interval.add(&other.latency_interval);
        let _ = self.lag_interval.add(&other.lag_interval);
    }
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
    /// One shard per dispatch thread.
    hists: Vec<Mutex<Histograms>>,
    shares: Vec<PartitionShare>,
    /// The share each lane reads a part of (a share may be split into lanes).
    lane_shares: Vec<usize>,
    /// Per lane: every record of the lane below this offset has been dispatched.
    checkpoints: Vec<AtomicI64>,
}

impl Stats {
    /// Stats for `shares`, read as lanes (`lane_shares[i]` is lane i's share) by
    /// `shards` dispatch threads.
    pub fn new(shares: &[PartitionShare], lane_shares: &[usize], shards: usize) -> Self {
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
            hists: (0..shards.max(1)).map(|_| Mutex::new(Histograms::new())).collect(),
            shares: shares.to_vec(),
            lane_shares: lane_shares.to_vec(),
            checkpoints: lane_shares.iter().map(|&s| AtomicI64::new(shares[s].start_offset)).collect(),
        }
    }

    /// A send left dispatch thread `shard` `lag_us` after it was due.
    pub fn record_dispatch(&self, shard: usize, lag_us: u64, request_bytes: u64) {
        self.sent.fetch_add(1, Ordering::Relaxed);
        self.bytes_sent.fetch_add(request_bytes, Ordering::Relaxed);
        let mut h = self.hists[shard].lock().expect("stats lock");
        h.lag_total.saturating_record(lag_us.max(1));
        h.lag_interval.saturating_record(lag_us.max(1));
    }

    /// A send of dispatch thread `shard` completed; `latency_us` counts from when it was due.
    pub fn record_outcome(&self, shard: usize, outcome: Outcome, latency_us: u64) {
        match outcome {
            Outcome::Response { status, body_bytes } => {
                let class = (usize::from(status / 100)).clamp(1, 5) - 1;
                self.status[class].fetch_add(1, Ordering::Relaxed);
                self.bytes_received.fetch_add(body_bytes, Ordering::Relaxed);
                let mut h = self.hists[shard].lock().expect("stats lock");
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

    /// Records that every record of lane `lane` below `next_offset` is dispatched.
    pub fn checkpoint(&self, lane: usize, next_offset: i64) {
        self.checkpoints[lane].store(next_offset, Ordering::Relaxed);
    }

    /// Per share, the lowest checkpoint of its lanes: below it, every lane (so every
    /// selected record of the share) has been dispatched.
    fn share_checkpoints(&self) -> Vec<Checkpoint> {
        let mut next: Vec<i64> = self.shares.iter().map(|s| s.end_offset).collect();
        for (&share, checkpoint) in self.lane_shares.iter().zip(&self.checkpoints) {
            next[share] = next[share].min(checkpoint.load(Ordering::Relaxed));
        }
        self.shares
            .iter()
            .zip(next)
            .map(|(share, next_offset)| Checkpoint { share: Some(*share), next_offset })
            .collect()
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
        let mut merged = Histograms::new();
        for shard in &self.hists {
            // Copy under the lock, merge and serialise outside it.
            let copy = {
                let mut h = shard.lock().expect("stats lock");
                let copy = h.clone();
                h.latency_interval.reset();
                h.lag_interval.reset();
                copy
            };
            merged.add(&copy);
        }
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
            latency_us_total: serialize(&merged.latency_total),
            lag_us_total: serialize(&merged.lag_total),
            latency_us_interval: serialize(&merged.latency_interval),
            lag_us_interval: serialize(&merged.lag_interval),
            checkpoints: self.share_checkpoints(),
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
        let share = PartitionShare { partition: 0, start_offset: 5, end_offset: 9, stride: 1, phase: 0 };
        let stats = Stats::new(&[share], &[0], 2);
        stats.record_dispatch(0, 100, 10);
        stats.record_outcome(0, Outcome::Response { status: 204, body_bytes: 3 }, 2_000);
        stats.record_dispatch(1, 50, 10);
        stats.record_outcome(1, Outcome::Error(ErrorKind::Timeout), 0);
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

    #[test]
    fn a_split_share_checkpoints_at_its_slowest_lane() {
        let shares = [
            PartitionShare { partition: 0, start_offset: 0, end_offset: 100, stride: 1, phase: 0 },
            PartitionShare { partition: 1, start_offset: 10, end_offset: 20, stride: 1, phase: 0 },
        ];
        // Share 0 read as two lanes, share 1 as one.
        let stats = Stats::new(&shares, &[0, 0, 1], 1);
        stats.checkpoint(0, 40);
        stats.checkpoint(1, 37);
        stats.checkpoint(2, 20);
        let next: Vec<i64> = stats
            .report("w", "r", 1, WorkerReplayState::Running, "")
            .checkpoints
            .iter()
            .map(|c| c.next_offset)
            .collect();
        assert_eq!(next, vec![37, 20]);
    }
}
