//! Running replays: plan a recording over the live workers, assign and start them on a
//! common instant, follow their stats streams, merge them into a cluster timeline, and
//! store the outcome. Every replay is persisted in the catalog at each state change.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::join_all;
use hdrhistogram::Histogram;
use reprise_proto::PROTOCOL_VERSION;
use reprise_proto::v1::worker_client::WorkerClient;
use reprise_proto::v1::{
    AssignRequest, ControlAction, ControlRequest, HeartbeatRequest, PacingMode, PartitionShare, ReplayOptions,
    StartRequest, StatsRequest, WorkerReplayState, WorkerStats,
};
use reprise_store::schema::{Recording, RecordingState, Replay, ReplayState, WorkerInfo};
use reprise_store::{Catalog, CatalogError, now_ms};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use crate::planner::{self, Candidate, WorkerPlan};
use crate::recordings::{RecordingError, Recordings, new_id};
use crate::status::{
    Percentiles, ReplayEvent, ReplayStatus, TimelinePoint, WorkerProgress, empty_histogram, histogram,
};

/// How long a worker may be unreachable before it counts as lost.
const LOST_AFTER: Duration = Duration::from_secs(10);
/// Timeline points kept per replay (an hour at one per second).
const MAX_TIMELINE: usize = 3600;

/// What `ctl replay` asks for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplaySpec {
    pub recording_id: String,
    pub target: String,
    pub multiple: u32,
    pub speed: f64,
    pub pacing: Pacing,
    /// Cluster rate cap (requests/s) for original and max pacing; the rate for constant.
    pub rate_per_sec: f64,
    /// How many workers to use; 0 = all live ones.
    pub workers: u32,
    pub worker_labels: BTreeMap<String, String>,
    pub max_in_flight: u32,
    pub request_timeout_ms: u64,
    pub keep_host: bool,
    pub http2: bool,
    pub dry_run: bool,
    #[serde(default)]
    pub insecure_tls: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pacing {
    Original,
    Max,
    Constant,
}

impl Pacing {
    fn to_proto(self) -> PacingMode {
        match self {
            Pacing::Original => PacingMode::Original,
            Pacing::Max => PacingMode::Max,
            Pacing::Constant => PacingMode::Constant,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("invalid replay: {0}")]
    Invalid(String),
    #[error("no recording {0}")]
    UnknownRecording(String),
    #[error("recording {0} is still recording; stop it first (ctl record stop {0})")]
    StillRecording(String),
    #[error("recording {id} is partly gone from the log: retention deleted {missing} of its records")]
    Expired { id: String, missing: u64 },
    #[error("recording {0} holds no records")]
    EmptyRecording(String),
    #[error("no live workers{0}")]
    NoWorkers(String),
    #[error("no replay {0}")]
    UnknownReplay(String),
    #[error("replay {0} has already ended")]
    Ended(String),
    #[error("worker {worker} ({address}) refused the assignment: {reason}")]
    WorkerRefused { worker: String, address: String, reason: String },
    #[error(transparent)]
    Recording(#[from] RecordingError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
}

/// Stored with the replay so another controller can carry on.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredPlan {
    start_at_unix_ns: i64,
    origin_ns: i64,
    workers: Vec<WorkerPlan>,
}

struct WorkerTally {
    address: String,
    planned_records: u64,
    latest: Option<WorkerStats>,
    lost: Option<String>,
    sent_at_last_tick: u64,
}

impl WorkerTally {
    fn is_final(&self) -> bool {
        self.lost.is_some()
            || self.latest.as_ref().is_some_and(|s| {
                matches!(s.state(), WorkerReplayState::Done | WorkerReplayState::Cancelled | WorkerReplayState::Failed)
            })
    }
}

/// A replay this controller follows.
pub struct LiveReplay {
    replay: Mutex<Replay>,
    spec: ReplaySpec,
    records: u64,
    /// Recorded span at speed 1, for the ETA.
    span_ns: i64,
    tally: Mutex<Tally>,
    events: broadcast::Sender<ReplayEvent>,
    /// A user cancelled: the replay ends as cancelled once every worker has reported its
    /// final counts (until then its state stays what it was, so no one reads a final
    /// status with counts still coming in).
    cancel_requested: AtomicBool,
}

struct Tally {
    workers: BTreeMap<String, WorkerTally>,
    interval_latency: Histogram<u64>,
    interval_lag: Histogram<u64>,
    timeline: Vec<TimelinePoint>,
    last_tick: Option<(Instant, u64)>,
    started: Option<Instant>,
}

pub struct ReplayManager {
    controller_id: String,
    catalog: Catalog,
    recordings: Arc<Recordings>,
    start_lead: Duration,
    live: Mutex<HashMap<String, Arc<LiveReplay>>>,
    clients: Mutex<HashMap<String, WorkerClient<Channel>>>,
    /// Ends every background task of this manager (controller shutdown).
    shutdown: CancellationToken,
}

impl ReplayManager {
    pub fn new(
        controller_id: String,
        catalog: Catalog,
        recordings: Arc<Recordings>,
        start_lead: Duration,
    ) -> Arc<Self> {
        Arc::new(ReplayManager {
            controller_id,
            catalog,
            recordings,
            start_lead,
            live: Mutex::new(HashMap::new()),
            clients: Mutex::new(HashMap::new()),
            shutdown: CancellationToken::new(),
        })
    }

    /// Runs `task` in the background until it ends or the manager shuts down.
    fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = task => {}
                _ = shutdown.cancelled() => {}
            }
        });
    }

    /// Stops following replays and heartbeating workers (which then stop by themselves
    /// after their grace period unless another controller takes over).
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    fn client(&self, address: &str) -> Result<WorkerClient<Channel>, String> {
        let mut clients = self.clients.lock().expect("lock");
        if let Some(client) = clients.get(address) {
            return Ok(client.clone());
        }
        let endpoint = Channel::from_shared(format!("http://{address}"))
            .map_err(|e| format!("bad worker address {address:?}: {e}"))?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true);
        let client = WorkerClient::new(endpoint.connect_lazy());
        clients.insert(address.to_string(), client.clone());
        Ok(client)
    }

    /// Plans, assigns and starts a replay; returns once every worker has its start time.
    pub async fn start(self: &Arc<Self>, spec: ReplaySpec) -> Result<ReplayStatus, ReplayError> {
        validate(&spec)?;
        let stored = self
            .catalog
            .get::<Recording>(&spec.recording_id)
            .await?
            .ok_or_else(|| ReplayError::UnknownRecording(spec.recording_id.clone()))?;
        let mut recording = stored.value;
        match recording.state {
            RecordingState::Recording => return Err(ReplayError::StillRecording(recording.id)),
            RecordingState::Expired => {
                return Err(ReplayError::Expired { id: recording.id, missing: recording.missing_records });
            }
            RecordingState::Complete => {}
        }
        self.recordings.check_retention(&mut recording).await?;
        if recording.state == RecordingState::Expired {
            return Err(ReplayError::Expired { id: recording.id, missing: recording.missing_records });
        }
        if recording.record_count == 0 {
            return Err(ReplayError::EmptyRecording(recording.id));
        }
        let candidates = self.pick_workers(&spec).await?;
        let plans = planner::plan(&recording.ranges, &candidates);
        let origin_ns = recording.first_timestamp_ns.unwrap_or(0);
        let now = now_ms();
        let mut replay = Replay {
            id: new_id("rep"),
            recording_id: recording.id.clone(),
            target: spec.target.clone(),
            state: ReplayState::Planning,
            options: serde_json::to_value(&spec).expect("serialisable"),
            plan: serde_json::to_value(&plans).expect("serialisable"),
            summary: serde_json::Value::Null,
            error: None,
            created_at_ms: now,
            started_at_ms: None,
            finished_at_ms: None,
        };
        self.catalog.put(&replay).await?;

        // Prepare: every worker acknowledges its share before anyone starts.
        let rate_share = |records: u64| spec.rate_per_sec * records as f64 / recording.record_count.max(1) as f64;
        let assigns = plans.iter().map(|plan| {
            let request = AssignRequest {
                protocol_version: PROTOCOL_VERSION,
                replay_id: replay.id.clone(),
                controller_id: self.controller_id.clone(),
                log_url: recording.log_url.clone(),
                shares: plan
                    .shares
                    .iter()
                    .map(|s| PartitionShare {
                        partition: s.partition,
                        start_offset: s.start,
                        end_offset: s.end,
                        stride: s.stride,
                        phase: s.phase,
                    })
                    .collect(),
                options: Some(ReplayOptions {
                    target: spec.target.clone(),
                    multiple: spec.multiple,
                    speed: spec.speed,
                    pacing: spec.pacing.to_proto() as i32,
                    rate_per_sec: rate_share(plan.records),
                    max_in_flight: spec.max_in_flight,
                    request_timeout_ms: spec.request_timeout_ms,
                    keep_host: spec.keep_host,
                    insecure_tls: spec.insecure_tls,
                    http2: spec.http2,
                    dry_run: spec.dry_run,
                }),
                origin_ns,
                recording_records: recording.record_count,
            };
            let client = self.client(&plan.address);
            async move {
                let refused = |reason: String| ReplayError::WorkerRefused {
                    worker: plan.worker_id.clone(),
                    address: plan.address.clone(),
                    reason,
                };
                let mut client = client.map_err(refused)?;
                let call = tokio::time::timeout(Duration::from_secs(30), client.assign(request));
                match call.await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(status)) => Err(refused(status.message().to_string())),
                    Err(_) => Err(refused("no answer within 30 s".into())),
                }
            }
        });
        if let Some(error) = join_all(assigns).await.into_iter().find_map(Result::err) {
            self.cancel_on_workers(&replay.id, &plans).await;
            replay.state = ReplayState::Failed;
            replay.error = Some(error.to_string());
            replay.finished_at_ms = Some(now_ms());
            self.catalog.put(&replay).await?;
            return Err(error);
        }

        // Start: one instant, a little ahead, for everyone.
        let start_at_unix_ns = reprise_store::now_ns() + self.start_lead.as_nanos() as i64;
        let starts = plans.iter().map(|plan| {
            let client = self.client(&plan.address);
            let request = StartRequest { replay_id: replay.id.clone(), start_at_unix_ns };
            async move {
                let mut client = client?;
                client.start(request).await.map_err(|s| format!("worker {}: {}", plan.worker_id, s.message()))
            }
        });
        if let Some(error) = join_all(starts).await.into_iter().find_map(Result::err) {
            self.cancel_on_workers(&replay.id, &plans).await;
            replay.state = ReplayState::Failed;
            replay.error = Some(error.clone());
            self.catalog.put(&replay).await?;
            return Err(ReplayError::WorkerRefused { worker: "?".into(), address: "?".into(), reason: error });
        }
        replay.state = ReplayState::Running;
        replay.started_at_ms = Some(start_at_unix_ns / 1_000_000);
        replay.plan = serde_json::to_value(StoredPlan { start_at_unix_ns, origin_ns, workers: plans.clone() })
            .expect("serialisable");
        self.catalog.put(&replay).await?;

        let span_ns = recording.last_timestamp_ns.unwrap_or(origin_ns) - origin_ns;
        let live = Arc::new(LiveReplay {
            replay: Mutex::new(replay.clone()),
            spec: spec.clone(),
            records: recording.record_count,
            span_ns,
            cancel_requested: Default::default(),
            tally: Mutex::new(Tally {
                workers: plans
                    .iter()
                    .map(|p| {
                        let tally = WorkerTally {
                            address: p.address.clone(),
                            planned_records: p.records,
                            latest: None,
                            lost: None,
                            sent_at_last_tick: 0,
                        };
                        (p.worker_id.clone(), tally)
                    })
                    .collect(),
                interval_latency: empty_histogram(),
                interval_lag: empty_histogram(),
                timeline: Vec::new(),
                last_tick: None,
                started: None,
            }),
            events: broadcast::channel(256).0,
        });
        self.live.lock().expect("lock").insert(replay.id.clone(), live.clone());
        for plan in &plans {
            self.spawn(self.clone().follow(live.clone(), plan.worker_id.clone(), plan.address.clone()));
        }
        self.spawn(self.clone().tick(live.clone(), start_at_unix_ns));
        tracing::info!(replay = %replay.id, workers = plans.len(), records = recording.record_count, "replay started");
        Ok(live.status())
    }

    async fn pick_workers(&self, spec: &ReplaySpec) -> Result<Vec<Candidate>, ReplayError> {
        let mut workers: Vec<WorkerInfo> =
            self.catalog.list::<WorkerInfo>().await?.into_iter().map(|s| s.value).collect();
        let live = workers.len();
        workers.retain(|w| spec.worker_labels.iter().all(|(k, v)| w.labels.get(k) == Some(v)));
        let labelled = workers.len();
        workers.retain(|w| w.protocol_version == PROTOCOL_VERSION);
        if workers.is_empty() {
            let why = if live == 0 {
                " (start reprise-worker with the same --catalog)".to_string()
            } else if labelled == 0 {
                format!(": none of the {live} live workers has labels {:?}", spec.worker_labels)
            } else {
                format!(": the {labelled} matching workers speak another protocol version than {PROTOCOL_VERSION}")
            };
            return Err(ReplayError::NoWorkers(why));
        }
        workers.sort_by(|a, b| a.id.cmp(&b.id));
        if spec.workers > 0 {
            workers.truncate(spec.workers as usize);
        }
        Ok(workers.into_iter().map(|w| Candidate { id: w.id, address: w.address }).collect())
    }

    async fn cancel_on_workers(&self, replay_id: &str, plans: &[WorkerPlan]) {
        let cancels = plans.iter().filter_map(|p| self.client(&p.address).ok()).map(|mut client| {
            let request = ControlRequest { replay_id: replay_id.to_string(), action: ControlAction::Cancel as i32 };
            async move { client.control(request).await }
        });
        join_all(cancels).await;
    }

    /// Follows one worker's stats stream, re-attaching after breaks, until its final
    /// report or until it is lost.
    async fn follow(self: Arc<Self>, live: Arc<LiveReplay>, worker_id: String, address: String) {
        let replay_id = live.id();
        let mut unreachable_since: Option<Instant> = None;
        loop {
            let attempt = async {
                let mut client = self.client(&address)?;
                let mut stream = client
                    .stats(StatsRequest { replay_id: replay_id.clone() })
                    .await
                    .map_err(|s| s.message().to_string())?
                    .into_inner();
                while let Some(report) = stream.message().await.map_err(|s| s.message().to_string())? {
                    unreachable_since = None;
                    if live.on_report(&worker_id, report) {
                        return Ok(true);
                    }
                }
                Ok::<bool, String>(false)
            };
            match attempt.await {
                Ok(true) => return,
                Ok(false) => {}
                Err(error) => {
                    let since = *unreachable_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= LOST_AFTER {
                        let reason = format!("worker {worker_id} lost: {error}");
                        tracing::warn!(replay = %replay_id, "{reason}");
                        live.mark_lost(&worker_id, reason);
                        return;
                    }
                }
            }
            if live.is_final() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Once a second: a timeline point and a status event; at the end, the summary.
    async fn tick(self: Arc<Self>, live: Arc<LiveReplay>, start_at_unix_ns: i64) {
        let wait = (start_at_unix_ns - reprise_store::now_ns()).max(0) as u64;
        tokio::time::sleep(Duration::from_nanos(wait)).await;
        live.tally.lock().expect("lock").started = Some(Instant::now());
        let mut every = tokio::time::interval(Duration::from_secs(1));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        every.tick().await;
        loop {
            every.tick().await;
            let done = live.workers_final();
            let point = live.timeline_point();
            if done {
                self.finish(&live).await;
                let _ = live.events.send(ReplayEvent { status: live.status(), point: Some(point) });
                return;
            }
            let _ = live.events.send(ReplayEvent { status: live.status(), point: Some(point) });
        }
    }

    async fn finish(&self, live: &LiveReplay) {
        let (state, error) = live.outcome();
        {
            let mut replay = live.replay.lock().expect("lock");
            // A user's cancel stands even if some worker finished first.
            replay.state = match state {
                ReplayState::Done if live.cancel_requested.load(Ordering::Relaxed) => ReplayState::Cancelled,
                other => other,
            };
            replay.error = error;
            replay.finished_at_ms = Some(now_ms());
        }
        let mut replay = live.replay.lock().expect("lock").clone();
        replay.summary = serde_json::to_value(live.status()).expect("serialisable");
        if let Err(e) = self.catalog.put(&replay).await {
            tracing::error!(replay = %replay.id, error = %e, "could not store the replay summary");
        }
        tracing::info!(replay = %replay.id, state = ?replay.state, "replay finished");
    }

    /// Pauses, resumes or cancels a running replay on all its workers.
    pub async fn control(&self, id: &str, action: ControlAction) -> Result<ReplayStatus, ReplayError> {
        let live = self.live(id).ok_or_else(|| ReplayError::UnknownReplay(id.to_string()))?;
        if live.is_final() || live.cancel_requested.load(Ordering::Relaxed) {
            return Err(ReplayError::Ended(id.to_string()));
        }
        if action == ControlAction::Cancel {
            live.cancel_requested.store(true, Ordering::Relaxed);
        }
        let addresses: Vec<String> =
            live.tally.lock().expect("lock").workers.values().map(|w| w.address.clone()).collect();
        let calls = addresses.iter().filter_map(|a| self.client(a).ok()).map(|mut client| {
            let request = ControlRequest { replay_id: id.to_string(), action: action as i32 };
            async move { client.control(request).await }
        });
        for result in join_all(calls).await {
            if let Err(status) = result {
                tracing::warn!(replay = %id, error = %status.message(), "control call failed");
            }
        }
        let replay = {
            let mut replay = live.replay.lock().expect("lock");
            match action {
                ControlAction::Pause => replay.state = ReplayState::Paused,
                ControlAction::Resume => replay.state = ReplayState::Running,
                // Final once the workers have reported (see `finish`).
                _ => {}
            }
            replay.clone()
        };
        self.catalog.put(&replay).await?;
        Ok(live.status())
    }

    pub fn live(&self, id: &str) -> Option<Arc<LiveReplay>> {
        self.live.lock().expect("lock").get(id).cloned()
    }

    /// A replay's status: live if followed here, else the stored summary.
    pub async fn status(&self, id: &str) -> Result<ReplayStatus, ReplayError> {
        if let Some(live) = self.live(id) {
            return Ok(live.status());
        }
        let stored = self.catalog.get::<Replay>(id).await?.ok_or_else(|| ReplayError::UnknownReplay(id.to_string()))?;
        Ok(stored_status(&stored.value))
    }

    /// Every replay, newest first.
    pub async fn list(&self) -> Result<Vec<ReplayStatus>, ReplayError> {
        let mut out: Vec<ReplayStatus> = self
            .catalog
            .list::<Replay>()
            .await?
            .into_iter()
            .map(|stored| self.live(&stored.value.id).map_or_else(|| stored_status(&stored.value), |l| l.status()))
            .collect();
        out.sort_by(|a, b| b.created_at_ms.cmp(&a.created_at_ms).then(b.id.cmp(&a.id)));
        Ok(out)
    }

    /// Live replays' statuses (for metrics).
    pub fn live_statuses(&self) -> Vec<ReplayStatus> {
        let live: Vec<Arc<LiveReplay>> = self.live.lock().expect("lock").values().cloned().collect();
        live.iter().map(|l| l.status()).collect()
    }

    /// Tells every worker of an unfinished replay that this controller is alive.
    pub fn start_heartbeats(self: &Arc<Self>) {
        self.spawn(self.clone().heartbeat_loop());
    }

    async fn heartbeat_loop(self: Arc<Self>) {
        let mut every = tokio::time::interval(Duration::from_secs(1));
        loop {
            every.tick().await;
            let mut by_address: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for live in self.live.lock().expect("lock").values().filter(|l| !l.is_final()) {
                for worker in live.tally.lock().expect("lock").workers.values() {
                    by_address.entry(worker.address.clone()).or_default().push(live.id());
                }
            }
            let beats = by_address.into_iter().filter_map(|(address, replay_ids)| {
                let mut client = self.client(&address).ok()?;
                let request = HeartbeatRequest { controller_id: self.controller_id.clone(), replay_ids };
                Some(async move {
                    if let Err(status) = client.heartbeat(request).await {
                        tracing::debug!(%address, error = %status.message(), "heartbeat failed");
                    }
                })
            });
            join_all(beats).await;
        }
    }
}

fn validate(spec: &ReplaySpec) -> Result<(), ReplayError> {
    let invalid = |m: String| Err(ReplayError::Invalid(m));
    if spec.multiple == 0 {
        return invalid("--multiple must be at least 1".into());
    }
    if spec.pacing == Pacing::Original && !(spec.speed.is_finite() && spec.speed > 0.0) {
        return invalid(format!("--speed must be a positive number, got {}", spec.speed));
    }
    if spec.pacing == Pacing::Constant && spec.rate_per_sec <= 0.0 {
        return invalid("constant pacing needs --rate".into());
    }
    if spec.rate_per_sec < 0.0 || spec.rate_per_sec.is_nan() {
        return invalid("--rate must not be negative".into());
    }
    if spec.max_in_flight == 0 {
        return invalid("--max-in-flight must be at least 1".into());
    }
    let uri: http::Uri =
        spec.target.parse().map_err(|e| ReplayError::Invalid(format!("target {:?}: {e}", spec.target)))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.authority().is_none() {
        return invalid(format!("target {:?} must be an http:// or https:// URL with a host", spec.target));
    }
    Ok(())
}

/// The status of a replay this controller does not follow live (ended, or followed by
/// another controller): the stored summary if there is one, else what the record says.
fn stored_status(replay: &Replay) -> ReplayStatus {
    if let Ok(status) = serde_json::from_value::<ReplayStatus>(replay.summary.clone()) {
        return status;
    }
    let spec: Option<ReplaySpec> = serde_json::from_value(replay.options.clone()).ok();
    ReplayStatus {
        id: replay.id.clone(),
        recording_id: replay.recording_id.clone(),
        target: replay.target.clone(),
        state: replay.state,
        error: replay.error.clone(),
        multiple: spec.as_ref().map_or(1, |s| s.multiple),
        speed: spec.as_ref().filter(|s| s.pacing == Pacing::Original).map(|s| s.speed),
        pacing: spec.as_ref().map_or("original".into(), |s| pacing_name(s.pacing)),
        rate: spec.as_ref().map(|s| s.rate_per_sec).filter(|r| *r > 0.0),
        records: 0,
        read: 0,
        skipped: 0,
        sent: 0,
        ok: 0,
        errors: 0,
        http_errors: 0,
        status: BTreeMap::new(),
        error_kinds: BTreeMap::new(),
        bytes_sent: 0,
        bytes_received: 0,
        in_flight: 0,
        qps: 0.0,
        current_qps: 0.0,
        duration_s: 0.0,
        progress: 0.0,
        eta_s: None,
        created_at_ms: replay.created_at_ms,
        started_at_ms: replay.started_at_ms,
        finished_at_ms: replay.finished_at_ms,
        latency_ms: Percentiles::default(),
        lag_ms: Percentiles::default(),
        workers: Vec::new(),
    }
}

fn pacing_name(pacing: Pacing) -> String {
    serde_json::to_value(pacing).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}

fn worker_state_name(state: WorkerReplayState) -> &'static str {
    match state {
        WorkerReplayState::Unspecified => "starting",
        WorkerReplayState::Prepared => "prepared",
        WorkerReplayState::Running => "running",
        WorkerReplayState::Paused => "paused",
        WorkerReplayState::Done => "done",
        WorkerReplayState::Cancelled => "cancelled",
        WorkerReplayState::Failed => "failed",
    }
}

impl LiveReplay {
    pub fn id(&self) -> String {
        self.replay.lock().expect("lock").id.clone()
    }

    pub fn subscribe(&self) -> broadcast::Receiver<ReplayEvent> {
        self.events.subscribe()
    }

    pub fn timeline(&self) -> Vec<TimelinePoint> {
        self.tally.lock().expect("lock").timeline.clone()
    }

    pub fn is_final(&self) -> bool {
        self.replay.lock().expect("lock").state.is_final()
    }

    fn workers_final(&self) -> bool {
        self.tally.lock().expect("lock").workers.values().all(WorkerTally::is_final)
    }

    /// Takes a report in; whether it was the worker's final one.
    fn on_report(&self, worker_id: &str, report: WorkerStats) -> bool {
        let mut tally = self.tally.lock().expect("lock");
        let Tally { workers, interval_latency, interval_lag, .. } = &mut *tally;
        let Some(worker) = workers.get_mut(worker_id) else { return true };
        // A re-attached stream starts with the latest report, which may be known already.
        if worker.latest.as_ref().is_some_and(|l| l.seq >= report.seq) {
            return worker.is_final();
        }
        let _ = interval_latency.add(histogram(&report.latency_us_interval));
        let _ = interval_lag.add(histogram(&report.lag_us_interval));
        worker.latest = Some(report);
        worker.is_final()
    }

    fn mark_lost(&self, worker_id: &str, reason: String) {
        if let Some(worker) = self.tally.lock().expect("lock").workers.get_mut(worker_id) {
            worker.lost = Some(reason);
        }
    }

    /// The final state from the workers' final reports.
    fn outcome(&self) -> (ReplayState, Option<String>) {
        let tally = self.tally.lock().expect("lock");
        let mut errors = Vec::new();
        let mut cancelled = false;
        for (id, worker) in &tally.workers {
            if let Some(lost) = &worker.lost {
                errors.push(lost.clone());
            }
            if let Some(latest) = &worker.latest {
                match latest.state() {
                    WorkerReplayState::Failed => errors.push(format!("worker {id}: {}", latest.error)),
                    WorkerReplayState::Cancelled => cancelled = true,
                    _ => {}
                }
            }
        }
        if !errors.is_empty() {
            (ReplayState::Failed, Some(errors.join("; ")))
        } else if cancelled {
            (ReplayState::Cancelled, None)
        } else {
            (ReplayState::Done, None)
        }
    }

    /// Closes the current second: rates and percentiles since the previous point.
    fn timeline_point(&self) -> TimelinePoint {
        let mut tally = self.tally.lock().expect("lock");
        let now = Instant::now();
        let sent: u64 = tally.workers.values().filter_map(|w| w.latest.as_ref()).map(|s| s.sent).sum();
        let ok: u64 = tally.workers.values().filter_map(|w| w.latest.as_ref()).map(ok_count).sum();
        let errors: u64 = tally.workers.values().filter_map(|w| w.latest.as_ref()).map(error_count).sum();
        let (since, sent_before) = tally.last_tick.unwrap_or((tally.started.unwrap_or(now), 0));
        let seconds = now.duration_since(since).as_secs_f64().max(1e-3);
        let mut per_worker = BTreeMap::new();
        for (id, worker) in &mut tally.workers {
            let sent = worker.latest.as_ref().map_or(0, |s| s.sent);
            per_worker.insert(id.clone(), sent - worker.sent_at_last_tick.min(sent));
            worker.sent_at_last_tick = sent;
        }
        let latency = Percentiles::of(&tally.interval_latency);
        let lag = Percentiles::of(&tally.interval_lag);
        tally.interval_latency.reset();
        tally.interval_lag.reset();
        let point = TimelinePoint {
            t_s: tally.started.map_or(0.0, |s| now.duration_since(s).as_secs_f64()),
            at_ms: now_ms(),
            qps: (sent - sent_before.min(sent)) as f64 / seconds,
            sent,
            ok,
            errors,
            latency_p50_ms: latency.p50,
            latency_p99_ms: latency.p99,
            lag_p99_ms: lag.p99,
            workers: per_worker,
        };
        tally.last_tick = Some((now, sent));
        if tally.timeline.len() >= MAX_TIMELINE {
            tally.timeline.remove(0);
        }
        tally.timeline.push(point.clone());
        point
    }

    /// The merged status now.
    pub fn status(&self) -> ReplayStatus {
        let replay = self.replay.lock().expect("lock").clone();
        let tally = self.tally.lock().expect("lock");
        let reports: Vec<&WorkerStats> = tally.workers.values().filter_map(|w| w.latest.as_ref()).collect();
        let sum = |f: fn(&WorkerStats) -> u64| reports.iter().map(|s| f(s)).sum::<u64>();
        let mut latency = empty_histogram();
        let mut lag = empty_histogram();
        for report in &reports {
            let _ = latency.add(histogram(&report.latency_us_total));
            let _ = lag.add(histogram(&report.lag_us_total));
        }
        let sent = sum(|s| s.sent);
        let read = sum(|s| s.records_read);
        let duration_s = match (replay.started_at_ms, replay.finished_at_ms) {
            (Some(start), Some(end)) => (end - start).max(0) as f64 / 1000.0,
            (Some(start), None) => (now_ms() - start).max(0) as f64 / 1000.0,
            _ => 0.0,
        };
        let progress = if self.records == 0 { 1.0 } else { (read as f64 / self.records as f64).min(1.0) };
        let eta_s = match (replay.state, self.spec.pacing) {
            (s, _) if s.is_final() => Some(0.0),
            (_, Pacing::Original) => Some((self.span_ns as f64 / 1e9 / self.spec.speed - duration_s).max(0.0)),
            _ if progress > 0.0 => Some(duration_s * (1.0 - progress) / progress),
            _ => None,
        };
        let named = |pairs: &[(&str, u64)]| -> BTreeMap<String, u64> {
            pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
        };
        let status_classes = named(&[
            ("1xx", sum(|s| s.status_1xx)),
            ("2xx", sum(|s| s.status_2xx)),
            ("3xx", sum(|s| s.status_3xx)),
            ("4xx", sum(|s| s.status_4xx)),
            ("5xx", sum(|s| s.status_5xx)),
        ]);
        let error_kinds = named(&[
            ("connect", sum(|s| s.errors_connect)),
            ("timeout", sum(|s| s.errors_timeout)),
            ("reset", sum(|s| s.errors_reset)),
            ("other", sum(|s| s.errors_other)),
        ]);
        ReplayStatus {
            id: replay.id.clone(),
            recording_id: replay.recording_id.clone(),
            target: replay.target.clone(),
            state: replay.state,
            error: replay.error.clone(),
            multiple: self.spec.multiple,
            speed: (self.spec.pacing == Pacing::Original).then_some(self.spec.speed),
            pacing: pacing_name(self.spec.pacing),
            rate: (self.spec.rate_per_sec > 0.0).then_some(self.spec.rate_per_sec),
            records: self.records,
            read,
            skipped: sum(|s| s.records_skipped),
            sent,
            ok: sum(ok_count),
            errors: sum(error_count),
            http_errors: sum(|s| s.status_4xx + s.status_5xx),
            status: status_classes,
            error_kinds,
            bytes_sent: sum(|s| s.bytes_sent),
            bytes_received: sum(|s| s.bytes_received),
            in_flight: sum(|s| s.in_flight),
            qps: if duration_s > 0.0 { sent as f64 / duration_s } else { 0.0 },
            current_qps: tally.timeline.last().map_or(0.0, |p| p.qps),
            duration_s,
            progress,
            eta_s,
            created_at_ms: replay.created_at_ms,
            started_at_ms: replay.started_at_ms,
            finished_at_ms: replay.finished_at_ms,
            latency_ms: Percentiles::of(&latency),
            lag_ms: Percentiles::of(&lag),
            workers: tally
                .workers
                .iter()
                .map(|(id, w)| WorkerProgress {
                    id: id.clone(),
                    address: w.address.clone(),
                    state: if w.lost.is_some() {
                        "lost".into()
                    } else {
                        w.latest.as_ref().map_or("starting", |s| worker_state_name(s.state())).into()
                    },
                    planned_records: w.planned_records,
                    read: w.latest.as_ref().map_or(0, |s| s.records_read),
                    sent: w.latest.as_ref().map_or(0, |s| s.sent),
                    error: w
                        .lost
                        .clone()
                        .or_else(|| w.latest.as_ref().map(|s| s.error.clone()).filter(|e| !e.is_empty())),
                })
                .collect(),
        }
    }
}

fn ok_count(s: &WorkerStats) -> u64 {
    s.status_1xx + s.status_2xx + s.status_3xx
}

fn error_count(s: &WorkerStats) -> u64 {
    s.errors_connect + s.errors_timeout + s.errors_reset + s.errors_other
}
