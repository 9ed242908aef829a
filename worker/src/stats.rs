//! A replay's counters and histograms on one worker. Counters are atomics touched once
//! per send; histograms are sharded, one shard per dispatch thread, so the hot path takes
//! only its own uncontended lock and the reporter merges copies outside it. Reports are
//! cumulative (a controller that re-attaches loses nothing) plus per-interval histograms
//! for the live timeline.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Serializer, V2Serializer};
use reprise_proto::v1::{
    Checkpoint, DiffSample, EndpointStats, PartitionShare, SecondSends, WorkerReplayState, WorkerStats,
};
use reprise_rules::diff::Difference;
use tokio::sync::Notify;

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
    /// This shard's first and last sends: the replay's real span, not a report tick's.
    first_send: Option<Instant>,
    last_send: Option<Instant>,
    /// This shard's sends per Unix second, oldest first, until a full report has carried
    /// the second closed.
    seconds: VecDeque<(i64, u64)>,
    /// This shard's results per endpoint; [`EndpointSlots`] knows which is which.
    endpoints: Vec<EndpointTally>,
}

/// Distinct endpoints a dispatch thread counts on their own; later ones count as
/// "other" (a recording of ids in paths the normalisation misses must not grow the
/// reports without bound).
const MAX_ENDPOINTS: usize = 64;

/// Fields a diff counts apart per endpoint; later ones count as "(other fields)".
const MAX_DIFF_FIELDS: usize = 64;
/// Samples of differing fields kept per endpoint (one per field).
const MAX_DIFF_SAMPLES: usize = 3;

/// One endpoint's results on one shard.
#[derive(Clone)]
struct EndpointTally {
    name: String,
    sent: u64,
    status: [u64; 5],
    errors: [u64; 4],
    latency: Histogram<u64>,
    diff: DiffTally,
}

/// One endpoint's A/B comparisons.
#[derive(Clone, Default)]
struct DiffTally {
    compared: u64,
    differing: u64,
    fields: BTreeMap<String, u64>,
    noise: BTreeMap<String, u64>,
    samples: Vec<DiffSample>,
}

impl DiffTally {
    fn count(map: &mut BTreeMap<String, u64>, field: &str, n: u64) {
        let field = if map.len() < MAX_DIFF_FIELDS || map.contains_key(field) { field } else { "(other fields)" };
        *map.entry(field.to_string()).or_default() += n;
    }

    fn add(&mut self, other: &DiffTally) {
        self.compared += other.compared;
        self.differing += other.differing;
        other.fields.iter().for_each(|(f, n)| Self::count(&mut self.fields, f, *n));
        other.noise.iter().for_each(|(f, n)| Self::count(&mut self.noise, f, *n));
        for sample in &other.samples {
            self.keep_sample(sample.clone());
        }
    }

    fn keep_sample(&mut self, sample: DiffSample) {
        if self.samples.len() < MAX_DIFF_SAMPLES && !self.samples.iter().any(|s| s.field == sample.field) {
            self.samples.push(sample);
        }
    }
}

impl EndpointTally {
    fn new(name: String) -> Self {
        // Two significant digits: one histogram per endpoint stays small.
        let latency = Histogram::new_with_bounds(1, HIST_MAX_US, 2).expect("valid histogram bounds");
        EndpointTally { name, sent: 0, status: [0; 5], errors: [0; 4], latency, diff: DiffTally::default() }
    }

    fn add(&mut self, other: &EndpointTally) {
        self.sent += other.sent;
        self.status.iter_mut().zip(other.status).for_each(|(a, b)| *a += b);
        self.errors.iter_mut().zip(other.errors).for_each(|(a, b)| *a += b);
        let _ = self.latency.add(&other.latency);
        self.diff.add(&other.diff);
    }

    fn to_report(&self) -> EndpointStats {
        let [status_1xx, status_2xx, status_3xx, status_4xx, status_5xx] = self.status;
        let [errors_connect, errors_timeout, errors_reset, errors_other] = self.errors;
        EndpointStats {
            endpoint: self.name.clone(),
            sent: self.sent,
            status_1xx,
            status_2xx,
            status_3xx,
            status_4xx,
            status_5xx,
            errors_connect,
            errors_timeout,
            errors_reset,
            errors_other,
            latency_us: serialize(&self.latency),
            compared: self.diff.compared,
            differing: self.diff.differing,
            fields: self.diff.fields.clone(),
            noise: self.diff.noise.clone(),
            samples: self.diff.samples.clone(),
        }
    }
}

impl Histograms {
    fn new() -> Self {
        Histograms {
            latency_total: new_histogram(),
            lag_total: new_histogram(),
            latency_interval: new_histogram(),
            lag_interval: new_histogram(),
            first_send: None,
            last_send: None,
            seconds: VecDeque::new(),
            endpoints: Vec::new(),
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

/// A dispatch thread's endpoints and their slots in its shard, kept by the thread itself:
/// the shard is locked to add an endpoint, not for every record.
#[derive(Debug, Default)]
pub struct EndpointSlots {
    slots: HashMap<String, usize>,
    /// Where the endpoints past [`MAX_ENDPOINTS`] count, once there are some.
    other: Option<usize>,
}

impl EndpointSlots {
    /// The slot that dispatch thread `shard` counts `endpoint`'s results in.
    pub fn slot(&mut self, stats: &Stats, shard: usize, endpoint: &str) -> usize {
        if let Some(&slot) = self.slots.get(endpoint) {
            return slot;
        }
        if self.slots.len() < MAX_ENDPOINTS {
            let slot = stats.add_endpoint(shard, endpoint);
            self.slots.insert(endpoint.to_string(), slot);
            return slot;
        }
        *self.other.get_or_insert_with(|| stats.add_endpoint(shard, reprise_rules::endpoint::OTHER))
    }
}

pub struct Stats {
    /// Records decoded from the log.
    pub records_decoded: AtomicU64,
    /// Shared with the decoder, which counts log messages that are not traffic records.
    pub records_undecodable: Arc<AtomicU64>,
    /// Records that are not a replayable HTTP request.
    pub records_unreplayable: AtomicU64,
    /// Requests the replay's rules left out.
    pub records_filtered: AtomicU64,
    /// `--compare`: comparisons given up for want of a counterpart.
    pub uncompared: AtomicU64,
    pub sent: AtomicU64,
    /// Signalled every `light_report_every` sends: the reporter then sends a light report
    /// at once (a permit is kept if it is busy, so none is missed).
    pub report_due: Notify,
    light_report_every: u64,
    pub bytes_sent: AtomicU64,
    pub in_flight: AtomicU64,
    pub planned_sends: AtomicU64,
    /// The highest pass a send went out in, from 1 (0: none yet).
    current_pass: AtomicU32,
    /// Sends of requests recorded with a cut body.
    pub sent_cut: AtomicU64,
    status: [AtomicU64; 5],
    errors: [AtomicU64; 4],
    bytes_received: AtomicU64,
    /// One shard per dispatch thread.
    hists: Vec<Mutex<Histograms>>,
    /// An instant and its Unix time in ns: dispatch instants are placed in Unix seconds
    /// from here, without a clock call per send.
    epoch: (Instant, i64),
    shares: Vec<PartitionShare>,
    /// The share each lane reads a part of (a share may be split into lanes).
    lane_shares: Vec<usize>,
    /// Per lane: what is taken and not finished yet. Locked by the lane's one dispatch
    /// thread and its sends (same thread), and by the reporter.
    progress: Vec<Mutex<LaneProgress>>,
}

/// A place in a looping replay: an offset within a pass. Passes order first.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct PassOffset {
    pub pass: u32,
    pub offset: i64,
}

/// A lane's records from its checkpoint on, in offset order: each taken record with the
/// sends it still waits for. A record counts as finished once all its sends have a
/// response or an error; the checkpoint moves past a record only once it and every
/// record before it have finished, so resuming from it loses nothing. Holds about what is
/// in flight (more behind a slow send, at most what is sent within a request timeout).
#[derive(Debug, Default)]
struct LaneProgress {
    /// Sequence number of `taken`'s front.
    front_seq: u64,
    taken: VecDeque<Taken>,
    /// The checkpoint when nothing is waiting.
    finished_below: PassOffset,
    /// Sends of the records in `taken`.
    sends_past: u64,
}

#[derive(Debug)]
struct Taken {
    at: PassOffset,
    /// Where the checkpoint moves once this record is finished.
    next: PassOffset,
    waiting: u32,
    sends: u32,
}

/// A taken record, to report its sends against.
#[derive(Debug, Clone, Copy)]
pub struct TakenRecord {
    lane: usize,
    seq: u64,
}

impl LaneProgress {
    fn take(&mut self, at: PassOffset, next: PassOffset, sends: u32) -> u64 {
        let seq = self.front_seq + self.taken.len() as u64;
        if sends == 0 && self.taken.is_empty() {
            self.finished_below = next;
        } else {
            self.taken.push_back(Taken { at, next, waiting: sends, sends: 0 });
        }
        seq
    }

    fn get(&mut self, seq: u64) -> Option<&mut Taken> {
        let index = seq.checked_sub(self.front_seq)?;
        self.taken.get_mut(usize::try_from(index).ok()?)
    }

    fn sent(&mut self, seq: u64) {
        if let Some(taken) = self.get(seq) {
            taken.sends += 1;
            self.sends_past += 1;
        }
    }

    fn finished(&mut self, seq: u64) {
        if let Some(taken) = self.get(seq) {
            taken.waiting = taken.waiting.saturating_sub(1);
        }
        while self.taken.front().is_some_and(|t| t.waiting == 0) {
            let done = self.taken.pop_front().expect("front checked");
            self.finished_below = done.next;
            self.sends_past -= u64::from(done.sends);
            self.front_seq += 1;
        }
    }

    fn checkpoint(&self) -> PassOffset {
        self.taken.front().map_or(self.finished_below, |t| t.at)
    }
}

impl Stats {
    /// Stats for `shares`, read as lanes (`lane_shares[i]` is lane i's share) by
    /// `shards` dispatch threads.
    pub fn new(shares: &[PartitionShare], lane_shares: &[usize], shards: usize) -> Self {
        Stats {
            records_decoded: AtomicU64::new(0),
            records_undecodable: Arc::new(AtomicU64::new(0)),
            records_unreplayable: AtomicU64::new(0),
            records_filtered: AtomicU64::new(0),
            uncompared: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            report_due: Notify::new(),
            light_report_every: u64::MAX,
            bytes_sent: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            planned_sends: AtomicU64::new(0),
            current_pass: AtomicU32::new(0),
            sent_cut: AtomicU64::new(0),
            status: Default::default(),
            errors: Default::default(),
            bytes_received: AtomicU64::new(0),
            hists: (0..shards.max(1)).map(|_| Mutex::new(Histograms::new())).collect(),
            epoch: (Instant::now(), reprise_store::now_ns()),
            shares: shares.to_vec(),
            lane_shares: lane_shares.to_vec(),
            progress: lane_shares
                .iter()
                .map(|&s| Mutex::new(LaneProgress { finished_below: share_start(&shares[s]), ..Default::default() }))
                .collect(),
        }
    }

    /// Asks for a light report every `sends` sends (at least 1).
    pub fn with_light_reports_every(self, sends: u64) -> Self {
        Stats { light_report_every: sends.max(1), ..self }
    }

    fn lane(&self, lane: usize) -> std::sync::MutexGuard<'_, LaneProgress> {
        self.progress[lane].lock().expect("progress lock")
    }

    /// The dispatcher took the record at `offset` of `lane` in `pass`, to be sent `sends`
    /// times (0: it is skipped, and finished as soon as everything before it is).
    pub fn take(&self, lane: usize, pass: u32, offset: i64, sends: u32) -> TakenRecord {
        let (at, next) = (PassOffset { pass, offset }, PassOffset { pass, offset: offset + 1 });
        TakenRecord { lane, seq: self.lane(lane).take(at, next, sends) }
    }

    /// A lane has no record left below `end` in `pass`.
    pub fn lane_end(&self, lane: usize, pass: u32, end: i64) {
        let at = PassOffset { pass, offset: end };
        self.lane(lane).take(at, at, 0);
    }

    /// A send of `pass` (from 0) went out.
    pub fn in_pass(&self, pass: u32) {
        self.current_pass.fetch_max(pass + 1, Ordering::Relaxed);
    }

    /// One send of a taken record left.
    pub fn sent(&self, record: TakenRecord) {
        self.lane(record.lane).sent(record.seq);
    }

    /// One send of a taken record has its response or error.
    pub fn finished(&self, record: TakenRecord) {
        self.lane(record.lane).finished(record.seq);
    }

    /// A new endpoint in shard `shard`: its slot.
    fn add_endpoint(&self, shard: usize, endpoint: &str) -> usize {
        let mut h = self.hists[shard].lock().expect("stats lock");
        h.endpoints.push(EndpointTally::new(endpoint.to_string()));
        h.endpoints.len() - 1
    }

    /// A send to the endpoint in `slot` left dispatch thread `shard` at `dispatched`,
    /// `lag_us` after it was due.
    pub fn record_dispatch(&self, shard: usize, slot: usize, dispatched: Instant, lag_us: u64, request_bytes: u64) {
        if (self.sent.fetch_add(1, Ordering::Relaxed) + 1).is_multiple_of(self.light_report_every) {
            self.report_due.notify_one();
        }
        self.bytes_sent.fetch_add(request_bytes, Ordering::Relaxed);
        let unix_ns = match dispatched.checked_duration_since(self.epoch.0) {
            Some(after) => self.epoch.1 + after.as_nanos() as i64,
            None => self.epoch.1 - self.epoch.0.duration_since(dispatched).as_nanos() as i64,
        };
        let second = unix_ns.div_euclid(1_000_000_000);
        let mut h = self.hists[shard].lock().expect("stats lock");
        h.lag_total.saturating_record(lag_us.max(1));
        h.lag_interval.saturating_record(lag_us.max(1));
        h.first_send.get_or_insert(dispatched);
        h.last_send = Some(dispatched);
        h.endpoints[slot].sent += 1;
        // One thread per shard, so its sends come in time order: only the newest second
        // can still grow.
        match h.seconds.back_mut() {
            Some((last, sent)) if *last == second => *sent += 1,
            _ => h.seconds.push_back((second, 1)),
        }
    }

    /// The first and the last send over every shard, as Unix times in nanoseconds.
    fn send_window(&self) -> (Option<i64>, Option<i64>) {
        let (now, now_ns) = (Instant::now(), reprise_store::now_ns());
        let unix = |t: Instant| now_ns - now.saturating_duration_since(t).as_nanos() as i64;
        let (mut first, mut last): (Option<Instant>, Option<Instant>) = (None, None);
        for shard in &self.hists {
            let h = shard.lock().expect("stats lock");
            first = first.into_iter().chain(h.first_send).min();
            last = last.into_iter().chain(h.last_send).max();
        }
        (first.map(unix), last.map(unix))
    }

    /// A send of dispatch thread `shard` to the endpoint in `slot` completed;
    /// `latency_us` counts from when it was due.
    pub fn record_outcome(&self, shard: usize, slot: usize, outcome: Outcome, latency_us: u64) {
        match outcome {
            Outcome::Response { status, body_bytes } => {
                let class = (usize::from(status / 100)).clamp(1, 5) - 1;
                self.status[class].fetch_add(1, Ordering::Relaxed);
                self.bytes_received.fetch_add(body_bytes, Ordering::Relaxed);
                let mut h = self.hists[shard].lock().expect("stats lock");
                h.latency_total.saturating_record(latency_us.max(1));
                h.latency_interval.saturating_record(latency_us.max(1));
                let endpoint = &mut h.endpoints[slot];
                endpoint.status[class] += 1;
                endpoint.latency.saturating_record(latency_us.max(1));
            }
            Outcome::Simulated => {}
            Outcome::Error(kind) => {
                let i = match kind {
                    ErrorKind::Connect => 0,
                    ErrorKind::Timeout => 1,
                    ErrorKind::Reset => 2,
                    ErrorKind::Other => 3,
                };
                self.errors[i].fetch_add(1, Ordering::Relaxed);
                self.hists[shard].lock().expect("stats lock").endpoints[slot].errors[i] += 1;
            }
        }
    }

    /// A request to the endpoint in `slot` was answered by both sides of an A/B replay:
    /// `differences` between them, and the fields that differed between the target and
    /// the baseline for it (noise: not counted as differing).
    pub fn record_diff(&self, shard: usize, slot: usize, request: &str, differences: &[Difference], noise: &[String]) {
        let mut h = self.hists[shard].lock().expect("stats lock");
        let diff = &mut h.endpoints[slot].diff;
        diff.compared += 1;
        noise.iter().for_each(|field| DiffTally::count(&mut diff.noise, field, 1));
        let real: Vec<&Difference> = differences.iter().filter(|d| !noise.contains(&d.field)).collect();
        if real.is_empty() {
            return;
        }
        diff.differing += 1;
        for d in real {
            DiffTally::count(&mut diff.fields, &d.field, 1);
            diff.keep_sample(DiffSample {
                field: d.field.clone(),
                request: request.to_string(),
                expected: d.left.clone(),
                actual: d.right.clone(),
            });
        }
    }

    /// Per share, the lowest checkpoint of its lanes: below it, every lane (so every
    /// selected record of the share) has finished; and the sends past those checkpoints.
    fn share_checkpoints(&self) -> (Vec<Checkpoint>, u64) {
        let mut next: Vec<Option<PassOffset>> = vec![None; self.shares.len()];
        let mut sends_past = 0;
        for (lane, &share) in self.lane_shares.iter().enumerate() {
            let progress = self.lane(lane);
            let checkpoint = progress.checkpoint();
            next[share] = Some(next[share].map_or(checkpoint, |n| n.min(checkpoint)));
            sends_past += progress.sends_past;
        }
        let checkpoints = self
            .shares
            .iter()
            .zip(next)
            .map(|(share, next)| {
                let next = next.unwrap_or(PassOffset { pass: share.first_pass, offset: share.end_offset });
                Checkpoint { share: Some(*share), next_offset: next.offset, pass: next.pass }
            })
            .collect();
        (checkpoints, sends_past)
    }

    /// Sends finished so far, with a response or an error.
    pub fn completed(&self) -> u64 {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        self.status.iter().map(load).sum::<u64>() + self.errors.iter().map(load).sum::<u64>()
    }

    /// The histograms of every shard, merged, the sends per second and the endpoints;
    /// with `new_interval` (a report, not a scrape), the interval starts again and the
    /// seconds reported closed are dropped.
    fn merged_histograms(&self, new_interval: bool) -> (Histograms, Vec<SecondSends>, Vec<EndpointStats>) {
        // A second is closed once the clock is a second past its end: a send timed in it
        // may still be taking its shard's lock for a moment after.
        let open_from = reprise_store::now_ns().div_euclid(1_000_000_000) - 1;
        let mut merged = Histograms::new();
        let mut seconds = BTreeMap::new();
        let mut endpoints: BTreeMap<String, EndpointTally> = BTreeMap::new();
        for shard in &self.hists {
            // Copy under the lock, merge and serialise outside it.
            let copy = {
                let mut h = shard.lock().expect("stats lock");
                let copy = h.clone();
                if new_interval {
                    h.latency_interval.reset();
                    h.lag_interval.reset();
                    h.seconds.retain(|(second, _)| *second >= open_from);
                }
                copy
            };
            merged.add(&copy);
            for (second, sent) in copy.seconds {
                *seconds.entry(second).or_default() += sent;
            }
            for endpoint in copy.endpoints {
                match endpoints.get_mut(&endpoint.name) {
                    Some(merged) => merged.add(&endpoint),
                    None => _ = endpoints.insert(endpoint.name.clone(), endpoint),
                }
            }
        }
        let seconds = seconds.into_iter().map(|(unix_s, sent)| SecondSends { unix_s, sent }).collect();
        (merged, seconds, endpoints.values().map(EndpointTally::to_report).collect())
    }

    /// A cumulative report. A full one carries the histograms and starts a new interval;
    /// a light one only the counters and checkpoints (see `WorkerStats.light`).
    pub fn report(
        &self,
        id: &ReportId<'_>,
        seq: u64,
        state: WorkerReplayState,
        error: &str,
        light: bool,
    ) -> WorkerStats {
        let encoded = (!light).then(|| {
            let (merged, seconds, endpoints) = self.merged_histograms(true);
            let histograms = [&merged.latency_total, &merged.lag_total, &merged.latency_interval, &merged.lag_interval];
            Detail { histograms: histograms.map(serialize), sends_per_second: seconds, endpoints }
        });
        self.report_with(id, seq, state, error, light, encoded.unwrap_or_default())
    }

    /// The cumulative counters, histograms and endpoints now, for a scrape: the interval
    /// and the seconds are left to the next report (they feed the controller's timeline).
    pub fn snapshot(&self, id: &ReportId<'_>, state: WorkerReplayState) -> WorkerStats {
        let (merged, _, endpoints) = self.merged_histograms(false);
        let histograms = [serialize(&merged.latency_total), serialize(&merged.lag_total), Vec::new(), Vec::new()];
        self.report_with(id, 0, state, "", false, Detail { histograms, sends_per_second: Vec::new(), endpoints })
    }

    /// A report with the detail given.
    fn report_with(
        &self,
        id: &ReportId<'_>,
        seq: u64,
        state: WorkerReplayState,
        error: &str,
        light: bool,
        detail: Detail,
    ) -> WorkerStats {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let Detail { histograms, sends_per_second, endpoints } = detail;
        let [latency_us_total, lag_us_total, latency_us_interval, lag_us_interval] = histograms;
        let (checkpoints, sends_past_checkpoints) = self.share_checkpoints();
        let (first_send_unix_ns, last_send_unix_ns) = self.send_window();
        WorkerStats {
            worker_id: id.worker_id.to_string(),
            replay_id: id.replay_id.to_string(),
            part: id.part,
            seq,
            at_unix_ns: reprise_store::now_ns(),
            state: state as i32,
            records_read: load(&self.records_decoded) + load(&self.records_undecodable),
            records_skipped: load(&self.records_undecodable) + load(&self.records_unreplayable),
            records_filtered: load(&self.records_filtered),
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
            checkpoints,
            error: error.to_string(),
            light,
            sends_past_checkpoints,
            current_pass: load32(&self.current_pass),
            sent_cut: load(&self.sent_cut),
            first_send_unix_ns,
            last_send_unix_ns,
            sends_per_second,
            endpoints,
            uncompared: load(&self.uncompared),
        }
    }
}

/// Where a share starts: its first pass, from its resume offset.
fn share_start(share: &PartitionShare) -> PassOffset {
    PassOffset { pass: share.first_pass, offset: share.resume_offset.max(share.start_offset) }
}

fn load32(a: &AtomicU32) -> u32 {
    a.load(Ordering::Relaxed)
}

/// What a full report carries beyond the counters: the histograms (latency and lag,
/// total then interval), the sends per second and the endpoints.
#[derive(Default)]
struct Detail {
    histograms: [Vec<u8>; 4],
    sends_per_second: Vec<SecondSends>,
    endpoints: Vec<EndpointStats>,
}

/// Whose report it is.
pub struct ReportId<'a> {
    pub worker_id: &'a str,
    pub replay_id: &'a str,
    pub part: u32,
}

#[cfg(test)]
mod tests {
    use super::*;
    use hdrhistogram::serialization::Deserializer;

    const ID: ReportId<'static> = ReportId { worker_id: "w", replay_id: "r", part: 0 };

    fn share(partition: i32, start_offset: i64, end_offset: i64) -> PartitionShare {
        PartitionShare { partition, start_offset, end_offset, stride: 1, phase: 0, ..Default::default() }
    }

    /// Stats of one lane whose shards each count one endpoint, "GET /a", in slot 0.
    fn stats_with_endpoint(shares: &[PartitionShare], shards: usize) -> Stats {
        let stats = Stats::new(shares, &[0], shards);
        (0..shards).for_each(|shard| assert_eq!(EndpointSlots::default().slot(&stats, shard, "GET /a"), 0));
        stats
    }

    fn report(stats: &Stats, light: bool) -> WorkerStats {
        stats.report(&ID, 1, WorkerReplayState::Running, "", light)
    }

    #[test]
    fn sends_are_counted_per_unix_second_until_reported_closed() {
        let stats = stats_with_endpoint(&[share(0, 0, 9)], 2);
        let now = Instant::now();
        let (now_s, old) = (reprise_store::now_ns().div_euclid(1_000_000_000), now - std::time::Duration::from_secs(5));
        stats.record_dispatch(0, 0, old, 1, 1);
        stats.record_dispatch(1, 0, old, 1, 1);
        stats.record_dispatch(1, 0, now, 1, 1);
        let seconds = |r: WorkerStats| r.sends_per_second.iter().map(|s| (s.unix_s, s.sent)).collect::<Vec<_>>();
        let first = seconds(report(&stats, false));
        assert_eq!(first.iter().map(|(_, n)| n).sum::<u64>(), 3);
        assert!(first[0].0 <= now_s - 4 && first[0].1 == 2, "{first:?}");
        assert!(seconds(report(&stats, true)).is_empty(), "a light report has none");
        let second = seconds(report(&stats, false));
        assert_eq!(second.len(), 1, "the closed second went once: {second:?}");
        assert_eq!((second[0].1, second[0].0 >= now_s - 1), (1, true));
    }

    #[tokio::test]
    async fn every_nth_send_wakes_the_reporter_once() {
        let stats = Stats::new(&[share(0, 0, 9)], &[0], 1).with_light_reports_every(3);
        let (slot, now) = (EndpointSlots::default().slot(&stats, 0, "GET /a"), Instant::now());
        let asked = |stats: &Stats| futures::FutureExt::now_or_never(stats.report_due.notified()).is_some();
        (0..2).for_each(|_| stats.record_dispatch(0, slot, now, 1, 1));
        assert!(!asked(&stats), "not before the third send");
        (0..4).for_each(|_| stats.record_dispatch(0, slot, now, 1, 1));
        assert!(asked(&stats), "the third and the sixth send asked");
        assert!(!asked(&stats), "one permit is kept, not one per ask");
    }

    #[test]
    fn reports_are_cumulative_with_fresh_intervals() {
        let stats = stats_with_endpoint(&[share(0, 5, 9)], 2);
        let last_send = Instant::now();
        stats.record_dispatch(0, 0, last_send - std::time::Duration::from_millis(250), 100, 10);
        stats.record_outcome(0, 0, Outcome::Response { status: 204, body_bytes: 3 }, 2_000);
        stats.record_dispatch(1, 0, last_send, 50, 10);
        stats.record_outcome(1, 0, Outcome::Error(ErrorKind::Timeout), 0);
        let first = report(&stats, false);
        assert_eq!((first.sent, first.status_2xx, first.errors_timeout, first.bytes_sent), (2, 1, 1, 20));
        let endpoint = &first.endpoints[..];
        assert_eq!(endpoint.len(), 1, "both shards' GET /a as one");
        let e = &endpoint[0];
        assert_eq!((e.endpoint.as_str(), e.sent, e.status_2xx, e.errors_timeout), ("GET /a", 2, 1, 1));
        let span_ns = first.last_send_unix_ns.unwrap() - first.first_send_unix_ns.unwrap();
        assert!((249_000_000..=251_000_000).contains(&span_ns), "the sends' span across shards: {span_ns} ns");
        let light = report(&stats, true);
        assert!(light.light && light.lag_us_total.is_empty() && light.latency_us_interval.is_empty());
        let second = report(&stats, false);
        let decode = |b: &[u8]| -> Histogram<u64> { Deserializer::new().deserialize(&mut &b[..]).unwrap() };
        assert_eq!(decode(&second.lag_us_total).len(), 2);
        assert_eq!(decode(&second.lag_us_interval).len(), 0, "interval restarts after a full report");
        assert_eq!(decode(&first.latency_us_interval).max(), decode(&first.latency_us_total).max());
    }

    #[test]
    fn endpoints_past_the_cap_count_as_other() {
        let (stats, mut slots) = (Stats::new(&[share(0, 0, 9)], &[0], 1), EndpointSlots::default());
        for i in 0..MAX_ENDPOINTS + 5 {
            let slot = slots.slot(&stats, 0, &format!("GET /p{i}"));
            stats.record_dispatch(0, slot, Instant::now(), 1, 1);
        }
        let endpoints = report(&stats, false).endpoints;
        assert_eq!(endpoints.len(), MAX_ENDPOINTS + 1);
        let other = endpoints.iter().find(|e| e.endpoint == reprise_rules::endpoint::OTHER).unwrap();
        assert_eq!(other.sent, 5);
        assert_eq!(endpoints.iter().map(|e| e.sent).sum::<u64>(), MAX_ENDPOINTS as u64 + 5);
    }

    #[test]
    fn a_snapshot_has_the_totals_and_leaves_the_interval_to_the_next_report() {
        let stats = stats_with_endpoint(&[share(0, 5, 9)], 2);
        stats.record_dispatch(0, 0, Instant::now(), 100, 10);
        stats.record_outcome(0, 0, Outcome::Response { status: 200, body_bytes: 3 }, 2_000);
        stats.record_dispatch(1, 0, Instant::now(), 70, 10);
        let decode = |b: &[u8]| -> Histogram<u64> { Deserializer::new().deserialize(&mut &b[..]).unwrap() };
        let snapshot = stats.snapshot(&ID, WorkerReplayState::Running);
        assert_eq!((snapshot.sent, snapshot.status_2xx, snapshot.bytes_received), (2, 1, 3));
        assert_eq!((decode(&snapshot.lag_us_total).len(), decode(&snapshot.latency_us_total).len()), (2, 1));
        let next = report(&stats, false);
        assert_eq!(decode(&next.lag_us_interval).len(), 2, "the scrape took nothing from the interval");
        assert_eq!(next.sends_per_second.iter().map(|s| s.sent).sum::<u64>(), 2, "nor the seconds");
    }

    #[test]
    fn the_checkpoint_waits_for_every_send_before_it() {
        let stats = Stats::new(&[share(0, 10, 20)], &[0], 1);
        let checkpoint = |stats: &Stats| {
            let report = report(stats, true);
            (report.checkpoints[0].next_offset, report.sends_past_checkpoints)
        };
        assert_eq!(checkpoint(&stats), (10, 0));
        let a = stats.take(0, 0, 10, 2);
        stats.sent(a);
        stats.sent(a);
        stats.take(0, 0, 11, 0);
        let b = stats.take(0, 0, 12, 1);
        stats.sent(b);
        stats.finished(b);
        stats.finished(a);
        assert_eq!(checkpoint(&stats), (10, 3), "one of record 10's two sends is still out");
        stats.finished(a);
        assert_eq!(checkpoint(&stats), (13, 0), "10 finished, 11 skipped, 12 finished");
        let c = stats.take(0, 0, 13, 1);
        stats.sent(c);
        stats.lane_end(0, 0, 20);
        assert_eq!(checkpoint(&stats), (13, 1));
        stats.finished(c);
        assert_eq!(checkpoint(&stats), (20, 0), "the lane's end once everything before it finished");
    }

    #[test]
    fn a_split_share_checkpoints_at_its_slowest_lane() {
        // Share 0 read as two lanes, share 1 as one.
        let stats = Stats::new(&[share(0, 0, 100), share(1, 10, 20)], &[0, 0, 1], 1);
        stats.take(0, 0, 39, 0);
        stats.take(1, 0, 36, 0);
        stats.lane_end(2, 0, 20);
        let next: Vec<i64> = report(&stats, true).checkpoints.iter().map(|c| c.next_offset).collect();
        assert_eq!(next, vec![37, 20]);
    }

    #[test]
    fn a_looping_lane_checkpoints_in_the_pass_still_in_flight() {
        let stats = Stats::new(&[share(0, 10, 20)], &[0], 1);
        let checkpoint = |stats: &Stats| {
            let c = report(stats, true).checkpoints[0];
            (c.pass, c.next_offset)
        };
        let last = stats.take(0, 0, 19, 1);
        stats.lane_end(0, 0, 20);
        let first = stats.take(0, 1, 10, 1);
        stats.in_pass(1);
        assert_eq!(checkpoint(&stats), (0, 19), "pass 0's last record is still out");
        stats.finished(last);
        assert_eq!(checkpoint(&stats), (1, 10));
        stats.finished(first);
        assert_eq!(checkpoint(&stats), (1, 11));
        assert_eq!(report(&stats, true).current_pass, 2);
    }

    #[test]
    fn a_taken_over_share_checkpoints_from_its_resume_point() {
        let share = PartitionShare { first_pass: 3, resume_offset: 15, ..share(0, 10, 20) };
        let stats = Stats::new(&[share], &[0], 1);
        let c = report(&stats, true).checkpoints[0];
        assert_eq!((c.pass, c.next_offset), (3, 15));
    }
}
