//! A controller and workers in this process, on loopback ports: the composition root of
//! `ctl demo` and of the cluster tests and benchmarks (the daemons themselves never
//! depend on each other).

use std::time::Duration;

use reprise_controller::{Controller, ControllerConfig};
use reprise_worker::{Worker, WorkerConfig};

use crate::client::{self, Client};

pub struct LocalCluster {
    pub controller: Controller,
    pub workers: Vec<Worker>,
    controller_config: ControllerConfig,
}

/// How long a lone controller may take to win its election.
const ELECTION_TIMEOUT: Duration = Duration::from_secs(15);

/// Starts a controller and waits until it leads (it is the only one).
async fn start_leading(config: ControllerConfig) -> anyhow::Result<Controller> {
    let controller = Controller::start(config).await?;
    match tokio::time::timeout(ELECTION_TIMEOUT, controller.leading()).await {
        Ok(true) => Ok(controller),
        _ => {
            controller.shutdown().await;
            anyhow::bail!("the controller did not win its election within {} s", ELECTION_TIMEOUT.as_secs())
        }
    }
}

impl LocalCluster {
    /// Starts the controller, then every worker (registered in the controller's catalog).
    /// If anything fails to start, what did start is stopped again.
    pub async fn start(controller: ControllerConfig, workers: Vec<WorkerConfig>) -> anyhow::Result<LocalCluster> {
        let controller_config = controller.clone();
        let controller = start_leading(controller).await?;
        let mut cluster = LocalCluster { controller, workers: Vec::new(), controller_config };
        for config in workers {
            match Worker::start(config).await {
                Ok(worker) => cluster.workers.push(worker),
                Err(e) => {
                    cluster.stop().await;
                    return Err(e);
                }
            }
        }
        Ok(cluster)
    }

    /// Stops the controller and starts a new one on the same catalog and log (on new
    /// ports), as after a crash and restart; the workers keep running.
    pub async fn restart_controller(self) -> anyhow::Result<LocalCluster> {
        let LocalCluster { controller, workers, controller_config } = self;
        controller.shutdown().await;
        let controller = start_leading(controller_config.clone()).await?;
        Ok(LocalCluster { controller, workers, controller_config })
    }

    /// Starts another controller on the same catalog and log: a standby while this
    /// cluster's controller leads.
    pub async fn start_standby(&self) -> anyhow::Result<Controller> {
        Controller::start(self.controller_config.clone()).await
    }

    /// The URL `ctl --controller` takes.
    pub fn controller_url(&self) -> String {
        format!("http://{}", self.controller.grpc_addr)
    }

    pub async fn client(&self) -> anyhow::Result<Client> {
        client::connect(&self.controller_url()).await
    }

    pub fn worker_ids(&self) -> Vec<&str> {
        self.workers.iter().map(|w| w.id.as_str()).collect()
    }

    /// Workers first, so that none outlives its controller's view.
    pub async fn stop(self) {
        for worker in self.workers {
            worker.shutdown().await;
        }
        self.controller.shutdown().await;
    }
}
