//! The worker's gRPC service: assignments keyed by replay id, start, control, stats
//! streams, and the controller heartbeat that keeps replays from running away: a
//! replay that no controller has named for the grace period stops by itself.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{Stream, StreamExt};
use reprise_proto::v1::worker_server::Worker as WorkerRpc;
use reprise_proto::v1::{
    AssignRequest, AssignResponse, ControlAction, ControlRequest, ControlResponse, HeartbeatRequest, HeartbeatResponse,
    StartRequest, StartResponse, StatsRequest, WorkerStats,
};
use reprise_proto::{PROTOCOL_VERSION, check_protocol};
use tokio_stream::wrappers::WatchStream;
use tonic::{Request, Response, Status};

use crate::replay::{HostSettings, Replay, ReplayError};

/// How long a finished replay's final report stays available to late or re-attaching
/// controllers.
const KEEP_FINISHED: Duration = Duration::from_secs(600);

/// A replay held here, and when a controller last named it (ms since the epoch).
struct Held {
    replay: Arc<Replay>,
    last_heard_ms: AtomicI64,
}

pub struct WorkerService {
    pub worker_id: String,
    replays: Mutex<HashMap<String, Held>>,
    grace: Duration,
    host: HostSettings,
}

impl WorkerService {
    pub fn new(worker_id: String, grace: Duration, host: HostSettings) -> Arc<Self> {
        Arc::new(WorkerService { worker_id, replays: Mutex::new(HashMap::new()), grace, host })
    }

    /// A controller named replay `id`: its grace starts again. Returns the replay.
    fn heard(&self, id: &str) -> Result<Arc<Replay>, Status> {
        let replays = self.replays.lock().expect("lock");
        let held =
            replays.get(id).ok_or_else(|| Status::not_found(format!("replay {id} is not assigned to this worker")))?;
        held.last_heard_ms.store(reprise_store::now_ms(), Ordering::Relaxed);
        Ok(held.replay.clone())
    }

    /// Replays that have not ended.
    pub fn active(&self) -> Vec<Arc<Replay>> {
        self.replays.lock().expect("lock").values().map(|h| &h.replay).filter(|r| !r.is_final()).cloned().collect()
    }

    /// Stops every active replay that no controller has named for the grace period, and
    /// forgets replays that ended long ago. Runs until the process ends.
    pub async fn watchdog(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            let now_ms = reprise_store::now_ms();
            let silent: Vec<(Arc<Replay>, i64)> = self
                .replays
                .lock()
                .expect("lock")
                .values()
                .filter(|h| !h.replay.is_final())
                .map(|h| (h.replay.clone(), now_ms - h.last_heard_ms.load(Ordering::Relaxed)))
                .filter(|(_, silent_ms)| *silent_ms > self.grace.as_millis() as i64)
                .collect();
            for (replay, silent_ms) in silent {
                let error = format!("no controller heard for {} s; stopped sending", silent_ms / 1000);
                tracing::warn!(replay = %replay.id, "{error}");
                replay.cancel(Some(error));
            }
            let now_ns = reprise_store::now_ns();
            self.replays.lock().expect("lock").retain(|_, h| {
                !h.replay.is_final()
                    || now_ns - h.replay.subscribe().borrow().at_unix_ns < KEEP_FINISHED.as_nanos() as i64
            });
        }
    }

    /// Cancels everything (clean shutdown).
    pub fn cancel_all(&self) {
        for replay in self.active() {
            replay.cancel(Some("worker shutting down".into()));
        }
    }
}

type StatsStream = Pin<Box<dyn Stream<Item = Result<WorkerStats, Status>> + Send>>;

#[tonic::async_trait]
impl WorkerRpc for WorkerService {
    async fn assign(&self, request: Request<AssignRequest>) -> Result<Response<AssignResponse>, Status> {
        let assignment = request.into_inner();
        check_protocol(assignment.protocol_version, "controller", "worker")?;
        let existing = self.heard(&assignment.replay_id).ok();
        let replay = match existing {
            Some(existing) if existing.assignment.shares == assignment.shares => existing,
            Some(_) => {
                return Err(Status::already_exists(format!(
                    "replay {} is already assigned here with other shares",
                    assignment.replay_id
                )));
            }
            None => {
                let id = assignment.replay_id.clone();
                let replay = Replay::prepare(&self.worker_id, assignment, self.host).await.map_err(|e| match e {
                    ReplayError::Invalid(_) => Status::invalid_argument(e.to_string()),
                    ReplayError::Log(_) => Status::unavailable(e.to_string()),
                })?;
                // A concurrent identical Assign may have won the race: keep the first.
                let held = || Held { replay, last_heard_ms: AtomicI64::new(reprise_store::now_ms()) };
                self.replays.lock().expect("lock").entry(id).or_insert_with(held).replay.clone()
            }
        };
        tracing::info!(replay = %replay.id, shares = replay.assignment.shares.len(), records = replay.planned_records, "assigned");
        Ok(Response::new(AssignResponse {
            protocol_version: PROTOCOL_VERSION,
            worker_id: self.worker_id.clone(),
            planned_records: replay.planned_records,
        }))
    }

    async fn start(&self, request: Request<StartRequest>) -> Result<Response<StartResponse>, Status> {
        let request = request.into_inner();
        let replay = self.heard(&request.replay_id)?;
        replay.start(request.start_at_unix_ns);
        Ok(Response::new(StartResponse {}))
    }

    async fn control(&self, request: Request<ControlRequest>) -> Result<Response<ControlResponse>, Status> {
        let request = request.into_inner();
        let replay = self.heard(&request.replay_id)?;
        match request.action() {
            ControlAction::Pause => replay.pause(true),
            ControlAction::Resume => replay.pause(false),
            ControlAction::Cancel => replay.cancel(None),
            ControlAction::Unspecified => return Err(Status::invalid_argument("no control action given")),
        }
        Ok(Response::new(ControlResponse {}))
    }

    type StatsStream = StatsStream;

    async fn stats(&self, request: Request<StatsRequest>) -> Result<Response<Self::StatsStream>, Status> {
        let replay = self.heard(&request.into_inner().replay_id)?;
        // Every report up to and including the final one.
        let reports = reprise_proto::until_final(WatchStream::new(replay.subscribe()));
        Ok(Response::new(Box::pin(reports.map(Ok))))
    }

    async fn heartbeat(&self, request: Request<HeartbeatRequest>) -> Result<Response<HeartbeatResponse>, Status> {
        let unknown_replay_ids =
            request.into_inner().replay_ids.into_iter().filter(|id| self.heard(id).is_err()).collect();
        Ok(Response::new(HeartbeatResponse { worker_id: self.worker_id.clone(), unknown_replay_ids }))
    }
}
