//! One replay on one worker: read the assigned shares, merge them by timestamp, send
//! every record when it is due on the shared timeline, and report.
//!
//! Pacing is absolute: a record stamped `ts` is due at `start_at + (ts - origin) / speed`
//! (plus the time spent paused), computed from the controller's `start_at` alone, so
//! every worker replays the same timeline with no coordination per request. A looping
//! replay reads its lanes again for every pass, pass `n` shifted by `n` pass periods. The
//! dispatcher sleeps only when the next record is not yet due; everything due by then
//! goes out together. Memory is bounded by the read-ahead and the in-flight limit.
//!
//! Dispatch is thread-per-core: the shares are cut into lanes (a share is split by
//! stride when there are fewer shares than threads), the lanes are dealt to dispatch
//! threads, and each thread runs its lanes on its own single-threaded runtime with its
//! own connection pool, in-flight bound and stats shard. A send is spawned and completed
//! on the thread that dispatched it, so the hot path never wakes another thread.
//!
//! This module is the replay's life (prepare, start, pause, cancel, reports);
//! `lanes` is the reading side, `dispatch` the sending side.

mod compare;
mod dispatch;
mod lanes;
mod sessions;
mod shadow;
mod sides;

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reprise_proto::v1::{AssignRequest, PacingMode, WorkerReplayState, WorkerStats};
use reprise_rules::replay::ReplayRules;
use reprise_store::log::{LogError, TrafficLog};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use self::compare::Compare;
use self::dispatch::{Dispatcher, SharedPacing, rate_limiter};
use self::lanes::{Lane, LaneStream, deal_lanes, open_lane, plan_lanes};
use self::shadow::Shadow;
use crate::request::Target;
use crate::stats::{ReportId, Stats};

/// A full report (with histograms) this often.
const REPORT_EVERY: Duration = Duration::from_secs(1);
/// Light reports no closer than this: at high rates one per half `max_in_flight` sends
/// would be thousands a second for the controller to take in.
const LIGHT_REPORT_SPACING: Duration = Duration::from_millis(20);

/// When a controller last named a replay, shared by the replay's parts: a replay that no
/// controller has named for the grace period stops sending.
pub struct Liveness {
    last_heard_ms: AtomicI64,
    grace_ms: i64,
}

impl Liveness {
    pub fn new(grace: Duration) -> Arc<Liveness> {
        let grace_ms = grace.as_millis() as i64;
        Arc::new(Liveness { last_heard_ms: AtomicI64::new(reprise_store::now_ms()), grace_ms })
    }

    /// A controller named the replay in a call it sent at `sent_at_ms`. The grace counts
    /// from the sending, never from a late arrival; a call that does not say when it was
    /// sent (0: not a controller's, e.g. someone reading the stats) keeps nothing alive.
    pub fn heard(&self, sent_at_ms: i64) {
        if sent_at_ms > 0 {
            self.last_heard_ms.fetch_max(sent_at_ms.min(reprise_store::now_ms()), Ordering::Relaxed);
        }
    }

    /// How long no controller has named the replay, if longer than the grace.
    pub fn expired(&self, now_ms: i64) -> Option<Duration> {
        let silent = now_ms - self.last_heard_ms.load(Ordering::Relaxed);
        (silent > self.grace_ms).then(|| Duration::from_millis(silent as u64))
    }
}

/// The failure of a replay that no controller named for its grace period.
fn unheard(silent: Duration) -> String {
    format!("no controller heard for {} s; stopped sending", silent.as_secs())
}

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
    /// The worker is shutting down: it gives the rest of its part back.
    Released,
    Failed(String),
}

/// One part of one replay on this worker (see `AssignRequest.part`).
pub struct Replay {
    pub id: String,
    pub part: u32,
    worker_id: String,
    liveness: Arc<Liveness>,
    pub assignment: AssignRequest,
    target: Target,
    rules: ReplayRules,
    /// An A/B replay's candidate (and baseline) and its diff rules.
    shadow: Option<Arc<Shadow>>,
    /// `--compare`: the diff rules (and baseline) against the recorded responses.
    compare: Option<Arc<Compare>>,
    pub stats: Arc<Stats>,
    log: Arc<dyn TrafficLog>,
    lanes: Vec<Lane>,
    /// Passes to replay; `None`: endless.
    passes: Option<u32>,
    /// The worker's shared runtime: later passes are opened there, off the dispatch
    /// threads (opening a Kafka reader blocks for milliseconds).
    readers: tokio::runtime::Handle,
    /// The lanes opened for their first pass, dealt to dispatch threads, until `start`
    /// takes them.
    prepared: Mutex<Option<Vec<Vec<LaneStream>>>>,
    paused: watch::Sender<bool>,
    cancel: CancellationToken,
    stop: Mutex<Option<Stop>>,
    reports: watch::Sender<WorkerStats>,
    seq: std::sync::atomic::AtomicU64,
    pub planned_records: u64,
    source_ip: Option<std::net::IpAddr>,
}

impl Replay {
    /// Validates an assignment and opens its shares (reading starts; sending waits for
    /// [`Replay::start`]).
    pub async fn prepare(
        worker_id: &str,
        assignment: AssignRequest,
        host: HostSettings,
        liveness: Arc<Liveness>,
    ) -> Result<Arc<Self>, ReplayError> {
        let options = assignment.options.clone().ok_or_else(|| ReplayError::Invalid("no options".into()))?;
        let target = Target::parse(&options.target).map_err(ReplayError::Invalid)?;
        let rules = ReplayRules::compile(&options.rules.clone().unwrap_or_default(), &assignment.replay_id)
            .map_err(|e| ReplayError::Invalid(e.to_string()))?;
        let shadow = Shadow::compile(options.diff.as_ref()).map_err(ReplayError::Invalid)?;
        let compare = Compare::compile(options.diff.as_ref()).map_err(ReplayError::Invalid)?;
        if options.multiple == 0 {
            return Err(ReplayError::Invalid("multiple must be at least 1".into()));
        }
        if options.pacing() == PacingMode::Original && (options.speed.is_nan() || options.speed <= 0.0) {
            return Err(ReplayError::Invalid(format!("speed must be positive, got {}", options.speed)));
        }
        if options.pacing() == PacingMode::Constant && options.rate_per_sec <= 0.0 {
            return Err(ReplayError::Invalid("constant pacing needs a rate".into()));
        }
        let passes = (!options.endless).then_some(options.passes.max(1));
        let log = reprise_store::open_log(&assignment.log_url).await?;
        // Sessions and comparisons keep shares whole: a connection's records (a request and
        // its recorded response) stay in one lane.
        let whole = options.sessions || compare.is_some();
        let lanes = plan_lanes(&assignment.shares, if whole { 1 } else { host.threads() });
        let lane_shares: Vec<usize> = lanes.iter().map(|l| l.share).collect();
        let threads = host.threads().min(lanes.len()).max(1);
        // A light report (counters and checkpoints) every half `max_in_flight` sends (at
        // most every LIGHT_REPORT_SPACING): what a takeover may send twice past the last
        // report the controller holds stays near the sends between two reports.
        let light_every = u64::from(options.max_in_flight.max(2) / 2);
        let stats =
            Arc::new(Stats::new(&assignment.shares, &lane_shares, threads).with_light_reports_every(light_every));
        let mut opened = Vec::new();
        for (index, lane) in lanes.iter().enumerate() {
            let stream = open_lane(&*log, index, lane, lane.first_pass, &stats).await?;
            opened.push((lane.range.len(), stream.expect("a lane reads its first pass")));
        }
        let planned_records = lanes::planned_records(&lanes, passes);
        let groups = deal_lanes(opened, threads);
        let (reports, _) = watch::channel(WorkerStats::default());
        let replay = Arc::new(Replay {
            id: assignment.replay_id.clone(),
            part: assignment.part,
            worker_id: worker_id.to_string(),
            liveness,
            assignment,
            target,
            rules,
            shadow,
            compare,
            stats,
            log,
            lanes,
            passes,
            readers: tokio::runtime::Handle::current(),
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
            // Stopped for good before the final report, so that none comes after it.
            reporter.abort();
            let _ = reporter.await;
            let (state, error) = this.final_state();
            let error = failure.unwrap_or(error);
            if !error.is_empty() {
                tracing::warn!(replay = %this.id, %error, "replay failed");
            }
            this.publish_with(state, &error, false);
            tracing::info!(replay = %this.id, sent = this.stats.sent.load(Ordering::Relaxed), ?state, "replay finished");
        });
    }

    fn spawn_reporter(self: Arc<Self>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut full_tick = tokio::time::interval(REPORT_EVERY);
            full_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last = tokio::time::Instant::now();
            loop {
                let light = tokio::select! {
                    _ = full_tick.tick() => false,
                    _ = self.stats.report_due.notified() => true,
                };
                if light {
                    tokio::time::sleep_until(last + LIGHT_REPORT_SPACING).await;
                }
                let state = if *self.paused.borrow() { WorkerReplayState::Paused } else { WorkerReplayState::Running };
                self.publish_with(state, "", light);
                last = tokio::time::Instant::now();
            }
        })
    }

    fn publish(&self, state: WorkerReplayState) {
        self.publish_with(state, "", false);
    }

    fn publish_with(&self, state: WorkerReplayState, error: &str, light: bool) {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        let id = ReportId { worker_id: &self.worker_id, replay_id: &self.id, part: self.part };
        let report = self.stats.report(&id, seq, state, error, light);
        // A report never replaces a newer one, and nothing replaces the final one: a
        // stream that missed the final report would wait for it for ever.
        self.reports.send_if_modified(|latest| {
            let newer = !latest.state().is_final() && latest.seq < report.seq;
            if newer {
                *latest = report;
            }
            newer
        });
    }

    /// The latest report, then every new one.
    pub fn subscribe(&self) -> watch::Receiver<WorkerStats> {
        self.reports.subscribe()
    }

    pub fn state(&self) -> WorkerReplayState {
        self.reports.borrow().state()
    }

    /// The counters and histograms now (for metrics).
    pub fn snapshot(&self) -> WorkerStats {
        let id = ReportId { worker_id: &self.worker_id, replay_id: &self.id, part: self.part };
        self.stats.snapshot(&id, self.state())
    }

    /// When the part ended (its final report), ms since the epoch; `None` while it runs.
    pub fn ended_at_ms(&self) -> Option<i64> {
        let report = self.reports.borrow();
        report.state().is_final().then_some(report.at_unix_ns / 1_000_000)
    }

    pub fn pause(&self, paused: bool) {
        self.paused.send_replace(paused);
    }

    /// The final state, from why the replay stopped (if it did).
    fn final_state(&self) -> (WorkerReplayState, String) {
        match self.stop.lock().expect("lock").clone() {
            Some(Stop::Cancelled) => (WorkerReplayState::Cancelled, String::new()),
            Some(Stop::Released) => (WorkerReplayState::Released, String::new()),
            Some(Stop::Failed(e)) => (WorkerReplayState::Failed, e),
            None => (WorkerReplayState::Done, String::new()),
        }
    }

    /// Stops sending: by request (`None`) or because of a failure.
    pub fn cancel(&self, failure: Option<String>) {
        self.stop_with(failure.map_or(Stop::Cancelled, Stop::Failed));
    }

    /// Stops sending because the worker shuts down; what is in flight finishes, and the
    /// final report's checkpoints say where others take over.
    pub fn release(&self) {
        self.stop_with(Stop::Released);
    }

    /// Stops sending if no controller named the replay for its grace period.
    pub fn stop_if_unheard(&self, now_ms: i64) -> bool {
        let Some(silent) = self.liveness.expired(now_ms) else { return false };
        let error = unheard(silent);
        tracing::warn!(replay = %self.id, part = self.part, "{error}");
        self.cancel(Some(error));
        true
    }

    fn stop_with(&self, why: Stop) {
        self.stop.lock().expect("lock").get_or_insert(why);
        self.cancel.cancel();
        // A replay stopped before it started has no run task to report its end.
        if self.prepared.lock().expect("lock").take().is_some() {
            let (state, error) = self.final_state();
            self.publish_with(state, &error, false);
        }
    }

    pub fn is_final(&self) -> bool {
        self.state().is_final()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_call_that_says_when_it_was_sent_keeps_a_replay_alive() {
        let liveness = Liveness::new(Duration::from_secs(1));
        let created = reprise_store::now_ms();
        liveness.heard(0);
        assert!(liveness.expired(created + 1_500).is_some(), "a call without a sending time kept it alive");
        liveness.heard(created + 60_000);
        let now = reprise_store::now_ms();
        assert!(liveness.expired(now + 500).is_none(), "heard: alive for its grace");
        assert!(liveness.expired(now + 1_500).is_some(), "counted from now, not from a sending time to come");
    }
}
