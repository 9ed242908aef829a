//! Replays: plan a recording over the live workers, assign and start them on a common
//! instant, follow their stats streams, merge them into a cluster status and timeline,
//! and store the outcome. Every replay is persisted in the catalog at each state change.
//!
//! * [`spec`]: the validated request;
//! * `start`: planning, assigning and starting, as steps;
//! * `follow`: following the workers (stats streams, ticks, heartbeats, the end);
//! * `resume`: taking over the unfinished replays a stopped controller left;
//! * `handover`: moving a lost or released worker's ranges to the others;
//! * [`tally`]: the merged status, timeline and outcome (pure data);
//! * [`stored`]: the replay's parts as the catalog keeps them.

mod dry_run;
mod follow;
mod handover;
mod resume;
pub mod spec;
mod start;
pub mod stored;
pub mod tally;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::join_all;
use futures::stream::{BoxStream, StreamExt};
use reprise_proto::v1::worker_client::WorkerClient;
use reprise_proto::v1::{
    ControlAction, ControlRequest, ReplayEvent, ReplayState, ReplayStatus, TimelinePoint, WorkerStats,
};
use reprise_store::schema::Replay;
use reprise_store::{Catalog, CatalogError, now_ms};
use tokio::sync::watch;
use tokio_stream::wrappers::WatchStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, ClientTlsConfig};

pub use self::spec::ReplaySpec;
use self::stored::ReplayPlan;
use self::tally::Tally;
use crate::allow::AllowList;
use crate::recordings::{RecordingError, Recordings};

/// The longest a unary call to a worker may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a control call (pause, resume, cancel) is tried before giving up on a worker.
const CONTROL_TRIES: u32 = 3;

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
    #[error("{0}")]
    TargetNotAllowed(String),
    #[error("no live workers{0}")]
    NoWorkers(String),
    #[error("no replay {0}")]
    UnknownReplay(String),
    #[error("replay {0} has already ended")]
    Ended(String),
    #[error("worker {worker} ({address}) refused the replay: {reason}")]
    WorkerRefused { worker: String, address: String, reason: String },
    #[error(transparent)]
    Recording(#[from] RecordingError),
    #[error("cannot read the recording: {0}")]
    Log(reprise_store::log::LogError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
}

/// A replay this controller follows.
pub struct LiveReplay {
    /// The record's own fields; its JSON parts (spec, plan, summary) are left empty here,
    /// where the typed spec and plan are kept, so that reading a status clones no JSON.
    replay: Mutex<Replay>,
    spec: ReplaySpec,
    /// The spec as the record stores it, serialised once (it never changes).
    spec_json: serde_json::Value,
    /// The plan, grown by takeovers and updated with the parts' progress.
    plan: Mutex<ReplayPlan>,
    tally: Mutex<Tally>,
    /// The latest status event, for every watcher (gRPC and SSE alike).
    events: watch::Sender<ReplayEvent>,
}

impl LiveReplay {
    fn new(mut replay: Replay, spec: ReplaySpec, plan: ReplayPlan) -> Arc<LiveReplay> {
        let tally = Tally::new(&plan);
        (replay.options, replay.plan, replay.summary) = Default::default();
        let status = tally.status(&replay, &spec, &plan, now_ms());
        Arc::new(LiveReplay {
            replay: Mutex::new(replay),
            spec_json: stored::spec_json(&spec),
            spec,
            plan: Mutex::new(plan),
            tally: Mutex::new(tally),
            events: watch::Sender::new(ReplayEvent { status: Some(status), point: None }),
        })
    }

    pub fn id(&self) -> String {
        self.replay.lock().expect("lock").id.clone()
    }

    pub fn is_final(&self) -> bool {
        self.replay.lock().expect("lock").state.is_final()
    }

    /// A user cancelled: the replay ends as cancelled once every worker has reported its
    /// final counts (until then its state stays what it was, so no one reads a final
    /// status with counts still coming in).
    fn cancel_requested(&self) -> bool {
        self.replay.lock().expect("lock").cancel_requested
    }

    /// The addresses of the workers with a part still under way: control calls go to
    /// them, and to no lost worker (a call would extend its grace).
    fn addresses(&self) -> Vec<String> {
        let tally = self.tally.lock().expect("lock");
        let mut addresses: Vec<String> =
            tally.workers.values().filter(|w| !w.is_final()).map(|w| w.address.clone()).collect();
        addresses.sort();
        addresses.dedup();
        addresses
    }

    /// The replay record as the catalog keeps it, with the spec and the plan as of now.
    fn record(&self) -> Replay {
        self.record_with(&self.plan.lock().expect("lock"))
    }

    /// The replay record as the catalog keeps it, with `plan` for its plan.
    fn record_with(&self, plan: &ReplayPlan) -> Replay {
        let mut replay = self.replay.lock().expect("lock").clone();
        replay.options = self.spec_json.clone();
        replay.plan = stored::plan_json(plan);
        replay
    }

    pub fn timeline(&self) -> Vec<TimelinePoint> {
        self.tally.lock().expect("lock").timeline()
    }

    /// The merged status now.
    pub fn status(&self) -> ReplayStatus {
        let replay = self.replay.lock().expect("lock").clone();
        let plan = self.plan.lock().expect("lock");
        self.tally.lock().expect("lock").status(&replay, &self.spec, &plan, now_ms())
    }

    /// Each part's latest report, with its worker's id (for metrics).
    pub fn reports(&self) -> Vec<(String, WorkerStats)> {
        let tally = self.tally.lock().expect("lock");
        tally.latest_reports().map(|(worker, report)| (worker.to_string(), report.clone())).collect()
    }

    /// Tells every watcher the status now, with the timeline point that made it.
    fn publish(&self, point: Option<TimelinePoint>) {
        self.events.send_replace(ReplayEvent { status: Some(self.status()), point });
    }
}

/// One gRPC client per worker address, made on first use; over mutual TLS when the
/// controller has a certificate.
struct WorkerClients {
    clients: Mutex<HashMap<String, WorkerClient<Channel>>>,
    tls: Option<ClientTlsConfig>,
}

impl WorkerClients {
    fn get(&self, address: &str) -> Result<WorkerClient<Channel>, String> {
        let mut clients = self.clients.lock().expect("lock");
        if let Some(client) = clients.get(address) {
            return Ok(client.clone());
        }
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let mut endpoint = Channel::from_shared(format!("{scheme}://{address}"))
            .map_err(|e| format!("bad worker address {address:?}: {e}"))?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true);
        if let Some(tls) = &self.tls {
            endpoint = endpoint.tls_config(tls.clone()).map_err(|e| format!("TLS to {address}: {e}"))?;
        }
        let client = WorkerClient::new(endpoint.connect_lazy());
        clients.insert(address.to_string(), client.clone());
        Ok(client)
    }

    /// Sends `action` for `replay_id` to every address, each call bounded by
    /// [`CALL_TIMEOUT`] and tried up to [`CONTROL_TRIES`] times (the workers take it
    /// idempotently); what still fails is logged, not fatal.
    async fn control_all(&self, replay_id: &str, addresses: &[String], action: ControlAction) {
        let calls = addresses.iter().filter_map(|a| Some((a, self.get(a).ok()?))).map(|(address, mut client)| {
            let request =
                ControlRequest { replay_id: replay_id.to_string(), action: action.into(), sent_at_unix_ms: now_ms() };
            async move {
                let mut last_error = String::new();
                for attempt in 0..CONTROL_TRIES {
                    match tokio::time::timeout(CALL_TIMEOUT, client.control(request.clone())).await {
                        Ok(Ok(_)) => return,
                        Ok(Err(status)) if status.code() == tonic::Code::NotFound => return,
                        Ok(Err(status)) => last_error = status.message().to_string(),
                        Err(_) => last_error = format!("no answer within {} s", CALL_TIMEOUT.as_secs()),
                    }
                    tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
                }
                tracing::warn!(replay = %replay_id, %address, ?action, error = %last_error, "control call failed");
            }
        });
        join_all(calls).await;
    }
}

pub struct ReplayManager {
    controller_id: String,
    catalog: Catalog,
    recordings: Arc<Recordings>,
    start_lead: Duration,
    live: Mutex<HashMap<String, Arc<LiveReplay>>>,
    clients: WorkerClients,
    /// Ends every background task of this manager (controller shutdown).
    shutdown: CancellationToken,
    /// Whether this controller's leadership is confirmed by the catalog: decisions
    /// (handovers) wait while it is not.
    confirmed: AtomicBool,
    /// Where replays may be sent.
    allowed: AllowList,
}

impl ReplayManager {
    pub fn new(
        controller_id: String,
        catalog: Catalog,
        recordings: Arc<Recordings>,
        start_lead: Duration,
        allowed: AllowList,
        worker_tls: Option<ClientTlsConfig>,
    ) -> Arc<Self> {
        Arc::new(ReplayManager {
            controller_id,
            catalog,
            recordings,
            start_lead,
            live: Mutex::new(HashMap::new()),
            clients: WorkerClients { clients: Mutex::default(), tls: worker_tls },
            shutdown: CancellationToken::new(),
            confirmed: AtomicBool::new(true),
            allowed,
        })
    }

    pub fn set_confirmed(&self, confirmed: bool) {
        self.confirmed.store(confirmed, Ordering::Relaxed);
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

    pub fn live(&self, id: &str) -> Option<Arc<LiveReplay>> {
        self.live.lock().expect("lock").get(id).cloned()
    }

    /// A replay's status: live if followed here, else the stored summary (or, for a
    /// replay nobody follows, what its record says).
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

    /// The replays this controller follows, ended ones included (for metrics).
    pub fn followed(&self) -> Vec<Arc<LiveReplay>> {
        self.live.lock().expect("lock").values().cloned().collect()
    }

    /// The replay's status now, then each change, until (and with) the final one: the one
    /// feed of `ctl`'s watch and the stats API's event stream.
    pub async fn watch(&self, id: &str) -> Result<BoxStream<'static, ReplayEvent>, ReplayError> {
        // Subscribe before reading the status, so that no change falls in between.
        let changes = self.live(id).map(|l| WatchStream::from_changes(l.events.subscribe()));
        let first = ReplayEvent { status: Some(self.status(id).await?), point: None };
        let events = futures::stream::once(async { first }).chain(futures::stream::iter(changes).flatten());
        Ok(reprise_proto::until_final(events))
    }

    /// Pauses, resumes or cancels a running replay on all its workers. Cancel is
    /// idempotent: asked again before the workers have reported, it is sent again.
    pub async fn control(&self, id: &str, action: ControlAction) -> Result<ReplayStatus, ReplayError> {
        let live = self.live(id).ok_or_else(|| ReplayError::UnknownReplay(id.to_string()))?;
        let cancelling = live.cancel_requested();
        if live.is_final() || (cancelling && action != ControlAction::Cancel) {
            return Err(ReplayError::Ended(id.to_string()));
        }
        {
            let mut replay = live.replay.lock().expect("lock");
            match action {
                ControlAction::Pause => replay.state = ReplayState::Paused,
                ControlAction::Resume => replay.state = ReplayState::Running,
                // Final once the workers have reported (see `finish`).
                _ => replay.cancel_requested = true,
            }
        }
        // Stored first: a controller that takes over carries the request on.
        self.catalog.put(&live.record()).await?;
        self.clients.control_all(id, &live.addresses(), action).await;
        Ok(live.status())
    }
}

/// The status of a replay this controller does not follow: its stored summary once it
/// has ended, else its record and plan with no reports.
fn stored_status(replay: &Replay) -> ReplayStatus {
    if let Ok(status) = serde_json::from_value::<ReplayStatus>(replay.summary.clone()) {
        return status;
    }
    let (spec, plan) = stored::parts(replay);
    Tally::new(&plan).status(replay, &spec, &plan, now_ms())
}
