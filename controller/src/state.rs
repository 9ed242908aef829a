//! What the controller's services share.

use std::sync::Arc;
use std::time::Duration;

use reprise_process::token::Token;
use reprise_store::Catalog;

use crate::election::Election;
use crate::recordings::Recordings;
use crate::replays::ReplayManager;

pub struct ControllerState {
    pub controller_id: String,
    pub catalog: Catalog,
    pub recordings: Arc<Recordings>,
    pub replays: Arc<ReplayManager>,
    pub election: Arc<Election>,
    /// What ctl and the HTTP API must present; `None`: anyone who reaches the ports.
    pub token: Option<Arc<Token>>,
    /// How long a finished replay's series stay on /metrics.
    pub metrics_linger: Duration,
}

impl ControllerState {
    /// Whether a call presenting `authorization` (the header, if any) may go on; the
    /// refusal is what the caller is told.
    pub fn authorize(&self, authorization: Option<&str>) -> Result<(), &'static str> {
        let Some(token) = &self.token else { return Ok(()) };
        match authorization {
            Some(presented) if token.accepts(presented) => Ok(()),
            Some(_) => Err("the controller refused the token"),
            None => Err("this controller needs a token: set REPRISE_TOKEN or pass --token-file"),
        }
    }
}
