//! Taking over the replays that a stopped controller left unfinished in the catalog (a
//! restart, or a new leader): the catalog has each one's spec and plan, and the workers
//! keep cumulative stats, so following them again gives complete counts.

use std::sync::Arc;

use reprise_proto::v1::{ControlAction, ReplayState};
use reprise_store::now_ms;
use reprise_store::schema::Replay;

use super::{LiveReplay, ReplayError, ReplayManager, stored};

impl ReplayManager {
    /// Follows every unfinished replay of the catalog that is not followed here yet. A
    /// replay that never started cannot be resumed: it is failed, with the reason. Returns
    /// how many replays were taken over.
    pub async fn resume_all(self: &Arc<Self>) -> Result<usize, ReplayError> {
        let mut resumed = 0;
        for stored in self.catalog.list::<Replay>().await? {
            let replay = stored.value;
            if replay.state.is_final() || self.live(&replay.id).is_some() {
                continue;
            }
            let (spec, plan) = stored::parts(&replay);
            let addresses: Vec<String> = plan.workers.iter().map(|w| w.address.clone()).collect();
            if replay.state == ReplayState::Planning || plan.start_at_unix_ns == 0 {
                self.clients.control_all(&replay.id, &addresses, ControlAction::Cancel).await;
                self.fail_unstarted(replay).await?;
                continue;
            }
            tracing::info!(replay = %replay.id, workers = plan.workers.len(), "taking over the replay");
            let cancelling = replay.cancel_requested;
            let live = LiveReplay::new(replay, spec, plan);
            self.live.lock().expect("lock").insert(live.id(), live.clone());
            self.follow_all(&live);
            if cancelling {
                self.clients.control_all(&live.id(), &addresses, ControlAction::Cancel).await;
            }
            resumed += 1;
        }
        Ok(resumed)
    }

    async fn fail_unstarted(&self, mut replay: Replay) -> Result<(), ReplayError> {
        let reason = "the controller that planned this replay stopped before it started; nothing was sent";
        tracing::warn!(replay = %replay.id, "{reason}");
        replay.state = ReplayState::Failed;
        replay.error = Some(reason.into());
        replay.finished_at_ms = Some(now_ms());
        self.catalog.put(&replay).await?;
        Ok(())
    }
}
