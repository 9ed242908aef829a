//! Following a started replay: one stats stream per worker (re-attached after breaks), a
//! tick a second that closes a timeline point and tells the watchers, the heartbeat that
//! keeps the workers sending, and the end, stored with its summary.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use reprise_proto::v1::{HeartbeatRequest, ReplayState, StatsRequest};
use reprise_store::{now_ms, now_ns};
use tokio::time::Instant;

use super::{CALL_TIMEOUT, LiveReplay, ReplayManager};

/// How long a worker may be unreachable before it counts as lost.
const LOST_AFTER: Duration = Duration::from_secs(10);
/// Pause before re-attaching a broken stats stream.
const REATTACH_AFTER: Duration = Duration::from_millis(500);

impl ReplayManager {
    /// Follows every worker of a replay that has just started, and ticks its timeline.
    pub(super) fn follow_all(self: &Arc<Self>, live: &Arc<LiveReplay>) {
        for worker in &live.plan.workers {
            self.spawn(self.clone().follow(live.clone(), worker.worker_id.clone(), worker.address.clone()));
        }
        self.spawn(self.clone().tick(live.clone()));
    }

    /// Follows one worker's stats stream, re-attaching after breaks, until its final
    /// report or until it is lost.
    async fn follow(self: Arc<Self>, live: Arc<LiveReplay>, worker_id: String, address: String) {
        let replay_id = live.id();
        let mut unreachable_since: Option<Instant> = None;
        loop {
            let attempt = async {
                let mut client = self.clients.get(&address)?;
                let request = StatsRequest { replay_id: replay_id.clone() };
                let mut stream = client.stats(request).await.map_err(|s| s.message().to_string())?.into_inner();
                // A worker reports about once a second: silence this long is a break too.
                while let Some(report) = tokio::time::timeout(LOST_AFTER, stream.message())
                    .await
                    .map_err(|_| format!("no report for {} s", LOST_AFTER.as_secs()))?
                    .map_err(|s| s.message().to_string())?
                {
                    unreachable_since = None;
                    if live.tally.lock().expect("lock").on_report(&worker_id, report) {
                        return Ok(true);
                    }
                }
                Ok::<bool, String>(false)
            };
            match attempt.await {
                Ok(true) => return,
                Ok(false) => {}
                Err(error) => {
                    let since = *unreachable_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= LOST_AFTER {
                        live.mark_lost(&worker_id, format!("worker {worker_id} lost: {error}"));
                        return;
                    }
                }
            }
            if live.is_final() {
                return;
            }
            tokio::time::sleep(REATTACH_AFTER).await;
        }
    }

    /// Once a second: a timeline point and a status event; at the end, the summary.
    async fn tick(self: Arc<Self>, live: Arc<LiveReplay>) {
        let until_start = live.plan.start_at_unix_ns - now_ns();
        tokio::time::sleep(Duration::from_nanos(until_start.max(0) as u64)).await;
        // A replay taken over mid-way started in the past: its timeline counts from then.
        let started = Instant::now().checked_sub(Duration::from_nanos((-until_start).max(0) as u64));
        live.tally.lock().expect("lock").start(started.unwrap_or_else(Instant::now));
        let mut every = tokio::time::interval(Duration::from_secs(1));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        every.tick().await;
        loop {
            every.tick().await;
            let (done, point) = {
                let mut tally = live.tally.lock().expect("lock");
                (tally.workers_final(), tally.timeline_point(Instant::now(), now_ms()))
            };
            if done {
                self.finish(&live).await;
            }
            live.publish(Some(point));
            if done {
                return;
            }
        }
    }

    /// Settles the final state from the workers' reports and stores it with the summary.
    async fn finish(&self, live: &LiveReplay) {
        let (state, error) = live.tally.lock().expect("lock").outcome();
        let mut replay = {
            let mut replay = live.replay.lock().expect("lock");
            // A user's cancel stands even if some worker finished first.
            replay.state = match state {
                ReplayState::Done if replay.cancel_requested => ReplayState::Cancelled,
                other => other,
            };
            replay.error = error;
            replay.finished_at_ms = Some(now_ms());
            replay.clone()
        };
        replay.summary = serde_json::to_value(live.status()).expect("serialisable");
        if let Err(e) = self.catalog.put(&replay).await {
            tracing::error!(replay = %replay.id, error = %e, "could not store the replay summary");
        }
        tracing::info!(replay = %replay.id, state = %replay.state, "replay finished");
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
                let replay_ids = followed.iter().map(|(live, _)| live.id()).collect();
                let request = HeartbeatRequest { controller_id: self.controller_id.clone(), replay_ids };
                Some(async move {
                    match tokio::time::timeout(CALL_TIMEOUT, client.heartbeat(request)).await.unwrap_or_else(|_| {
                        Err(tonic::Status::deadline_exceeded(format!("no answer within {} s", CALL_TIMEOUT.as_secs())))
                    }) {
                        Ok(reply) => {
                            let unknown = reply.into_inner().unknown_replay_ids;
                            for (live, worker_id) in followed.iter().filter(|(l, _)| unknown.contains(&l.id())) {
                                live.mark_lost(worker_id, format!("worker {worker_id} no longer holds the replay"));
                            }
                        }
                        Err(status) => tracing::debug!(%address, error = %status.message(), "heartbeat failed"),
                    }
                })
            });
            join_all(beats).await;
        }
    }

    /// The workers still sending for a replay followed here, by address, with the replay.
    fn followed_by_address(&self) -> BTreeMap<String, Vec<(Arc<LiveReplay>, String)>> {
        let mut by_address: BTreeMap<String, Vec<(Arc<LiveReplay>, String)>> = BTreeMap::new();
        let live: Vec<Arc<LiveReplay>> = self.live.lock().expect("lock").values().cloned().collect();
        for replay in live.iter().filter(|l| !l.is_final()) {
            for (worker_id, worker) in replay.tally.lock().expect("lock").workers.iter().filter(|(_, w)| !w.is_final())
            {
                by_address.entry(worker.address.clone()).or_default().push((replay.clone(), worker_id.clone()));
            }
        }
        by_address
    }
}

impl LiveReplay {
    fn mark_lost(&self, worker_id: &str, reason: String) {
        tracing::warn!(replay = %self.id(), "{reason}");
        self.tally.lock().expect("lock").mark_lost(worker_id, reason);
    }
}
