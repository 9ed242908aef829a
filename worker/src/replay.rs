//! One replay on one worker: read the assigned shares, merge them by timestamp, send
//! every record when it is due on the shared timeline, and report.
//!
//! Pacing is absolute: a record stamped `ts` is due at `start_at + (ts - origin) / speed`
//! (plus the time spent paused), computed from the controller's `start_at` alone, so
//! every worker replays the same timeline with no coordination per request. The
//! dispatcher sleeps only when the next record is not yet due; everything due by then
//! goes out together. Memory is bounded by the read-ahead and the in-flight limit.

use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use http::Request;
use http_body_util::Full;
use reprise_proto::v1::{AssignRequest, MessageKind, PacingMode, WorkerReplayState, WorkerStats};
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
    prepared: Mutex<Option<Vec<LocatedStream>>>,
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
        source_ip: Option<std::net::IpAddr>,
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
        let stats = Arc::new(Stats::new(&assignment.shares));
        let mut streams: Vec<LocatedStream> = Vec::new();
        let mut planned_records = 0;
        for share in &assignment.shares {
            let range = RangeSpec {
                partition: share.partition,
                start: share.start_offset,
                end: share.end_offset,
                stride: share.stride.max(1),
                phase: share.phase,
            };
            planned_records += range.len();
            let raw = log.read_range(range, READ_AHEAD).await?;
            streams.push(Box::pin(decode_stream(raw, stats.records_undecodable.clone())));
        }
        let (reports, _) = watch::channel(WorkerStats::default());
        let replay = Arc::new(Replay {
            id: assignment.replay_id.clone(),
            worker_id: worker_id.to_string(),
            assignment,
            target,
            stats,
            prepared: Mutex::new(Some(streams)),
            paused: watch::channel(false).0,
            cancel: CancellationToken::new(),
            stop: Mutex::new(None),
            reports,
            seq: Default::default(),
            planned_records,
            source_ip,
        });
        replay.publish(WorkerReplayState::Prepared);
        Ok(replay)
    }

    fn options(&self) -> &reprise_proto::v1::ReplayOptions {
        self.assignment.options.as_ref().expect("validated in prepare")
    }

    /// Starts sending at `start_at_unix_ns`. Idempotent: a second call changes nothing.
    pub fn start(self: &Arc<Self>, start_at_unix_ns: i64) {
        let Some(streams) = self.prepared.lock().expect("lock").take() else { return };
        let wait = start_at_unix_ns - reprise_store::now_ns();
        let start = if wait >= 0 {
            Instant::now() + Duration::from_nanos(wait as u64)
        } else {
            Instant::now().checked_sub(Duration::from_nanos(wait.unsigned_abs())).unwrap_or_else(Instant::now)
        };
        let options = self.options();
        let sender_config = SenderConfig {
            timeout: Duration::from_millis(options.request_timeout_ms.max(1)),
            http2: options.http2,
            max_idle_per_host: options.max_in_flight.max(1) as usize,
            source_ip: self.source_ip,
        };
        let this = self.clone();
        let dry_run = options.dry_run;
        tokio::spawn(async move {
            let reporter = this.clone().spawn_reporter();
            let outcome = if dry_run {
                this.clone().run(DryRunSender, streams, start).await
            } else {
                this.clone().run(HttpSender::new(&sender_config), streams, start).await
            };
            reporter.abort();
            let (state, error) = match outcome {
                Ok(()) => match this.stop.lock().expect("lock").clone() {
                    Some(Stop::Cancelled) => (WorkerReplayState::Cancelled, String::new()),
                    Some(Stop::Failed(e)) => (WorkerReplayState::Failed, e),
                    None => (WorkerReplayState::Done, String::new()),
                },
                Err(e) => (WorkerReplayState::Failed, e),
            };
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
        matches!(self.state(), WorkerReplayState::Done | WorkerReplayState::Cancelled | WorkerReplayState::Failed)
    }

    /// The dispatcher: reads in timestamp order, waits for each record's due time, and
    /// hands `multiple` copies to the sender under the rate and in-flight limits.
    async fn run<S: Sender>(
        self: Arc<Self>,
        sender: S,
        streams: Vec<LocatedStream>,
        start: Instant,
    ) -> Result<(), String> {
        let options = self.options().clone();
        let multiple = options.multiple.max(1);
        let limiter = rate_limiter(options.rate_per_sec, options.pacing());
        let max_in_flight = options.max_in_flight.max(1) as usize;
        let in_flight = Arc::new(Semaphore::new(max_in_flight));
        let mut merged = Merge::new(streams);
        let mut paused = self.paused.subscribe();
        let mut clock = Clock { start, paused_for: Duration::ZERO };
        let mut timer = PreciseTimer::new().map_err(|e| format!("cannot create a timer: {e}"))?;
        let mut constant_sends = 0u64;
        let origin = self.assignment.origin_ns;

        'records: loop {
            let next = tokio::select! {
                next = merged.next() => next,
                _ = self.cancel.cancelled() => break,
            };
            let Some(next) = next else { break };
            let (share, located) = next.map_err(|e| e.to_string())?;
            self.stats.records_decoded.fetch_add(1, Ordering::Relaxed);
            if located.record.kind() != MessageKind::Request {
                self.stats.checkpoint(share, located.offset + 1);
                continue;
            }
            let Some((recorded, uri)) = self.parse(&located.record.http) else {
                self.stats.checkpoint(share, located.offset + 1);
                continue;
            };
            self.stats.planned_sends.fetch_add(u64::from(multiple), Ordering::Relaxed);
            for _ in 0..multiple {
                let offset = match options.pacing() {
                    PacingMode::Max => None,
                    PacingMode::Constant => {
                        constant_sends += 1;
                        Some(Duration::from_secs_f64((constant_sends - 1) as f64 / options.rate_per_sec))
                    }
                    _ => {
                        let since_origin = (located.record.timestamp_ns - origin).max(0) as f64;
                        Some(Duration::from_nanos((since_origin / options.speed) as u64))
                    }
                };
                let Some(due) = self.wait_until_due(&mut timer, &mut clock, offset, &mut paused).await else {
                    break 'records;
                };
                if let Some(limiter) = &limiter {
                    tokio::select! {
                        _ = limiter.until_ready() => {}
                        _ = self.cancel.cancelled() => break 'records,
                    }
                }
                let permit = tokio::select! {
                    permit = in_flight.clone().acquire_owned() => permit.expect("semaphore never closed"),
                    _ = self.cancel.cancelled() => break 'records,
                };
                let request = build_request(&recorded, uri.clone(), options.keep_host);
                let dispatched = Instant::now();
                let lag = dispatched.saturating_duration_since(due);
                self.stats.record_dispatch(lag.as_micros() as u64, recorded.body.len() as u64);
                self.stats.in_flight.fetch_add(1, Ordering::Relaxed);
                let (stats, sender) = (self.stats.clone(), sender.clone());
                tokio::spawn(async move {
                    let outcome = sender.send(request).await;
                    // Measured from when the request was due, not when it left: a late
                    // send counts as latency (no coordinated omission).
                    stats.record_outcome(outcome, due.elapsed().as_micros() as u64);
                    stats.in_flight.fetch_sub(1, Ordering::Relaxed);
                    drop(permit);
                });
            }
            self.stats.checkpoint(share, located.offset + 1);
        }
        // Let what is in flight finish (each send is bounded by the request timeout).
        let _ = in_flight.acquire_many(max_in_flight as u32).await;
        Ok(())
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

/// Merges per-share streams into one, by record timestamp.
struct Merge {
    streams: Vec<LocatedStream>,
    heads: Vec<Option<Located>>,
    live: Vec<bool>,
}

impl Merge {
    fn new(streams: Vec<LocatedStream>) -> Self {
        let n = streams.len();
        Merge { streams, heads: (0..n).map(|_| None).collect(), live: vec![true; n] }
    }

    /// The earliest record across shares, with the index of its share.
    async fn next(&mut self) -> Option<Result<(usize, Located), LogError>> {
        for i in 0..self.streams.len() {
            if self.live[i] && self.heads[i].is_none() {
                match self.streams[i].next().await {
                    Some(Ok(located)) => self.heads[i] = Some(located),
                    Some(Err(e)) => return Some(Err(e)),
                    None => self.live[i] = false,
                }
            }
        }
        let earliest =
            (0..self.heads.len()).filter_map(|i| self.heads[i].as_ref().map(|h| (h.record.timestamp_ns, i))).min()?.1;
        Some(Ok((earliest, self.heads[earliest].take().expect("head present"))))
    }
}
