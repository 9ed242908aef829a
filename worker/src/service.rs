//! The worker's gRPC service: assignments keyed by replay id, start, control, stats
//! streams, and the controller heartbeat that keeps replays from running away: a
//! replay that no controller has named for the grace period stops by itself.

use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{Stream, StreamExt};
use reprise_process::metrics::{self, Exporter, Family, Format, ReplaySeries, Value};
use reprise_proto::v1::worker_server::Worker as WorkerRpc;
use reprise_proto::v1::{
    AssignRequest, AssignResponse, ControlAction, ControlRequest, ControlResponse, HeartbeatRequest, HeartbeatResponse,
    StartRequest, StartResponse, StatsRequest, WorkerStats,
};
use reprise_proto::{PROTOCOL_VERSION, check_protocol};
use tokio_stream::wrappers::WatchStream;
use tonic::{Request, Response, Status};

use crate::replay::{HostSettings, Liveness, Replay, ReplayError};

/// How long a finished replay's final report stays available to late or re-attaching
/// controllers.
const KEEP_FINISHED: Duration = Duration::from_secs(600);

/// A replay held here: its parts (0, the planned share; then ranges taken over from lost
/// workers) and when a controller last named it.
struct Held {
    parts: BTreeMap<u32, Arc<Replay>>,
    liveness: Arc<Liveness>,
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

    /// A controller named replay `id` in a call sent at `sent_at_ms`: its grace starts
    /// again. Returns the replay's parts.
    fn heard(&self, id: &str, sent_at_ms: i64) -> Result<Vec<Arc<Replay>>, Status> {
        let replays = self.replays.lock().expect("lock");
        let held =
            replays.get(id).ok_or_else(|| Status::not_found(format!("replay {id} is not assigned to this worker")))?;
        held.liveness.heard(sent_at_ms);
        Ok(held.parts.values().cloned().collect())
    }

    /// One part of a replay a controller named.
    fn heard_part(&self, id: &str, part: u32, sent_at_ms: i64) -> Result<Arc<Replay>, Status> {
        self.heard(id, sent_at_ms)?
            .into_iter()
            .find(|r| r.part == part)
            .ok_or_else(|| Status::not_found(format!("replay {id} has no part {part} on this worker")))
    }

    fn parts(&self) -> Vec<Arc<Replay>> {
        self.replays.lock().expect("lock").values().flat_map(|h| h.parts.values().cloned()).collect()
    }

    /// Replay parts that have not ended.
    pub fn active(&self) -> Vec<Arc<Replay>> {
        self.parts().into_iter().filter(|r| !r.is_final()).collect()
    }

    /// This worker's metrics in `format`: per replay, its parts' counts added up. A
    /// replay is exported while a part of it runs and for [`metrics::LINGER`] after its
    /// last part ended (so a scrape sees its final counts), then no more.
    pub fn metrics(&self, format: Format) -> String {
        let now = reprise_store::now_ms();
        let mut by_replay: BTreeMap<String, Vec<Arc<Replay>>> = BTreeMap::new();
        for part in self.parts() {
            by_replay.entry(part.id.clone()).or_default().push(part);
        }
        let mut series = BTreeMap::new();
        let mut running = 0;
        for (id, parts) in by_replay {
            let ended: Option<Vec<i64>> = parts.iter().map(|p| p.ended_at_ms()).collect();
            let finished_at = ended.and_then(|times| times.into_iter().max());
            if !metrics::exported(finished_at, now, metrics::LINGER) {
                continue;
            }
            running += parts.iter().filter(|p| !p.is_final()).count();
            let replay: &mut ReplaySeries = series.entry((id, self.worker_id.clone())).or_default();
            parts.iter().for_each(|p| replay.add(&p.snapshot()));
        }
        let mut families = vec![
            Family::gauge("worker_parts_running", "Replay parts running on this worker.")
                .single(Value::Gauge(running as f64)),
        ];
        families.extend(metrics::replay_families(Exporter::Worker, &series));
        metrics::render(families, format)
    }

    /// Stops every active replay that no controller has named for the grace period, and
    /// forgets replays that ended long ago. Runs until the process ends.
    pub async fn watchdog(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            let now_ms = reprise_store::now_ms();
            for replay in self.active() {
                replay.stop_if_unheard(now_ms);
            }
            let now_ns = reprise_store::now_ns();
            let ended_long_ago = |r: &Arc<Replay>| {
                r.is_final() && now_ns - r.subscribe().borrow().at_unix_ns > KEEP_FINISHED.as_nanos() as i64
            };
            // A replay with no part yet is being prepared.
            self.replays
                .lock()
                .expect("lock")
                .retain(|_, h| h.parts.is_empty() || !h.parts.values().all(ended_long_ago));
        }
    }

    /// Stops sending everything and gives the rest back (the worker shuts down); returns
    /// the parts stopped, whose final reports follow once their sends have finished.
    pub fn release_all(&self) -> Vec<Arc<Replay>> {
        let active = self.active();
        for replay in &active {
            replay.release();
        }
        active
    }

    /// Prepares a new part of a replay, or returns the one held: a retried Assign.
    async fn prepare(&self, assignment: AssignRequest) -> Result<Arc<Replay>, Status> {
        let (id, part) = (assignment.replay_id.clone(), assignment.part);
        // An Assign comes from a controller and carries no sending time: it counts as now.
        let existing = self.heard(&id, reprise_store::now_ms()).ok();
        if let Some(held) = existing.iter().flatten().find(|r| r.part == part) {
            return if held.assignment.shares == assignment.shares {
                Ok(held.clone())
            } else {
                Err(Status::already_exists(format!(
                    "replay {id} part {part} is already assigned here with other shares"
                )))
            };
        }
        let liveness = {
            let mut replays = self.replays.lock().expect("lock");
            let held = replays
                .entry(id.clone())
                .or_insert_with(|| Held { parts: BTreeMap::new(), liveness: Liveness::new(self.grace) });
            held.liveness.clone()
        };
        let replay =
            Replay::prepare(&self.worker_id, assignment, self.host, liveness.clone()).await.map_err(|e| match e {
                ReplayError::Invalid(_) => Status::invalid_argument(e.to_string()),
                ReplayError::Log(_) => Status::unavailable(e.to_string()),
            });
        let mut replays = self.replays.lock().expect("lock");
        let held = replays.entry(id.clone()).or_insert_with(|| Held { parts: BTreeMap::new(), liveness });
        match replay {
            // A concurrent identical Assign may have won the race: keep the first.
            Ok(replay) => Ok(held.parts.entry(part).or_insert(replay).clone()),
            Err(e) => {
                if held.parts.is_empty() {
                    replays.remove(&id);
                }
                Err(e)
            }
        }
    }
}

type StatsStream = Pin<Box<dyn Stream<Item = Result<WorkerStats, Status>> + Send>>;

#[tonic::async_trait]
impl WorkerRpc for WorkerService {
    async fn assign(&self, request: Request<AssignRequest>) -> Result<Response<AssignResponse>, Status> {
        let assignment = request.into_inner();
        check_protocol(assignment.protocol_version, "controller", "worker")?;
        let start_at = (assignment.part > 0).then_some(assignment.start_at_unix_ns);
        let replay = self.prepare(assignment).await?;
        // A takeover joins a running replay: it starts at once, on the replay's timeline.
        if let Some(start_at) = start_at {
            replay.start(start_at);
        }
        let shares = replay.assignment.shares.len();
        tracing::info!(replay = %replay.id, part = replay.part, shares, records = replay.planned_records, "assigned");
        Ok(Response::new(AssignResponse {
            protocol_version: PROTOCOL_VERSION,
            worker_id: self.worker_id.clone(),
            planned_records: replay.planned_records,
        }))
    }

    async fn start(&self, request: Request<StartRequest>) -> Result<Response<StartResponse>, Status> {
        let request = request.into_inner();
        let replay = self.heard_part(&request.replay_id, 0, 0)?;
        replay.start(request.start_at_unix_ns);
        Ok(Response::new(StartResponse {}))
    }

    async fn control(&self, request: Request<ControlRequest>) -> Result<Response<ControlResponse>, Status> {
        let request = request.into_inner();
        let parts = self.heard(&request.replay_id, request.sent_at_unix_ms)?;
        for replay in parts {
            match request.action() {
                ControlAction::Pause => replay.pause(true),
                ControlAction::Resume => replay.pause(false),
                ControlAction::Cancel => replay.cancel(None),
                ControlAction::Unspecified => return Err(Status::invalid_argument("no control action given")),
            }
        }
        Ok(Response::new(ControlResponse {}))
    }

    type StatsStream = StatsStream;

    async fn stats(&self, request: Request<StatsRequest>) -> Result<Response<Self::StatsStream>, Status> {
        let request = request.into_inner();
        let replay = self.heard_part(&request.replay_id, request.part, request.sent_at_unix_ms)?;
        // Every report up to and including the final one.
        let reports = reprise_proto::until_final(WatchStream::new(replay.subscribe()));
        Ok(Response::new(Box::pin(reports.map(Ok))))
    }

    async fn heartbeat(&self, request: Request<HeartbeatRequest>) -> Result<Response<HeartbeatResponse>, Status> {
        let request = request.into_inner();
        let sent_at = request.sent_at_unix_ms;
        let unknown_replay_ids = request.replay_ids.into_iter().filter(|id| self.heard(id, sent_at).is_err()).collect();
        Ok(Response::new(HeartbeatResponse { worker_id: self.worker_id.clone(), unknown_replay_ids }))
    }
}
