//! The controller's gRPC service for `ctl`.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use reprise_proto::PROTOCOL_VERSION;
use reprise_proto::v1::controller_server::Controller as ControllerRpc;
use reprise_proto::v1::{
    ControlAction, ControlReplayRequest, CutRecordingRequest, HelloRequest, HelloResponse, JsonList, ListRequest,
    RecordingReply, ReplayRef, ReplayReply, StartRecordingRequest, StartReplayRequest, StopRecordingRequest,
};
use reprise_store::schema::{Recording, WorkerInfo};
use tokio::sync::broadcast::error::RecvError;
use tonic::{Request, Response, Status};

use crate::recordings::RecordingError;
use crate::replays::{Pacing, ReplayError, ReplaySpec};
use crate::state::ControllerState;

pub struct ControllerService {
    pub state: Arc<ControllerState>,
}

fn check_protocol(version: u32) -> Result<(), Status> {
    if version == PROTOCOL_VERSION {
        Ok(())
    } else {
        Err(Status::failed_precondition(format!(
            "protocol version mismatch: ctl speaks {version}, this controller speaks {PROTOCOL_VERSION}; use matching versions"
        )))
    }
}

fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("serialisable")
}

impl From<RecordingError> for Status {
    fn from(e: RecordingError) -> Self {
        match e {
            RecordingError::NotFound(_) => Status::not_found(e.to_string()),
            RecordingError::AlreadyStopped(_) | RecordingError::Conflict(_) => {
                Status::failed_precondition(e.to_string())
            }
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
            ReplayError::Recording(inner) => inner.into(),
            ReplayError::Catalog(_) => Status::unavailable(e.to_string()),
        }
    }
}

type ReplayStream = Pin<Box<dyn Stream<Item = Result<ReplayReply, Status>> + Send>>;

#[tonic::async_trait]
impl ControllerRpc for ControllerService {
    async fn hello(&self, request: Request<HelloRequest>) -> Result<Response<HelloResponse>, Status> {
        check_protocol(request.into_inner().protocol_version)?;
        Ok(Response::new(HelloResponse {
            protocol_version: PROTOCOL_VERSION,
            controller_id: self.state.controller_id.clone(),
            version: env!("CARGO_PKG_VERSION").into(),
        }))
    }

    async fn start_recording(
        &self,
        request: Request<StartRecordingRequest>,
    ) -> Result<Response<RecordingReply>, Status> {
        let request = request.into_inner();
        check_protocol(request.protocol_version)?;
        if request.name.trim().is_empty() {
            return Err(Status::invalid_argument("a recording needs a --name"));
        }
        let recording = self.state.recordings.start(&request.name, request.labels.into_iter().collect()).await?;
        Ok(Response::new(RecordingReply { json: json(&recording) }))
    }

    async fn stop_recording(&self, request: Request<StopRecordingRequest>) -> Result<Response<RecordingReply>, Status> {
        let recording = self.state.recordings.stop(&request.into_inner().id).await?;
        Ok(Response::new(RecordingReply { json: json(&recording) }))
    }

    async fn cut_recording(&self, request: Request<CutRecordingRequest>) -> Result<Response<RecordingReply>, Status> {
        let request = request.into_inner();
        check_protocol(request.protocol_version)?;
        let labels = request.labels.into_iter().collect();
        let recording =
            self.state.recordings.cut(&request.name, labels, request.from_unix_ms, request.to_unix_ms).await?;
        Ok(Response::new(RecordingReply { json: json(&recording) }))
    }

    async fn list_recordings(&self, _: Request<ListRequest>) -> Result<Response<JsonList>, Status> {
        let items = self.state.catalog.list::<Recording>().await.map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(Response::new(JsonList { items: items.iter().map(|s| json(&s.value)).collect() }))
    }

    async fn list_workers(&self, _: Request<ListRequest>) -> Result<Response<JsonList>, Status> {
        let items = self.state.catalog.list::<WorkerInfo>().await.map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(Response::new(JsonList { items: items.iter().map(|s| json(&s.value)).collect() }))
    }

    async fn start_replay(&self, request: Request<StartReplayRequest>) -> Result<Response<ReplayReply>, Status> {
        let r = request.into_inner();
        check_protocol(r.protocol_version)?;
        let pacing = match r.pacing {
            1 => Pacing::Original,
            2 => Pacing::Max,
            3 => Pacing::Constant,
            other => return Err(Status::invalid_argument(format!("unknown pacing mode {other}"))),
        };
        let spec = ReplaySpec {
            recording_id: r.recording_id,
            target: r.target,
            multiple: r.multiple,
            speed: r.speed,
            pacing,
            rate_per_sec: r.rate_per_sec,
            workers: r.workers,
            worker_labels: r.worker_labels.into_iter().collect(),
            max_in_flight: r.max_in_flight,
            request_timeout_ms: r.request_timeout_ms,
            keep_host: r.keep_host,
            http2: r.http2,
            dry_run: r.dry_run,
            insecure_tls: r.insecure_tls,
        };
        let status = self.state.replays.start(spec).await?;
        Ok(Response::new(ReplayReply { json: json(&status) }))
    }

    async fn get_replay(&self, request: Request<ReplayRef>) -> Result<Response<ReplayReply>, Status> {
        let status = self.state.replays.status(&request.into_inner().id).await?;
        Ok(Response::new(ReplayReply { json: json(&status) }))
    }

    async fn list_replays(&self, _: Request<ListRequest>) -> Result<Response<JsonList>, Status> {
        let list = self.state.replays.list().await?;
        Ok(Response::new(JsonList { items: list.iter().map(json).collect() }))
    }

    async fn control_replay(&self, request: Request<ControlReplayRequest>) -> Result<Response<ReplayReply>, Status> {
        let request = request.into_inner();
        let action = ControlAction::try_from(request.action)
            .ok()
            .filter(|a| *a != ControlAction::Unspecified)
            .ok_or_else(|| Status::invalid_argument("unknown control action"))?;
        let status = self.state.replays.control(&request.id, action).await?;
        Ok(Response::new(ReplayReply { json: json(&status) }))
    }

    type WatchReplayStream = ReplayStream;

    async fn watch_replay(&self, request: Request<ReplayRef>) -> Result<Response<Self::WatchReplayStream>, Status> {
        let id = request.into_inner().id;
        let replays = self.state.replays.clone();
        // Subscribe before reading the status, so that no event falls in between.
        let mut events = replays.live(&id).map(|l| l.subscribe());
        let first = replays.status(&id).await?;
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            let ended = first.state.is_final();
            if tx.send(Ok(ReplayReply { json: json(&first) })).await.is_err() || ended {
                return;
            }
            let Some(events) = events.as_mut() else { return };
            loop {
                match events.recv().await {
                    Ok(event) => {
                        let last = event.status.state.is_final();
                        if tx.send(Ok(ReplayReply { json: json(&event.status) })).await.is_err() || last {
                            return;
                        }
                    }
                    Err(RecvError::Lagged(_)) => continue,
                    Err(RecvError::Closed) => return,
                }
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }
}
