//! Starting a replay, step by step: check the recording, pick the workers, plan, store,
//! assign every share (prepare), then start everyone on one instant a little ahead.

use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use reprise_proto::PROTOCOL_VERSION;
use reprise_proto::v1::{AssignRequest, ControlAction, PartitionShare, ReplayState, ReplayStatus, StartRequest};
use reprise_store::schema::{Recording, RecordingState, Replay, WorkerInfo};
use reprise_store::{now_ms, now_ns};

use super::stored::{self, ReplayPlan};
use super::{CALL_TIMEOUT, LiveReplay, ReplayError, ReplayManager, ReplaySpec};
use crate::allow::NO_ALLOW_LIST;
use crate::planner::{self, Candidate, WorkerPlan};
use crate::recordings::new_id;

/// How long a worker may take to accept its share.
pub(super) const ASSIGN_TIMEOUT: Duration = Duration::from_secs(30);

impl ReplayManager {
    /// Plans, assigns and starts a replay; returns once every worker has its start time.
    pub async fn start(self: &Arc<Self>, spec: ReplaySpec) -> Result<ReplayStatus, ReplayError> {
        let (recording, mut plan) = self.plan(&spec).await?;
        let mut replay = Replay {
            id: new_id("rep"),
            recording_id: recording.id.clone(),
            target: spec.options.target.clone(),
            state: ReplayState::Planning,
            options: Default::default(),
            plan: Default::default(),
            summary: Default::default(),
            error: None,
            created_at_ms: now_ms(),
            started_at_ms: None,
            finished_at_ms: None,
            cancel_requested: false,
        };
        stored::set_parts(&mut replay, &spec, &plan);
        self.catalog.put(&replay).await?;

        if let Err(error) = self.assign_all(&replay.id, &spec, &plan).await {
            return self.abort(replay, &plan, error).await;
        }
        plan.start_at_unix_ns = now_ns() + self.start_lead.as_nanos() as i64;
        if let Err(error) = self.start_all(&replay.id, &plan).await {
            return self.abort(replay, &plan, error).await;
        }
        replay.state = ReplayState::Running;
        replay.started_at_ms = Some(plan.start_at_unix_ns / 1_000_000);
        stored::set_parts(&mut replay, &spec, &plan);
        self.catalog.put(&replay).await?;

        tracing::info!(replay = %replay.id, workers = plan.workers.len(), records = plan.records, "replay started");
        let live = LiveReplay::new(replay, spec, plan);
        self.live.lock().expect("lock").insert(live.id(), live.clone());
        self.follow_all(&live);
        Ok(live.status())
    }

    /// Everything a start decides before it acts: the target is allowed, the recording
    /// can be replayed whole, the workers, and the plan.
    pub(super) async fn plan(&self, spec: &ReplaySpec) -> Result<(Recording, ReplayPlan), ReplayError> {
        self.allowed.check(&spec.options.target).map_err(ReplayError::TargetNotAllowed)?;
        // An A/B replay's other sides receive the same traffic: the same list holds.
        if let Some(diff) = &spec.options.diff {
            for side in [&diff.candidate, &diff.baseline].into_iter().filter(|url| !url.is_empty()) {
                self.allowed.check(side).map_err(ReplayError::TargetNotAllowed)?;
            }
        }
        let recording = self.replayable_recording(&spec.recording_id).await?;
        let candidates = self.pick_workers(spec).await?;
        let origin_ns = recording.first_timestamp_ns.unwrap_or(0);
        let mut plan = ReplayPlan {
            start_at_unix_ns: 0,
            origin_ns,
            span_ns: recording.last_timestamp_ns.unwrap_or(origin_ns) - origin_ns,
            records: recording.record_count,
            log_url: recording.log_url.clone(),
            workers: planner::plan(&recording.ranges, &candidates, spec.split()),
            warnings: self.allowed.is_empty().then(|| NO_ALLOW_LIST.to_string()).into_iter().collect(),
        };
        let passes = u64::from(spec.passes().unwrap_or(1));
        for part in &mut plan.workers {
            part.records *= passes;
        }
        Ok((recording, plan))
    }

    /// The recording, if it can be replayed whole.
    async fn replayable_recording(&self, id: &str) -> Result<Recording, ReplayError> {
        let stored = self.catalog.get::<Recording>(id).await?;
        let mut recording = stored.ok_or_else(|| ReplayError::UnknownRecording(id.to_string()))?.value;
        if recording.state() == RecordingState::Recording {
            return Err(ReplayError::StillRecording(recording.id));
        }
        if recording.state() == RecordingState::Complete {
            self.recordings.check_retention(&mut recording).await?;
        }
        if recording.state() == RecordingState::Expired {
            return Err(ReplayError::Expired { id: recording.id, missing: recording.missing_records });
        }
        if recording.record_count == 0 {
            return Err(ReplayError::EmptyRecording(recording.id));
        }
        Ok(recording)
    }

    /// The live workers a replay of `spec` may use (labels and protocol), by id.
    pub(super) async fn matching_workers(&self, spec: &ReplaySpec) -> Result<Vec<Candidate>, ReplayError> {
        Ok(self.matching(spec).await?.2)
    }

    /// Live workers, those with the spec's labels, and those of them that also speak
    /// this protocol (by id).
    async fn matching(&self, spec: &ReplaySpec) -> Result<(usize, usize, Vec<Candidate>), ReplayError> {
        let mut workers: Vec<WorkerInfo> =
            self.catalog.list::<WorkerInfo>().await?.into_iter().map(|s| s.value).collect();
        let live = workers.len();
        workers.retain(|w| spec.worker_labels.iter().all(|(k, v)| w.labels.get(k) == Some(v)));
        let labelled = workers.len();
        workers.retain(|w| w.protocol_version == PROTOCOL_VERSION);
        workers.sort_by(|a, b| a.id.cmp(&b.id));
        let candidates =
            workers.into_iter().map(|w| Candidate { id: w.id, address: w.address, grace_ms: w.controller_grace_ms });
        Ok((live, labelled, candidates.collect()))
    }

    async fn pick_workers(&self, spec: &ReplaySpec) -> Result<Vec<Candidate>, ReplayError> {
        let (live, labelled, mut workers) = self.matching(spec).await?;
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
        if spec.workers > 0 {
            workers.truncate(spec.workers as usize);
        }
        Ok(workers)
    }

    /// Prepare: every worker acknowledges its share before anyone starts.
    async fn assign_all(&self, replay_id: &str, spec: &ReplaySpec, plan: &ReplayPlan) -> Result<(), ReplayError> {
        let assigns = plan.workers.iter().map(|worker| {
            let request = self.assign_request(replay_id, spec, plan, worker);
            let client = self.clients.get(&worker.address);
            async move {
                let mut client = client.map_err(|reason| refused(worker, reason))?;
                bounded(worker, ASSIGN_TIMEOUT, client.assign(request)).await
            }
        });
        join_all(assigns).await.into_iter().collect()
    }

    /// The Assign of one part.
    pub(super) fn assign_request(
        &self,
        replay_id: &str,
        spec: &ReplaySpec,
        plan: &ReplayPlan,
        part: &WorkerPlan,
    ) -> AssignRequest {
        AssignRequest {
            protocol_version: PROTOCOL_VERSION,
            replay_id: replay_id.to_string(),
            controller_id: self.controller_id.clone(),
            log_url: plan.log_url.clone(),
            shares: (0..part.shares.len()).map(|i| share(part, i)).collect(),
            options: Some(spec.worker_options(part.records, plan.records * u64::from(spec.passes().unwrap_or(1)))),
            origin_ns: plan.origin_ns,
            recording_records: plan.records,
            part: part.part,
            start_at_unix_ns: 0,
            pass_period_ns: plan.pass_period_ns(),
        }
    }

    /// Start: one instant, a little ahead, for everyone.
    async fn start_all(&self, replay_id: &str, plan: &ReplayPlan) -> Result<(), ReplayError> {
        let starts = plan.workers.iter().map(|worker| {
            let request = StartRequest { replay_id: replay_id.to_string(), start_at_unix_ns: plan.start_at_unix_ns };
            let client = self.clients.get(&worker.address);
            async move {
                let mut client = client.map_err(|reason| refused(worker, reason))?;
                bounded(worker, CALL_TIMEOUT, client.start(request)).await
            }
        });
        join_all(starts).await.into_iter().collect()
    }

    /// A replay that could not start: the workers drop it, and it is stored as failed.
    async fn abort(
        &self,
        mut replay: Replay,
        plan: &ReplayPlan,
        error: ReplayError,
    ) -> Result<ReplayStatus, ReplayError> {
        let addresses: Vec<String> = plan.workers.iter().map(|w| w.address.clone()).collect();
        self.clients.control_all(&replay.id, &addresses, ControlAction::Cancel).await;
        replay.state = ReplayState::Failed;
        replay.error = Some(error.to_string());
        replay.finished_at_ms = Some(now_ms());
        self.catalog.put(&replay).await?;
        Err(error)
    }
}

/// One call to a worker, bounded by `limit`; a refusal or silence names the worker.
async fn bounded<T>(
    worker: &WorkerPlan,
    limit: Duration,
    call: impl std::future::Future<Output = Result<T, tonic::Status>>,
) -> Result<(), ReplayError> {
    match tokio::time::timeout(limit, call).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(status)) => Err(refused(worker, reprise_proto::error_causes(&status))),
        Err(_) => Err(refused(worker, format!("no answer within {} s", limit.as_secs()))),
    }
}

fn refused(worker: &WorkerPlan, reason: String) -> ReplayError {
    ReplayError::WorkerRefused { worker: worker.worker_id.clone(), address: worker.address.clone(), reason }
}

/// Share `i` of `part` as a worker gets it: where the part picks it up included.
fn share(part: &WorkerPlan, i: usize) -> PartitionShare {
    let from = part.start_of(i);
    PartitionShare { first_pass: from.pass, resume_offset: from.offset, ..PartitionShare::from(part.shares[i]) }
}
