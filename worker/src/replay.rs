//! One replay on one worker: read the assigned shares, merge them by timestamp, send
//! every record when it is due on the shared timeline, and report.
//!
//! Pacing is absolute: a record stamped `ts` is due at `start_at + (ts - origin) / speed`
//! (plus the time spent paused), computed from the controller's `start_at` alone, so
//! every worker replays the same timeline with no coordination per request. The
//! dispatcher sleeps only when the next record is not yet due; everything due by then
//! goes out together. Memory is bounded by the read-ahead and the in-flight limit.
//!
//! Dispatch is thread-per-core: the shares are cut into lanes (a share is split by
//! stride when there are fewer shares than threads), the lanes are dealt to dispatch
//! threads, and each thread runs its lanes on its own single-threaded runtime with its
//! own connection pool, in-flight bound and stats shard. A send is spawned and completed
//! on the thread that dispatched it, so the hot path never wakes another thread.

use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use http::Request;
use http_body_util::Full;
use reprise_proto::v1::{AssignRequest, MessageKind, PacingMode, PartitionShare, WorkerReplayState, WorkerStats};
use reprise_store::log::{LogError, RangeSpec};
use reprise_store::traffic::{Located, decode_stream};
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::request::{self, RecordedRequest, Target};
use crate::sender::{DryRunSender, HttpSender, Sender, SenderConfig};
use crate::stats::Stats;
use crate::timer::PreciseTimer;

/// Records buffered ahead of the dispatcher, per share.
const READ_AHEAD: usize = 2048;
/// A record due this close is sent now rather than slept for.
const EARLY_SLACK: Duration = Duration::from_micros(20);
const REPORT_EVERY: Duration = Duration::from_secs(1);

type LocatedStream = Pin<Box<dyn Stream<Item = Result<Located, LogError>> + Send>>;

/// Settings that come from the worker's host rather than from the assignment.
#[derive(Debug, Clone, Copy, Default)]
pub struct HostSettings {
    /// Local address for outgoing connections.
    pub source_ip: Option<std::net::IpAddr>,
    /// Dispatch threads per replay (0: one per core).
    pub dispatch_threads: usize,
}

impl HostSettings {
    fn threads(&self) -> usize {
        match self.dispatch_threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("invalid assignment: {0}")]
    Invalid(String),
    #[error(transparent)]
    Log(#[from] LogError),
}

/// Why a replay ended early.
#[derive(Debug, Clone)]
enum Stop {
    Cancelled,
    Failed(String),
}

pub struct Replay {
    pub id: String,
    worker_id: String,
    pub assignment: AssignRequest,
    target: Target,
    pub stats: Arc<Stats>,
    /// The lanes, dealt to dispatch threads, until `start` takes them.
    prepared: Mutex<Option<Vec<Vec<LaneStream>>>>,
    paused: watch::Sender<bool>,
    cancel: CancellationToken,
    stop: Mutex<Option<Stop>>,
    reports: watch::Sender<WorkerStats>,
    seq: std::sync::atomic::AtomicU64,
    pub planned_records: u64,
    source_ip: Option<std::net::IpAddr>,
}

/// A part of one share read by one stream: the whole share, or one stride of it.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Lane {
    share: usize,
    range: RangeSpec,
}

/// An opened lane: its index (for checkpoints), where it ends, and its records.
struct LaneStream {
    lane: usize,
    end: i64,
    records: LocatedStream,
}

/// Cuts `shares` into at least `threads` lanes where it can: a share of stride `s` and
/// phase `p` becomes `k` lanes of stride `s * k` and phases `p, p + s, ..`.
fn plan_lanes(shares: &[PartitionShare], threads: usize) -> Vec<Lane> {
    let split = threads.div_ceil(shares.len().max(1)).max(1) as u32;
    let mut lanes = Vec::new();
    for (share, s) in shares.iter().enumerate() {
        let (stride, phase) = (s.stride.max(1), s.phase);
        let range = RangeSpec { partition: s.partition, start: s.start_offset, end: s.end_offset, stride, phase };
        let k = if range.len() < u64::from(split) { 1 } else { split };
        match stride.checked_mul(k) {
            Some(wide) if k > 1 => lanes.extend(
                (0..k).map(|j| Lane { share, range: RangeSpec { stride: wide, phase: phase + j * stride, ..range } }),
            ),
            _ => lanes.push(Lane { share, range }),
        }
    }
    lanes
}

/// Deals lanes to at most `threads` groups, largest first to the least loaded, so
/// every thread carries about the same number of records.
fn deal_lanes<T>(lanes: Vec<(u64, T)>, threads: usize) -> Vec<Vec<T>> {
    let mut lanes = lanes;
    lanes.sort_by_key(|(len, _)| std::cmp::Reverse(*len));
    let mut groups: Vec<(u64, Vec<T>)> = (0..threads.clamp(1, lanes.len().max(1))).map(|_| (0, Vec::new())).collect();
    for (len, lane) in lanes {
        let lightest = groups.iter_mut().min_by_key(|(load, _)| *load).expect("at least one group");
        lightest.0 += len;
        lightest.1.push(lane);
    }
    groups.into_iter().map(|(_, group)| group).filter(|group| !group.is_empty()).collect()
}

impl Replay {
    /// Validates an assignment and opens its shares (reading starts; sending waits for
    /// [`Replay::start`]).
    pub async fn prepare(
        worker_id: &str,
        assignment: AssignRequest,
        host: HostSettings,
    ) -> Result<Arc<Self>, ReplayError> {
        let options = assignment.options.clone().ok_or_else(|| ReplayError::Invalid("no options".into()))?;
        let target = Target::parse(&options.target).map_err(ReplayError::Invalid)?;
        if options.multiple == 0 {
            return Err(ReplayError::Invalid("multiple must be at least 1".into()));
        }
        if options.pacing() == PacingMode::Original && (options.speed.is_nan() || options.speed <= 0.0) {
            return Err(ReplayError::Invalid(format!("speed must be positive, got {}", options.speed)));
        }
        if options.pacing() == PacingMode::Constant && options.rate_per_sec <= 0.0 {
            return Err(ReplayError::Invalid("constant pacing needs a rate".into()));
        }
        let log = reprise_store::open_log(&assignment.log_url).await?;
        let lanes = plan_lanes(&assignment.shares, host.threads());
        let lane_shares: Vec<usize> = lanes.iter().map(|l| l.share).collect();
        let threads = host.threads().min(lanes.len()).max(1);
        let stats = Arc::new(Stats::new(&assignment.shares, &lane_shares, threads));
        let mut opened = Vec::new();
        let mut planned_records = 0;
        for (index, lane) in lanes.iter().enumerate() {
            planned_records += lane.range.len();
            let raw = log.read_range(lane.range, READ_AHEAD).await?;
            let records: LocatedStream = Box::pin(decode_stream(raw, stats.records_undecodable.clone()));
            opened.push((lane.range.len(), LaneStream { lane: index, end: lane.range.end, records }));
        }
        let groups = deal_lanes(opened, threads);
        let (reports, _) = watch::channel(WorkerStats::default());
        let replay = Arc::new(Replay {
            id: assignment.replay_id.clone(),
            worker_id: worker_id.to_string(),
            assignment,
            target,
            stats,
            prepared: Mutex::new(Some(groups)),
            paused: watch::channel(false).0,
            cancel: CancellationToken::new(),
            stop: Mutex::new(None),
            reports,
            seq: Default::default(),
            planned_records,
            source_ip: host.source_ip,
        });
        replay.publish(WorkerReplayState::Prepared);
        Ok(replay)
    }

    fn options(&self) -> &reprise_proto::v1::ReplayOptions {
        self.assignment.options.as_ref().expect("validated in prepare")
    }

    /// Starts sending at `start_at_unix_ns`. Idempotent: a second call changes nothing.
    pub fn start(self: &Arc<Self>, start_at_unix_ns: i64) {
        let Some(groups) = self.prepared.lock().expect("lock").take() else { return };
        let wait = start_at_unix_ns - reprise_store::now_ns();
        let start = if wait >= 0 {
            Instant::now() + Duration::from_nanos(wait as u64)
        } else {
            Instant::now().checked_sub(Duration::from_nanos(wait.unsigned_abs())).unwrap_or_else(Instant::now)
        };
        let options = self.options();
        let shared = Arc::new(SharedPacing {
            limiter: rate_limiter(options.rate_per_sec, options.pacing()),
            constant_sends: AtomicU64::new(0),
        });
        // The in-flight bound is split between the threads (each at least 1).
        let max_in_flight = (options.max_in_flight.max(1) as usize).div_ceil(groups.len().max(1));
        let mut finished = Vec::new();
        for (shard, lanes) in groups.into_iter().enumerate() {
            let (done_tx, done_rx) = tokio::sync::oneshot::channel();
            let (this, shared) = (self.clone(), shared.clone());
            let thread = std::thread::Builder::new().name(format!("dispatch-{shard}")).spawn(move || {
                let outcome = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| format!("cannot start a dispatch runtime: {e}"))
                    .and_then(|runtime| {
                        let dispatcher = Dispatcher { replay: this.clone(), shard, max_in_flight, shared };
                        runtime.block_on(dispatcher.run(lanes, start))
                    });
                let _ = done_tx.send(outcome);
            });
            if let Err(e) = thread {
                self.cancel(Some(format!("cannot start a dispatch thread: {e}")));
                break;
            }
            finished.push(done_rx);
        }
        let this = self.clone();
        tokio::spawn(async move {
            let reporter = this.clone().spawn_reporter();
            let mut failure = None;
            for outcome in futures::future::join_all(finished).await {
                let error = match outcome {
                    Ok(Ok(())) => continue,
                    Ok(Err(e)) => e,
                    Err(_) => "a dispatch thread panicked".to_string(),
                };
                // One failed thread stops the others.
                this.cancel(Some(error.clone()));
                failure.get_or_insert(error);
            }
            reporter.abort();
            let (state, error) = match this.stop.lock().expect("lock").clone() {
                Some(Stop::Cancelled) => (WorkerReplayState::Cancelled, String::new()),
                Some(Stop::Failed(e)) => (WorkerReplayState::Failed, e),
                None => (WorkerReplayState::Done, String::new()),
            };
            let error = failure.unwrap_or(error);
            if !error.is_empty() {
                tracing::warn!(replay = %this.id, %error, "replay failed");
            }
            this.publish_with(state, &error);
            tracing::info!(replay = %this.id, sent = this.stats.sent.load(Ordering::Relaxed), ?state, "replay finished");
        });
    }

    fn spawn_reporter(self: Arc<Self>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(REPORT_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let state = if *self.paused.borrow() { WorkerReplayState::Paused } else { WorkerReplayState::Running };
                self.publish(state);
            }
        })
    }

    fn publish(&self, state: WorkerReplayState) {
        self.publish_with(state, "");
    }

    fn publish_with(&self, state: WorkerReplayState, error: &str) {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        self.reports.send_replace(self.stats.report(&self.worker_id, &self.id, seq, state, error));
    }

    /// The latest report, then every new one.
    pub fn subscribe(&self) -> watch::Receiver<WorkerStats> {
        self.reports.subscribe()
    }

    pub fn state(&self) -> WorkerReplayState {
        self.reports.borrow().state()
    }

    pub fn pause(&self, paused: bool) {
        self.paused.send_replace(paused);
    }

    /// Stops sending: by request (`None`) or because of a failure.
    pub fn cancel(&self, failure: Option<String>) {
        let mut stop = self.stop.lock().expect("lock");
        if stop.is_none() {
            *stop = Some(failure.map_or(Stop::Cancelled, Stop::Failed));
        }
        drop(stop);
        self.cancel.cancel();
        // A replay cancelled before it started has no run task to report its end.
        if self.prepared.lock().expect("lock").take().is_some() {
            let state = match self.stop.lock().expect("lock").clone() {
                Some(Stop::Failed(e)) => return self.publish_with(WorkerReplayState::Failed, &e),
                _ => WorkerReplayState::Cancelled,
            };
            self.publish(state);
        }
    }

    pub fn is_final(&self) -> bool {
        self.state().is_final()
    }

    fn sender_config(&self, max_in_flight: usize) -> SenderConfig {
        let options = self.options();
        SenderConfig {
            timeout: Duration::from_millis(options.request_timeout_ms.max(1)),
            http2: options.http2,
            max_idle_per_host: max_in_flight,
            source_ip: self.source_ip,
            insecure_tls: options.insecure_tls,
        }
    }

    fn parse(&self, raw: &[u8]) -> Option<(RecordedRequest, http::Uri)> {
        let parsed = request::parse(raw).map_err(|e| e.to_string());
        let with_uri = parsed.and_then(|r| self.target.uri_for(&r).map(|uri| (r, uri)).map_err(|e| e.to_string()));
        match with_uri {
            Ok(ok) => Some(ok),
            Err(error) => {
                self.stats.records_unreplayable.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(replay = %self.id, %error, "skipping a record that is not a replayable request");
                None
            }
        }
    }

    /// Waits until `offset` past the (pause-shifted) start; `None` offset means now.
    /// Returns the due instant, or `None` if the replay was stopped meanwhile.
    async fn wait_until_due(
        &self,
        timer: &mut PreciseTimer,
        clock: &mut Clock,
        offset: Option<Duration>,
        paused: &mut watch::Receiver<bool>,
    ) -> Option<Instant> {
        loop {
            if *paused.borrow_and_update() {
                let since = Instant::now();
                tokio::select! {
                    _ = paused.wait_for(|p| !*p) => {}
                    _ = self.cancel.cancelled() => return None,
                }
                clock.paused_for += since.elapsed();
                continue;
            }
            let now = Instant::now();
            let due = offset.map_or(now, |o| clock.start + clock.paused_for + o);
            if due <= now + EARLY_SLACK {
                return (!self.cancel.is_cancelled()).then_some(due);
            }
            tokio::select! {
                slept = timer.sleep_until(due) => {
                    if let Err(e) = slept {
                        // Fall back to the coarse timer rather than stop the replay.
                        tracing::warn!(error = %e, "precise timer failed");
                        tokio::time::sleep_until(due).await;
                    }
                    return Some(due);
                }
                _ = paused.changed() => {}
                _ = self.cancel.cancelled() => return None,
            }
        }
    }
}

struct Clock {
    start: Instant,
    paused_for: Duration,
}

/// Pacing state shared by a replay's dispatch threads.
struct SharedPacing {
    /// The worker's share of the cluster rate cap.
    limiter: Option<DefaultDirectRateLimiter>,
    /// Constant pacing: sends numbered across threads, the n-th due at n / rate.
    constant_sends: AtomicU64,
}

/// One dispatch thread of a replay.
struct Dispatcher {
    replay: Arc<Replay>,
    /// This thread's index: its stats shard.
    shard: usize,
    max_in_flight: usize,
    shared: Arc<SharedPacing>,
}

impl Dispatcher {
    /// Starts a sender on this thread's runtime and dispatches the lanes.
    async fn run(self, lanes: Vec<LaneStream>, start: Instant) -> Result<(), String> {
        let config = self.replay.sender_config(self.max_in_flight);
        if self.replay.options().dry_run {
            self.dispatch(DryRunSender, lanes, start).await
        } else {
            self.dispatch(HttpSender::new(&config), lanes, start).await
        }
    }

    /// Reads the lanes in timestamp order, waits for each record's due time, and hands
    /// `multiple` copies to the sender under the rate and in-flight limits.
    async fn dispatch<S: Sender>(&self, sender: S, lanes: Vec<LaneStream>, start: Instant) -> Result<(), String> {
        let replay = &self.replay;
        let options = replay.options().clone();
        let multiple = options.multiple.max(1);
        let in_flight = Arc::new(Semaphore::new(self.max_in_flight));
        let mut merged = Merge::new(lanes, replay.stats.clone());
        let mut paused = replay.paused.subscribe();
        let mut clock = Clock { start, paused_for: Duration::ZERO };
        let mut timer = PreciseTimer::new().map_err(|e| format!("cannot create a timer: {e}"))?;
        let origin = replay.assignment.origin_ns;

        'records: loop {
            let next = tokio::select! {
                next = merged.next() => next,
                _ = replay.cancel.cancelled() => break,
            };
            let Some(next) = next else { break };
            let (lane, located) = next.map_err(|e| e.to_string())?;
            replay.stats.records_decoded.fetch_add(1, Ordering::Relaxed);
            if located.record.kind() != MessageKind::Request {
                replay.stats.checkpoint(lane, located.offset + 1);
                continue;
            }
            let Some((recorded, uri)) = replay.parse(&located.record.http) else {
                replay.stats.checkpoint(lane, located.offset + 1);
                continue;
            };
            replay.stats.planned_sends.fetch_add(u64::from(multiple), Ordering::Relaxed);
            for _ in 0..multiple {
                let offset = match options.pacing() {
                    PacingMode::Max => None,
                    PacingMode::Constant => {
                        let n = self.shared.constant_sends.fetch_add(1, Ordering::Relaxed);
                        Some(Duration::from_secs_f64(n as f64 / options.rate_per_sec))
                    }
                    _ => {
                        let since_origin = (located.record.timestamp_ns - origin).max(0) as f64;
                        Some(Duration::from_nanos((since_origin / options.speed) as u64))
                    }
                };
                let Some(due) = replay.wait_until_due(&mut timer, &mut clock, offset, &mut paused).await else {
                    break 'records;
                };
                if let Some(limiter) = &self.shared.limiter {
                    tokio::select! {
                        _ = limiter.until_ready() => {}
                        _ = replay.cancel.cancelled() => break 'records,
                    }
                }
                let permit = tokio::select! {
                    permit = in_flight.clone().acquire_owned() => permit.expect("semaphore never closed"),
                    _ = replay.cancel.cancelled() => break 'records,
                };
                let request = build_request(&recorded, uri.clone(), options.keep_host);
                let dispatched = Instant::now();
                let lag = dispatched.saturating_duration_since(due);
                replay.stats.record_dispatch(self.shard, lag.as_micros() as u64, recorded.body.len() as u64);
                replay.stats.in_flight.fetch_add(1, Ordering::Relaxed);
                let (stats, sender, shard) = (replay.stats.clone(), sender.clone(), self.shard);
                // Spawned on this thread's own runtime: completing it wakes no other thread.
                tokio::spawn(async move {
                    let outcome = sender.send(request).await;
                    // Measured from when the request was due, not when it left: a late
                    // send counts as latency (no coordinated omission).
                    stats.record_outcome(shard, outcome, due.elapsed().as_micros() as u64);
                    stats.in_flight.fetch_sub(1, Ordering::Relaxed);
                    drop(permit);
                });
            }
            replay.stats.checkpoint(lane, located.offset + 1);
        }
        // Let what is in flight finish (each send is bounded by the request timeout).
        let _ = in_flight.acquire_many(self.max_in_flight as u32).await;
        Ok(())
    }
}

fn build_request(recorded: &RecordedRequest, uri: http::Uri, keep_host: bool) -> Request<Full<Bytes>> {
    let mut request = Request::new(Full::new(recorded.body.clone()));
    *request.method_mut() = recorded.method.clone();
    *request.uri_mut() = uri;
    *request.headers_mut() = recorded.headers.clone();
    if keep_host && let Some(host) = &recorded.host {
        request.headers_mut().insert(http::header::HOST, host.clone());
    }
    request
}

/// The rate cap for original-pace and max modes (delays, never drops). Constant pacing
/// spaces sends itself.
fn rate_limiter(rate_per_sec: f64, pacing: PacingMode) -> Option<DefaultDirectRateLimiter> {
    if rate_per_sec <= 0.0 || pacing == PacingMode::Constant {
        return None;
    }
    let period = Duration::from_secs_f64(1.0 / rate_per_sec);
    // A burst of about 10 ms worth of requests keeps the limiter from forcing a sleep
    // per request at high rates.
    let burst = NonZeroU32::new((rate_per_sec / 100.0).clamp(1.0, 10_000.0) as u32).expect("at least 1");
    Some(RateLimiter::direct(Quota::with_period(period)?.allow_burst(burst)))
}

/// Merges lane streams into one, by record timestamp. A lane that ends is checkpointed
/// at its end: every record it selects has been read.
struct Merge {
    lanes: Vec<LaneStream>,
    heads: Vec<Option<Located>>,
    live: Vec<bool>,
    stats: Arc<Stats>,
}

impl Merge {
    fn new(lanes: Vec<LaneStream>, stats: Arc<Stats>) -> Self {
        let n = lanes.len();
        Merge { lanes, heads: (0..n).map(|_| None).collect(), live: vec![true; n], stats }
    }

    /// The earliest record across lanes, with its lane's index.
    async fn next(&mut self) -> Option<Result<(usize, Located), LogError>> {
        for i in 0..self.lanes.len() {
            if self.live[i] && self.heads[i].is_none() {
                match self.lanes[i].records.next().await {
                    Some(Ok(located)) => self.heads[i] = Some(located),
                    Some(Err(e)) => return Some(Err(e)),
                    None => {
                        self.live[i] = false;
                        self.stats.checkpoint(self.lanes[i].lane, self.lanes[i].end);
                    }
                }
            }
        }
        let earliest =
            (0..self.heads.len()).filter_map(|i| self.heads[i].as_ref().map(|h| (h.record.timestamp_ns, i))).min()?.1;
        Some(Ok((self.lanes[earliest].lane, self.heads[earliest].take().expect("head present"))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn share(partition: i32, start: i64, end: i64) -> PartitionShare {
        PartitionShare { partition, start_offset: start, end_offset: end, stride: 1, phase: 0 }
    }

    #[test]
    fn fewer_shares_than_threads_are_split_by_stride_into_disjoint_lanes() {
        let shares = [PartitionShare { partition: 0, start_offset: 3, end_offset: 103, stride: 2, phase: 1 }];
        let lanes = plan_lanes(&shares, 3);
        assert_eq!(lanes.len(), 3);
        // Every offset the share selects is read by exactly one lane.
        for offset in 0..110 {
            let readers = lanes.iter().filter(|l| l.range.selects(offset)).count();
            let selected = (3..103).contains(&offset) && offset % 2 == 1;
            assert_eq!(readers, usize::from(selected), "offset {offset}");
        }
        let total: u64 = lanes.iter().map(|l| l.range.len()).sum();
        assert_eq!(total, 50);
    }

    #[test]
    fn enough_shares_are_not_split_and_tiny_shares_never() {
        assert_eq!(plan_lanes(&[share(0, 0, 10), share(1, 0, 10)], 2).len(), 2);
        assert_eq!(plan_lanes(&[share(0, 0, 1)], 4).len(), 1);
        assert_eq!(plan_lanes(&[], 4).len(), 0);
    }

    #[test]
    fn lanes_are_dealt_evenly_by_records() {
        let groups = deal_lanes(vec![(10, 'a'), (70, 'b'), (30, 'c'), (40, 'd')], 2);
        assert_eq!(groups, vec![vec!['b', 'a'], vec!['d', 'c']]);
        assert_eq!(deal_lanes(vec![(5, 'a')], 4), vec![vec!['a']]);
        assert!(deal_lanes(Vec::<(u64, char)>::new(), 2).is_empty());
    }
}
