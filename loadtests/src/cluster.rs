//! A whole Reprise cluster in one process: controller, workers and a sink, each on an
//! ephemeral loopback port. Worker `i` sends from 127.0.0.`2+i`, so the sink can tell
//! the workers' traffic apart.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use reprise_controller::{Controller, ControllerConfig};
use reprise_proto::v1::controller_client::ControllerClient;
use reprise_worker::{Worker, WorkerConfig};
use tonic::transport::Channel;

use crate::sink::Sink;

#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub catalog: String,
    pub log: String,
    pub workers: usize,
    pub partitions: i32,
}

pub struct Cluster {
    pub controller: Controller,
    pub workers: Vec<Worker>,
    pub sink: Sink,
}

/// The loopback address worker `i` sends from.
pub fn worker_source_ip(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + i as u8))
}

impl Cluster {
    pub async fn start(config: &ClusterConfig) -> anyhow::Result<Cluster> {
        let loopback = |port| SocketAddr::from(([127, 0, 0, 1], port));
        let sink = Sink::start(loopback(0)).await?;
        let controller = Controller::start(ControllerConfig {
            config: None,
            catalog: config.catalog.clone(),
            log: config.log.clone(),
            listen: loopback(0),
            http: loopback(0),
            partitions: config.partitions,
            start_lead_ms: 1000,
        })
        .await?;
        let mut workers = Vec::new();
        for i in 0..config.workers {
            workers.push(
                Worker::start(WorkerConfig {
                    config: None,
                    catalog: config.catalog.clone(),
                    listen: loopback(0),
                    name: Some(format!("worker-{i}")),
                    advertise: None,
                    labels: vec![("index".into(), i.to_string())],
                    controller_grace_secs: 15.0,
                    source_ip: Some(worker_source_ip(i)),
                    lease_ttl_secs: 10,
                })
                .await?,
            );
        }
        Ok(Cluster { controller, workers, sink })
    }

    /// The URL `ctl --controller` takes.
    pub fn controller_url(&self) -> String {
        format!("http://{}", self.controller.grpc_addr)
    }

    pub fn sink_url(&self) -> String {
        format!("http://{}", self.sink.addr)
    }

    pub async fn client(&self) -> anyhow::Result<ControllerClient<Channel>> {
        Ok(ControllerClient::connect(self.controller_url()).await?)
    }

    pub async fn stop(self) {
        for worker in self.workers {
            worker.shutdown().await;
        }
        self.controller.shutdown().await;
        self.sink.stop();
    }
}
