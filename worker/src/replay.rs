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
//!
//! This module is the replay's life (prepare, start, pause, cancel, reports);
//! `lanes` is the reading side, `dispatch` the sending side.

mod dispatch;
mod lanes;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reprise_proto::v1::{AssignRequest, PacingMode, WorkerReplayState, WorkerStats};
use reprise_store::log::LogError;
use reprise_store::traffic::decode_stream;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use self::dispatch::{Dispatcher, SharedPacing, rate_limiter};
use self::lanes::{LaneStream, LocatedStream, deal_lanes, plan_lanes};
use crate::request::Target;
use crate::stats::Stats;

/// Records buffered ahead of the dispatcher, per share.
const READ_AHEAD: usize = 2048;
const REPORT_EVERY: Duration = Duration::from_secs(1);

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
}
