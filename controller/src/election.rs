//! The controller election. Every controller campaigns on the catalog's election key
//! under a short lease; only the leader plans, follows and writes replays. A standby
//! serves the read API and tells who leads. When the leader's lease runs out (it died,
//! or lost the catalog), a standby wins, takes over the unfinished replays from the
//! catalog and heartbeats their workers before their grace period ends. A leader that
//! cannot reach the catalog keeps its replays going but decides nothing (no handovers)
//! until the catalog answers again; if the catalog then says its lease is gone (or after
//! a minute without an answer), it stops.

use std::sync::Arc;
use std::time::Duration;

use reprise_store::{Catalog, CatalogError, LeaseState};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::replays::ReplayManager;

/// The election every controller of one catalog takes part in.
const ELECTION: &str = "controller";
/// Pause before campaigning again after the catalog failed.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Who a controller is, as the election key shows it to ctl and the other controllers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    pub id: String,
    /// The gRPC address ctl dials, host:port.
    pub grpc: String,
    /// The stats API's address, host:port.
    pub http: String,
}

/// Where a controller stands in the election.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Candidate,
    Leader,
    /// Was leader and lost its lease: it follows nothing any more and must be restarted
    /// to campaign again.
    Deposed,
}

pub struct Election {
    catalog: Catalog,
    pub me: Candidate,
    role: watch::Sender<Role>,
}

impl Election {
    pub fn new(catalog: Catalog, me: Candidate) -> Arc<Election> {
        Arc::new(Election { catalog, me, role: watch::Sender::new(Role::Candidate) })
    }

    pub fn role(&self) -> Role {
        *self.role.borrow()
    }

    pub fn is_leader(&self) -> bool {
        self.role() == Role::Leader
    }

    /// Resolves once this controller leads, or was deposed.
    pub async fn settled(&self) -> Role {
        let mut role = self.role.subscribe();
        *role.wait_for(|r| *r != Role::Candidate).await.expect("the election outlives its watchers")
    }

    /// The current leader, as its election key says.
    pub async fn leader(&self) -> Result<Option<Candidate>, CatalogError> {
        let leader = self.catalog.leader(ELECTION).await?;
        Ok(leader.and_then(|(value, _epoch)| serde_json::from_str(&value).ok()))
    }

    /// Why this controller may not act on replays (it does not lead), naming the leader
    /// if there is one; `None` when it leads.
    pub async fn standby_refusal(&self) -> Result<Option<String>, CatalogError> {
        if self.is_leader() {
            return Ok(None);
        }
        Ok(Some(match self.leader().await? {
            Some(leader) => format!(
                "controller {} is a standby; the leader is {} at {}, stats API http://{} (give ctl both: --controller a,b)",
                self.me.id, leader.id, leader.grpc, leader.http
            ),
            None => format!("controller {} is a standby and no controller leads right now; try again", self.me.id),
        }))
    }

    /// Campaigns until this controller leads, then leads (taking over the unfinished
    /// replays, heartbeating their workers) until `shutdown` (it resigns, so a standby
    /// takes over at once) or until its lease is lost (it is deposed).
    pub async fn run(self: Arc<Self>, replays: Arc<ReplayManager>, ttl: Duration, shutdown: CancellationToken) {
        let me = serde_json::to_string(&self.me).expect("serialisable");
        let (lease, leadership) = loop {
            let attempt = async {
                let lease = self.catalog.lease(ttl).await?;
                let leadership = self.catalog.campaign(ELECTION, &me, &lease).await?;
                Ok::<_, CatalogError>((lease, leadership))
            };
            tokio::select! {
                won = attempt => match won {
                    Ok(won) => break won,
                    Err(e) => tracing::warn!(error = %e, "campaign failed; trying again"),
                },
                _ = shutdown.cancelled() => return,
            }
            tokio::time::sleep(RETRY_AFTER).await;
        };
        tracing::info!(controller = %self.me.id, epoch = leadership.epoch, "leading");
        while let Err(e) = replays.resume_all().await {
            tracing::warn!(error = %e, "cannot read the unfinished replays; trying again");
            tokio::select! {
                _ = tokio::time::sleep(RETRY_AFTER) => {}
                _ = shutdown.cancelled() => return,
            }
        }
        replays.start_heartbeats();
        self.role.send_replace(Role::Leader);
        let mut state = lease.watch();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => {
                    replays.shutdown();
                    if let Err(e) = self.catalog.resign(&leadership).await {
                        tracing::warn!(error = %e, "could not resign; a standby leads once the lease runs out");
                    }
                    let _ = lease.revoke().await;
                    return;
                }
                _ = state.changed() => {}
            }
            match *state.borrow_and_update() {
                LeaseState::Held => {
                    tracing::info!(controller = %self.me.id, "the catalog answers again; still leading");
                    replays.set_confirmed(true);
                }
                // The catalog is out of reach (nobody can be elected meanwhile, unless
                // only this controller is cut off): the running replays go on, but
                // nothing is decided until the lease is confirmed.
                LeaseState::Unconfirmed => {
                    tracing::warn!(controller = %self.me.id, "cannot reach the catalog; keeping the replays going, deciding nothing");
                    replays.set_confirmed(false);
                }
                LeaseState::Lost => {
                    // Another controller may lead already: stop acting at once.
                    replays.shutdown();
                    self.role.send_replace(Role::Deposed);
                    tracing::error!(controller = %self.me.id, "lost the leadership (catalog lease); restart to campaign again");
                    return;
                }
            }
        }
    }
}
