//! The controller's gRPC service for `ctl`.

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use reprise_proto::v1::controller_server::Controller as ControllerRpc;
use reprise_proto::v1::{
    CaptureList, ControlAction, ControlReplayRequest, CutRecordingRequest, HelloRequest, HelloResponse, ListRequest,
    Recording, RecordingList, RecordingRef, ReplayEvent, ReplayList, ReplayPlanView, ReplayRef, ReplayStatus,
    StartRecordingRequest, StartReplayRequest, StopRecordingRequest, WorkerList,
};
use reprise_proto::{PROTOCOL_VERSION, check_protocol};
use reprise_store::schema::{CaptureInfo, WorkerInfo};
use reprise_store::{Catalog, CatalogError, schema::Entity};
use tonic::{Request, Response, Status};

use crate::recordings::RecordingError;
use crate::replays::{ReplayError, ReplaySpec};
use crate::state::ControllerState;

pub struct ControllerService {
    pub state: Arc<ControllerState>,
}

/// Lets a call through if it presents the controller's token (when it has one).
pub fn authorize(state: &ControllerState, request: Request<()>) -> Result<Request<()>, Status> {
    let presented = request.metadata().get("authorization").and_then(|v| v.to_str().ok());
    state.authorize(presented).map_err(Status::unauthenticated)?;
    Ok(request)
}

/// Refuses a ctl of another protocol version.
fn check_ctl(version: u32) -> Result<(), Status> {
    check_protocol(version, "ctl", "controller")
}

impl ControllerService {
    /// Changes are the leader's: a standby refuses them and says who leads.
    async fn require_leader(&self) -> Result<(), Status> {
        match self.state.election.standby_refusal().await.map_err(unavailable)? {
            None => Ok(()),
            Some(refusal) => Err(Status::failed_precondition(refusal)),
        }
    }
}

/// Every document of one catalog collection.
pub async fn list_all<T: Entity>(catalog: &Catalog) -> Result<Vec<T>, CatalogError> {
    Ok(catalog.list::<T>().await?.into_iter().map(|stored| stored.value).collect())
}

impl From<RecordingError> for Status {
    fn from(e: RecordingError) -> Self {
        match e {
            RecordingError::NotFound(_) => Status::not_found(e.to_string()),
            RecordingError::AlreadyStopped(_)
            | RecordingError::Conflict(_)
            | RecordingError::StillRecording(_)
            | RecordingError::InUse { .. } => Status::failed_precondition(e.to_string()),
            RecordingError::BadWindow(_) => Status::invalid_argument(e.to_string()),
            RecordingError::Log(_) | RecordingError::Catalog(_) => Status::unavailable(e.to_string()),
        }
    }
}

impl From<ReplayError> for Status {
    fn from(e: ReplayError) -> Self {
        match e {
            ReplayError::Invalid(_) => Status::invalid_argument(e.to_string()),
            ReplayError::UnknownRecording(_) | ReplayError::UnknownReplay(_) => Status::not_found(e.to_string()),
            ReplayError::StillRecording(_)
            | ReplayError::Expired { .. }
            | ReplayError::EmptyRecording(_)
            | ReplayError::NoWorkers(_)
            | ReplayError::Ended(_) => Status::failed_precondition(e.to_string()),
            ReplayError::WorkerRefused { .. } => Status::aborted(e.to_string()),
            ReplayError::TargetNotAllowed(_) => Status::permission_denied(e.to_string()),
            ReplayError::Recording(inner) => inner.into(),
            ReplayError::Catalog(_) | ReplayError::Log(_) => Status::unavailable(e.to_string()),
        }
    }
}

type ReplayEvents = Pin<Box<dyn Stream<Item = Result<ReplayEvent, Status>> + Send>>;

fn unavailable(e: CatalogError) -> Status {
    Status::unavailable(e.to_string())
}

#[tonic::async_trait]
impl ControllerRpc for ControllerService {
    async fn hello(&self, request: Request<HelloRequest>) -> Result<Response<HelloResponse>, Status> {
        check_ctl(request.into_inner().protocol_version)?;
        let election = &self.state.election;
        let leader = election.leader().await.map_err(unavailable)?;
        Ok(Response::new(HelloResponse {
            protocol_version: PROTOCOL_VERSION,
            controller_id: self.state.controller_id.clone(),
            version: env!("CARGO_PKG_VERSION").into(),
            leader: election.is_leader(),
            leader_id: leader.as_ref().map(|l| l.id.clone()).unwrap_or_default(),
            leader_address: leader.map(|l| l.grpc).unwrap_or_default(),
        }))
    }

    async fn start_recording(&self, request: Request<StartRecordingRequest>) -> Result<Response<Recording>, Status> {
        self.require_leader().await?;
        let request = request.into_inner();
        check_ctl(request.protocol_version)?;
        if request.name.trim().is_empty() {
            return Err(Status::invalid_argument("a recording needs a --name"));
        }
        Ok(Response::new(self.state.recordings.start(&request.name, request.labels).await?))
    }

    async fn stop_recording(&self, request: Request<StopRecordingRequest>) -> Result<Response<Recording>, Status> {
        self.require_leader().await?;
        Ok(Response::new(self.state.recordings.stop(&request.into_inner().id).await?))
    }

    async fn cut_recording(&self, request: Request<CutRecordingRequest>) -> Result<Response<Recording>, Status> {
        self.require_leader().await?;
        let request = request.into_inner();
        check_ctl(request.protocol_version)?;
        let (from, to) = (request.from_unix_ms, request.to_unix_ms);
        Ok(Response::new(self.state.recordings.cut(&request.name, request.labels, from, to).await?))
    }

    async fn list_recordings(&self, _: Request<ListRequest>) -> Result<Response<RecordingList>, Status> {
        let recordings = list_all(&self.state.catalog).await.map_err(unavailable)?;
        Ok(Response::new(RecordingList { recordings }))
    }

    async fn delete_recording(&self, request: Request<RecordingRef>) -> Result<Response<Recording>, Status> {
        self.require_leader().await?;
        let id = request.into_inner().id;
        let replays = self.state.replays.list().await?;
        let using: Vec<String> =
            replays.into_iter().filter(|r| r.recording_id == id && !r.state().is_final()).map(|r| r.id).collect();
        Ok(Response::new(self.state.recordings.delete(&id, &using).await?))
    }

    async fn list_workers(&self, _: Request<ListRequest>) -> Result<Response<WorkerList>, Status> {
        let workers: Vec<WorkerInfo> = list_all(&self.state.catalog).await.map_err(unavailable)?;
        Ok(Response::new(WorkerList { workers }))
    }

    async fn list_captures(&self, _: Request<ListRequest>) -> Result<Response<CaptureList>, Status> {
        let captures: Vec<CaptureInfo> = list_all(&self.state.catalog).await.map_err(unavailable)?;
        Ok(Response::new(CaptureList { captures }))
    }

    async fn start_replay(&self, request: Request<StartReplayRequest>) -> Result<Response<ReplayStatus>, Status> {
        self.require_leader().await?;
        let request = request.into_inner();
        check_ctl(request.protocol_version)?;
        let spec = ReplaySpec::try_from(request)?;
        Ok(Response::new(self.state.replays.start(spec).await?))
    }

    async fn plan_replay(&self, request: Request<StartReplayRequest>) -> Result<Response<ReplayPlanView>, Status> {
        let request = request.into_inner();
        check_ctl(request.protocol_version)?;
        let spec = ReplaySpec::try_from(request)?;
        Ok(Response::new(self.state.replays.dry_run(&spec).await?))
    }

    async fn get_replay(&self, request: Request<ReplayRef>) -> Result<Response<ReplayStatus>, Status> {
        Ok(Response::new(self.state.replays.status(&request.into_inner().id).await?))
    }

    async fn list_replays(&self, _: Request<ListRequest>) -> Result<Response<ReplayList>, Status> {
        Ok(Response::new(ReplayList { replays: self.state.replays.list().await? }))
    }

    async fn control_replay(&self, request: Request<ControlReplayRequest>) -> Result<Response<ReplayStatus>, Status> {
        self.require_leader().await?;
        let request = request.into_inner();
        let action = ControlAction::try_from(request.action)
            .ok()
            .filter(|a| *a != ControlAction::Unspecified)
            .ok_or_else(|| Status::invalid_argument("unknown control action"))?;
        Ok(Response::new(self.state.replays.control(&request.id, action).await?))
    }

    type WatchReplayStream = ReplayEvents;

    async fn watch_replay(&self, request: Request<ReplayRef>) -> Result<Response<Self::WatchReplayStream>, Status> {
        let events = self.state.replays.watch(&request.into_inner().id).await?;
        Ok(Response::new(Box::pin(events.map(Ok))))
    }
}
