//! The stats API: JSON, a live event stream (SSE), Prometheus metrics and the dashboard.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use futures::{Stream, StreamExt};
use reprise_proto::v1::{ControlAction, Ledger};
use reprise_store::schema::{CaptureInfo, Recording, WorkerInfo};

use crate::grpc::list_all;
use crate::replays::ReplayError;
use crate::state::ControllerState;

const DASHBOARD: &str = include_str!("dashboard.html");

/// The API under the token (when the controller has one); the dashboard's page (it asks
/// for the token), /metrics and /healthz open.
pub fn router(state: Arc<ControllerState>) -> Router {
    Router::new()
        .route("/api/replays", get(replays))
        .route("/api/replays/{id}", get(replay))
        .route("/api/replays/{id}/timeline", get(timeline))
        .route("/api/replays/{id}/diff", get(diff))
        .route("/api/replays/{id}/events", get(events))
        .route("/api/replays/{id}/{action}", post(control))
        .route("/api/workers", get(workers))
        .route("/api/recordings", get(recordings))
        .route("/api/captures", get(captures))
        .route("/api/leader", get(leader))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), require_token))
        .route("/", get(|| async { Html(DASHBOARD) }))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(state)
}

async fn require_token(
    State(state): State<Arc<ControllerState>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let presented = request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    match state.authorize(presented) {
        Ok(()) => next.run(request).await,
        Err(refusal) => {
            let mut response = ApiError(StatusCode::UNAUTHORIZED, refusal.to_string()).into_response();
            response.headers_mut().insert(header::WWW_AUTHENTICATE, http::HeaderValue::from_static("Bearer"));
            response
        }
    }
}

struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, axum::Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

impl From<ReplayError> for ApiError {
    fn from(e: ReplayError) -> Self {
        let code = match e {
            ReplayError::UnknownReplay(_) | ReplayError::UnknownRecording(_) => StatusCode::NOT_FOUND,
            ReplayError::Ended(_) => StatusCode::CONFLICT,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError(code, e.to_string())
    }
}

impl From<reprise_store::CatalogError> for ApiError {
    fn from(e: reprise_store::CatalogError) -> Self {
        ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
    }
}

type ApiResult = Result<Response, ApiError>;

fn json<T: serde::Serialize>(value: &T) -> Response {
    axum::Json(value).into_response()
}

async fn replays(State(state): State<Arc<ControllerState>>) -> ApiResult {
    Ok(json(&state.replays.list().await?))
}

async fn replay(State(state): State<Arc<ControllerState>>, Path(id): Path<String>) -> ApiResult {
    Ok(json(&state.replays.status(&id).await?))
}

/// An A/B replay's diff per endpoint, as `ctl diff --json` prints it.
async fn diff(State(state): State<Arc<ControllerState>>, Path(id): Path<String>) -> ApiResult {
    let status = state.replays.status(&id).await?;
    Ok(json(&serde_json::json!({ "replay": status.id, "endpoints": status.diffs })))
}

/// `POST /api/replays/{id}/pause|resume|cancel`, as `ctl pause|resume|cancel` does; only
/// the leader acts (a standby answers 503 naming it).
async fn control(
    State(state): State<Arc<ControllerState>>,
    Path((id, action)): Path<(String, String)>,
    headers: http::HeaderMap,
) -> ApiResult {
    // Without a token, a page elsewhere could post here from a user's browser: a browser
    // names the page's origin, which must then be this controller.
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok())
        && origin.split_once("://").map(|(_, rest)| rest) != host
    {
        return Err(ApiError(StatusCode::FORBIDDEN, format!("a page from {origin} may not control replays")));
    }
    let action = match action.as_str() {
        "pause" => ControlAction::Pause,
        "resume" => ControlAction::Resume,
        "cancel" => ControlAction::Cancel,
        other => {
            let message = format!("unknown action {other:?}: pause, resume or cancel");
            return Err(ApiError(StatusCode::NOT_FOUND, message));
        }
    };
    if let Some(refusal) = state.election.standby_refusal().await? {
        return Err(ApiError(StatusCode::SERVICE_UNAVAILABLE, refusal));
    }
    Ok(json(&state.replays.control(&id, action).await?))
}

async fn timeline(State(state): State<Arc<ControllerState>>, Path(id): Path<String>) -> ApiResult {
    match state.replays.live(&id) {
        Some(live) => Ok(json(&live.timeline())),
        // Known but not followed here (ended before this controller started): no timeline.
        None => state.replays.status(&id).await.map(|_| json(&Vec::<()>::new())).map_err(Into::into),
    }
}

async fn events(
    State(state): State<Arc<ControllerState>>,
    Path(id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let events = state.replays.watch(&id).await?;
    let events = events.map(|e| Ok(Event::default().event("status").data(serde_json::to_string(&e).expect("json"))));
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

async fn workers(State(state): State<Arc<ControllerState>>) -> ApiResult {
    Ok(json(&list_all::<WorkerInfo>(&state.catalog).await?))
}

/// The catalog's recordings, each with `missed`: what its capture missed, in ctl's words.
async fn recordings(State(state): State<Arc<ControllerState>>) -> ApiResult {
    let listed = list_all::<Recording>(&state.catalog).await?;
    let with_missed: Vec<serde_json::Value> = listed
        .iter()
        .map(|recording| {
            let mut value = serde_json::to_value(recording).expect("a recording is JSON");
            value["missed"] = recording.ledger.as_ref().map(Ledger::summary).into();
            value
        })
        .collect();
    Ok(json(&with_missed))
}

/// Which controller leads, and whether it is this one.
async fn leader(State(state): State<Arc<ControllerState>>) -> ApiResult {
    let election = &state.election;
    let leader = election.leader().await?;
    Ok(json(&serde_json::json!({ "this": election.me, "leading": election.is_leader(), "leader": leader })))
}

async fn captures(State(state): State<Arc<ControllerState>>) -> ApiResult {
    Ok(json(&list_all::<CaptureInfo>(&state.catalog).await?))
}

/// Prometheus metrics, built in `crate::metrics`, in the text format the scraper accepts.
async fn metrics(State(state): State<Arc<ControllerState>>, headers: http::HeaderMap) -> ApiResult {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let format = reprise_process::metrics::Format::negotiate(accept);
    let text = crate::metrics::render(&state, format).await?;
    Ok(([(header::CONTENT_TYPE, format.content_type())], text).into_response())
}
