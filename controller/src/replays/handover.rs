//! Worker failover: the ranges of a part whose worker was lost (or gave them back while
//! shutting down) go to the workers that are left, from the part's checkpoints on.
//!
//! Fencing: a lost worker may still be sending (frozen, cut off from the controller but
//! not from the target). It stops by itself once no controller has named the replay for
//! its grace period, counted from each call's sending time; from the moment it is lost
//! no call names the replay to it. So its ranges move only after that grace (plus a
//! margin for clocks), and what can be sent twice is what it sent past its last
//! checkpoints: the sends past them at its last report, plus what it sent after that
//! report. A worker reports once half `max_in_flight` sends went out, but not more often
//! than every 20 ms: so what follows a report is about the most sends seen between two
//! of its reports (at least half `max_in_flight`), plus half `max_in_flight` for the next
//! report's way here. A released part's final report is exact: it moves at once, and
//! only its sends past the checkpoints may repeat.
//!
//! Order: the new parts are stored in the plan before they are assigned, so a controller
//! that takes over mid-way follows them (and a part never assigned is soon lost and
//! handed over in turn).

use std::sync::Arc;

use futures::future::join_all;
use reprise_proto::v1::{AssignRequest, ControlAction, ReplayState};
use tokio::time::Instant;

use super::start::ASSIGN_TIMEOUT;
use super::{LiveReplay, ReplayManager};
use crate::planner::{self, Handover, PartKey, PartProgress, WorkerPlan};

impl ReplayManager {
    /// Hands over every part that is due (see the module's doc). Only a leader that can
    /// write its plan does it: a failed write leaves it for the next tick.
    pub(super) async fn hand_over_due(self: &Arc<Self>, live: &Arc<LiveReplay>) {
        if live.cancel_requested() || !self.confirmed.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        let due = live.tally.lock().expect("lock").due_handovers(Instant::now());
        for key in due {
            if let Err(error) = self.hand_over(live, &key).await {
                tracing::warn!(replay = %live.id(), part = %planner::part_name(&key.0, key.1), %error, "handover postponed");
            }
        }
    }

    async fn hand_over(self: &Arc<Self>, live: &Arc<LiveReplay>, key: &PartKey) -> Result<(), String> {
        let lost = live.plan.lock().expect("lock").workers.iter().find(|p| p.key() == *key).cloned();
        let lost = lost.ok_or("the part is not in the plan")?;
        let (fresh, released, departed, between_reports) = {
            let tally = live.tally.lock().expect("lock");
            (tally.progress(key), tally.is_released(key), tally.departed(), tally.most_sends_between_reports(key))
        };
        // The freshest checkpoints: the part's last report here, else the stored ones.
        let progress = fresh.or_else(|| lost.progress.clone()).unwrap_or_default();
        let passes = live.spec.passes();
        let remainder = lost.remainder(&progress, passes);
        let mut survivors = self.matching_workers(&live.spec).await.map_err(|e| e.to_string())?;
        survivors.retain(|w| !departed.contains(&w.id));
        if survivors.is_empty() && !remainder.is_empty() {
            let reason = "no live worker was left to take its ranges over".to_string();
            live.tally.lock().expect("lock").abandon(key, reason);
            return Ok(());
        }
        let parts = {
            let plan = live.plan.lock().expect("lock");
            let next_part = |worker: &str| {
                plan.workers.iter().filter(|p| p.worker_id == worker).map(|p| p.part + 1).max().unwrap_or(0)
            };
            planner::takeover(&remainder, passes, &survivors, next_part, live.spec.split())
        };
        let handover = Handover {
            to: parts.iter().map(WorkerPlan::name).collect(),
            records: parts.iter().map(|p| p.records).sum(),
            duplicates_bound: duplicates_bound(&progress, released, live.spec.options.max_in_flight, between_reports),
        };
        self.store_handover(live, key, &parts, &handover).await?;
        tracing::info!(
            replay = %live.id(), from = %lost.name(), to = ?handover.to, records = handover.records,
            duplicates_bound = handover.duplicates_bound, "ranges handed over"
        );
        live.tally.lock().expect("lock").handed_over(key, handover);
        join_all(parts.iter().map(|part| self.start_takeover(live, part))).await;
        Ok(())
    }

    /// Stores the new parts and the handover in the plan; nothing moves unless stored.
    async fn store_handover(
        &self,
        live: &Arc<LiveReplay>,
        key: &PartKey,
        parts: &[WorkerPlan],
        handover: &Handover,
    ) -> Result<(), String> {
        let mut plan = live.plan.lock().expect("lock").clone();
        for part in plan.workers.iter_mut().filter(|p| p.key() == *key) {
            part.handed_over = Some(handover.clone());
        }
        plan.workers.extend(parts.iter().cloned());
        self.catalog.put(&live.record_with(&plan)).await.map_err(|e| format!("cannot store the handover: {e}"))?;
        *live.plan.lock().expect("lock") = plan;
        let mut tally = live.tally.lock().expect("lock");
        for part in parts {
            tally.add_part(part);
        }
        Ok(())
    }

    /// Assigns a takeover part (it starts at once on the replay's timeline) and follows
    /// it; a paused replay pauses it too. A worker that does not take it is lost for it.
    async fn start_takeover(self: &Arc<Self>, live: &Arc<LiveReplay>, part: &WorkerPlan) {
        let (start_at, request) = {
            let plan = live.plan.lock().expect("lock");
            (plan.start_at_unix_ns, self.assign_request(&live.id(), &live.spec, &plan, part))
        };
        let request = AssignRequest { start_at_unix_ns: start_at, ..request };
        let assigned = match self.clients.get(&part.address) {
            Ok(mut client) => match tokio::time::timeout(ASSIGN_TIMEOUT, client.assign(request)).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(status)) => Err(status.message().to_string()),
                Err(_) => Err(format!("no answer within {} s", ASSIGN_TIMEOUT.as_secs())),
            },
            Err(error) => Err(error),
        };
        if let Err(error) = assigned {
            live.mark_lost(&part.worker_id, &format!("it did not take over {}: {error}", part.name()));
        }
        self.follow_part(live, part);
        if live.replay.lock().expect("lock").state == ReplayState::Paused {
            self.clients.control_all(&live.id(), std::slice::from_ref(&part.address), ControlAction::Pause).await;
        }
    }

    /// Stores each part's latest checkpoints in the plan (about once a second), so that
    /// a controller taking over resumes a lost part from there.
    pub(super) async fn store_progress(&self, live: &Arc<LiveReplay>) {
        let changed = {
            let mut plan = live.plan.lock().expect("lock");
            let tally = live.tally.lock().expect("lock");
            let mut changed = false;
            for part in plan.workers.iter_mut().filter(|p| p.handed_over.is_none()) {
                let progress = tally.progress(&part.key());
                if progress.is_some() && progress != part.progress {
                    part.progress = progress;
                    changed = true;
                }
            }
            changed
        };
        if changed && let Err(e) = self.catalog.put(&live.record()).await {
            tracing::warn!(replay = %live.id(), error = %e, "cannot store the replay's progress");
        }
    }
}

/// What a takeover from `progress` may send a second time: the sends past the
/// checkpoints, plus, for a lost worker, what it may have sent after its last report
/// (see the module's doc).
fn duplicates_bound(progress: &PartProgress, released: bool, max_in_flight: u32, between_reports: u64) -> u64 {
    let half = u64::from(max_in_flight).div_ceil(2);
    progress.sends_past + if released { 0 } else { half + between_reports.max(half) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_part_may_repeat_what_followed_its_last_report_and_a_released_one_does_not() {
        let progress = PartProgress { sends_past: 40, ..Default::default() };
        // Slow: reports every half max_in_flight, so one max_in_flight in all.
        assert_eq!(duplicates_bound(&progress, false, 256, 100), 40 + 128 + 128);
        // Fast: 5,000 sends between two reports spaced by time.
        assert_eq!(duplicates_bound(&progress, false, 256, 5_000), 40 + 128 + 5_000);
        assert_eq!(duplicates_bound(&progress, true, 256, 5_000), 40, "a released part's last report is exact");
    }
}
