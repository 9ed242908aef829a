//! Following a started replay: one stats stream per worker (re-attached after breaks), a
//! tick a second that closes a timeline point and tells the watchers, the heartbeat that
//! keeps the workers sending, and the end, stored with its summary.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use reprise_proto::v1::{HeartbeatRequest, StatsRequest};
use reprise_store::{now_ms, now_ns};
use tokio::time::Instant;

use super::{CALL_TIMEOUT, LiveReplay, ReplayManager};
use crate::planner::{PartKey, WorkerPlan};

/// How long a worker may be unreachable (or silent) before it counts as lost.
const LOST_AFTER: Duration = Duration::from_secs(5);
/// Seconds the summary of a finished replay is tried to be stored, once a second.
const STORE_SUMMARY_TRIES: u32 = 300;
/// Pause before re-attaching a broken stats stream.
const REATTACH_AFTER: Duration = Duration::from_millis(500);

impl ReplayManager {
    /// Follows every part of a replay that has just started (or was taken over), and
    /// ticks its timeline.
    pub(super) fn follow_all(self: &Arc<Self>, live: &Arc<LiveReplay>) {
        let parts: Vec<WorkerPlan> = live.plan.lock().expect("lock").workers.clone();
        for part in parts.iter().filter(|p| p.handed_over.is_none()) {
            self.follow_part(live, part);
        }
        self.spawn(self.clone().tick(live.clone()));
    }

    pub(super) fn follow_part(self: &Arc<Self>, live: &Arc<LiveReplay>, part: &WorkerPlan) {
        self.spawn(self.clone().follow(live.clone(), part.key(), part.address.clone()));
    }

    /// Follows one part's stats stream, re-attaching after breaks, until its final report
    /// or until its worker is lost (out of reach for [`LOST_AFTER`], or it does not hold
    /// the part).
    async fn follow(self: Arc<Self>, live: Arc<LiveReplay>, key: PartKey, address: String) {
        let replay_id = live.id();
        let mut unreachable_since: Option<Instant> = None;
        loop {
            let attempt = async {
                let mut client = self.clients.get(&address).map_err(|e| (false, e))?;
                let request = StatsRequest { replay_id: replay_id.clone(), part: key.1, sent_at_unix_ms: now_ms() };
                let mut stream = match client.stats(request).await {
                    Ok(stream) => stream.into_inner(),
                    Err(status) if status.code() == tonic::Code::NotFound => {
                        return Err((true, status.message().into()));
                    }
                    Err(status) => return Err((false, status.message().to_string())),
                };
                // A worker reports about once a second: silence this long is a break too.
                while let Some(report) = tokio::time::timeout(LOST_AFTER, stream.message())
                    .await
                    .map_err(|_| (false, format!("no report for {} s", LOST_AFTER.as_secs())))?
                    .map_err(|s| (false, s.message().to_string()))?
                {
                    unreachable_since = None;
                    if live.tally.lock().expect("lock").on_report(&key, report) {
                        return Ok(true);
                    }
                }
                Ok::<bool, (bool, String)>(false)
            };
            match attempt.await {
                Ok(true) => return,
                Ok(false) => {}
                Err((not_held, error)) => {
                    let since = *unreachable_since.get_or_insert_with(Instant::now);
                    if not_held || since.elapsed() >= LOST_AFTER {
                        live.mark_lost(&key.0, &error);
                        return;
                    }
                }
            }
            if live.is_final() || live.tally.lock().expect("lock").is_part_final(&key) {
                return;
            }
            tokio::time::sleep(REATTACH_AFTER).await;
        }
    }

    /// Once a second: a timeline point and a status event, the parts' progress stored,
    /// due handovers; at the end, the summary.
    async fn tick(self: Arc<Self>, live: Arc<LiveReplay>) {
        let start_at = live.plan.lock().expect("lock").start_at_unix_ns;
        let until_start = start_at - now_ns();
        tokio::time::sleep(Duration::from_nanos(until_start.max(0) as u64)).await;
        // A replay taken over mid-way started in the past: its timeline counts from then.
        live.tally.lock().expect("lock").start(start_at);
        let mut every = tokio::time::interval(Duration::from_secs(1));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        every.tick().await;
        loop {
            every.tick().await;
            self.hand_over_due(&live).await;
            self.store_progress(&live).await;
            let cancelling = live.cancel_requested();
            let (done, points) = {
                let mut tally = live.tally.lock().expect("lock");
                let done = tally.workers_final(cancelling);
                (done, tally.timeline_points(now_ns()))
            };
            if done {
                self.finish(&live, points.last().cloned()).await;
                return;
            }
            live.publish(points.last().cloned());
        }
    }

    /// Settles the final state from the workers' reports, tells the watchers, and
    /// stores it with the summary.
    async fn finish(&self, live: &LiveReplay, point: Option<reprise_proto::v1::TimelinePoint>) {
        let (state, error) = live.tally.lock().expect("lock").outcome(live.cancel_requested());
        {
            let mut replay = live.replay.lock().expect("lock");
            replay.state = state;
            replay.error = error;
            replay.finished_at_ms = Some(now_ms());
        }
        let mut replay = live.record();
        replay.summary = serde_json::to_value(live.status()).expect("serialisable");
        tracing::info!(replay = %replay.id, state = %replay.state, "replay finished");
        live.publish(point);
        // The catalog may be out of reach for a while: try again (a controller that takes
        // over later settles the replay from the workers' final reports, kept 10 min).
        let mut every = tokio::time::interval(Duration::from_secs(1));
        for attempt in 0..STORE_SUMMARY_TRIES {
            every.tick().await;
            match self.catalog.put(&replay).await {
                Ok(_) => return,
                Err(e) if attempt == 0 => {
                    tracing::warn!(replay = %replay.id, error = %e, "cannot store the summary yet")
                }
                Err(_) => {}
            }
        }
        tracing::error!(replay = %replay.id, "could not store the replay summary for {STORE_SUMMARY_TRIES} s");
    }

    /// Tells every worker of an unfinished replay that this controller is alive.
    pub fn start_heartbeats(self: &Arc<Self>) {
        self.spawn(self.clone().heartbeat_loop());
    }

    /// Once a second, each worker hears which of its replays this controller follows
    /// (each one's grace starts again there) and answers which of them it does not hold:
    /// a worker that restarted has lost them, and counts as lost for them at once.
    async fn heartbeat_loop(self: Arc<Self>) {
        let mut every = tokio::time::interval(Duration::from_secs(1));
        loop {
            every.tick().await;
            let beats = self.followed_by_address().into_iter().filter_map(|(address, followed)| {
                let mut client = self.clients.get(&address).ok()?;
                let mut replay_ids: Vec<String> = followed.iter().map(|(live, _)| live.id()).collect();
                replay_ids.dedup();
                let request = HeartbeatRequest {
                    controller_id: self.controller_id.clone(),
                    replay_ids,
                    sent_at_unix_ms: now_ms(),
                };
                Some(async move {
                    match tokio::time::timeout(CALL_TIMEOUT, client.heartbeat(request)).await.unwrap_or_else(|_| {
                        Err(tonic::Status::deadline_exceeded(format!("no answer within {} s", CALL_TIMEOUT.as_secs())))
                    }) {
                        Ok(reply) => {
                            let unknown = reply.into_inner().unknown_replay_ids;
                            for (live, worker_id) in followed.iter().filter(|(l, _)| unknown.contains(&l.id())) {
                                live.mark_lost(worker_id, "it no longer holds the replay (it restarted)");
                            }
                        }
                        Err(status) => tracing::debug!(%address, error = %status.message(), "heartbeat failed"),
                    }
                })
            });
            join_all(beats).await;
        }
    }

    /// The workers with a part still under way in a replay followed here, by address,
    /// with the replay (once per worker and replay).
    fn followed_by_address(&self) -> BTreeMap<String, Vec<(Arc<LiveReplay>, String)>> {
        let mut by_address: BTreeMap<String, Vec<(Arc<LiveReplay>, String)>> = BTreeMap::new();
        let live: Vec<Arc<LiveReplay>> = self.live.lock().expect("lock").values().cloned().collect();
        for replay in live.iter().filter(|l| !l.is_final()) {
            let tally = replay.tally.lock().expect("lock");
            for ((worker_id, _), worker) in tally.workers.iter().filter(|(_, w)| !w.is_final()) {
                let followed = by_address.entry(worker.address.clone()).or_default();
                if !followed.iter().any(|(l, w)| Arc::ptr_eq(l, replay) && w == worker_id) {
                    followed.push((replay.clone(), worker_id.clone()));
                }
            }
        }
        by_address
    }
}

impl LiveReplay {
    /// The worker is out of reach: its parts are lost from now on, and no call names the
    /// replay to it any more, so its grace runs out for sure (see `handover`).
    pub(super) fn mark_lost(&self, worker_id: &str, reason: &str) {
        tracing::warn!(replay = %self.id(), worker = %worker_id, "worker lost: {reason}");
        self.tally.lock().expect("lock").mark_lost(worker_id, reason, Instant::now());
    }
}
