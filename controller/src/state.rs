//! What the controller's services share.

use std::sync::Arc;

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
}
