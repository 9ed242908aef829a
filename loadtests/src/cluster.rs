//! A whole Reprise cluster in one process: controller, workers and a sink, each on an
//! ephemeral loopback port. Worker `i` sends from 127.0.0.`2+i`, so the sink can tell
//! the workers' traffic apart.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use std::time::Duration;

use anyhow::Context;
use reprise_controller::status::ReplayStatus;
use reprise_controller::{Controller, ControllerConfig};
use reprise_proto::PROTOCOL_VERSION;
use reprise_proto::v1::controller_client::ControllerClient;
use reprise_proto::v1::{ReplayRef, StartRecordingRequest, StartReplayRequest, StopRecordingRequest};
use reprise_store::schema::Recording;
use reprise_worker::{Worker, WorkerConfig};
use tonic::transport::Channel;

use crate::sink::Sink;
use crate::synth::{self, Profile};

#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub catalog: String,
    pub log: String,
    pub workers: usize,
    pub partitions: i32,
    /// Workers stop sending after this long without hearing from the controller.
    pub controller_grace_secs: f64,
}

impl ClusterConfig {
    pub fn new(catalog: String, log: String, workers: usize) -> Self {
        ClusterConfig { catalog, log, workers, partitions: 6, controller_grace_secs: 15.0 }
    }
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
            logging: Default::default(),
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
                    controller_grace_secs: config.controller_grace_secs,
                    source_ip: Some(worker_source_ip(i)),
                    // Two threads even on a one-core machine, so split lanes are always exercised.
                    dispatch_threads: 2,
                    lease_ttl_secs: 10,
                    logging: Default::default(),
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

    /// Records `profile` through the controller: start a recording, write the traffic
    /// into `log_url` (as a capture node would), stop it.
    pub async fn record(&self, log_url: &str, profile: &Profile) -> anyhow::Result<Recording> {
        record_synthetic(&mut self.client().await?, log_url, profile, None).await
    }

    /// Starts a replay; returns its id.
    pub async fn replay(&self, request: StartReplayRequest) -> anyhow::Result<String> {
        let reply = self.client().await?.start_replay(request).await?.into_inner();
        Ok(serde_json::from_str::<ReplayStatus>(&reply.json)?.id)
    }

    /// Follows a replay to its end (at most `limit`); returns the final status.
    pub async fn wait_final(&self, id: &str, limit: Duration) -> anyhow::Result<ReplayStatus> {
        let mut client = self.client().await?;
        tokio::time::timeout(limit, follow_to_end(&mut client, id))
            .await
            .with_context(|| format!("replay {id} did not end within {limit:?}"))?
    }

    pub async fn stop(self) {
        for worker in self.workers {
            worker.shutdown().await;
        }
        self.controller.shutdown().await;
        self.sink.stop();
    }
}

/// Makes a recording of synthetic traffic through the controller: starts a recording,
/// writes `profile` into `log_url` (as a capture node would; also as a GoReplay file to
/// `gor`), stops it.
pub async fn record_synthetic(
    client: &mut ControllerClient<Channel>,
    log_url: &str,
    profile: &Profile,
    gor: Option<&std::path::Path>,
) -> anyhow::Result<Recording> {
    let request = StartRecordingRequest {
        protocol_version: PROTOCOL_VERSION,
        name: "synthetic".into(),
        labels: Default::default(),
    };
    let started: Recording = serde_json::from_str(&client.start_recording(request).await?.into_inner().json)?;
    let log = reprise_store::open_log(log_url).await?;
    match gor {
        Some(path) => {
            let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
            synth::write_with_gor(&log, profile, Some(&mut out)).await?;
            std::io::Write::flush(&mut out)?;
        }
        None => {
            synth::write(&log, profile).await?;
        }
    }
    let stopped = client.stop_recording(StopRecordingRequest { id: started.id }).await?.into_inner();
    Ok(serde_json::from_str(&stopped.json)?)
}

/// Watches replay `id` until it ends; returns its final status.
pub async fn follow_to_end(client: &mut ControllerClient<Channel>, id: &str) -> anyhow::Result<ReplayStatus> {
    let mut stream = client.watch_replay(ReplayRef { id: id.into() }).await?.into_inner();
    let mut last = None;
    while let Some(reply) = stream.message().await? {
        let status: ReplayStatus = serde_json::from_str(&reply.json)?;
        let done = status.state.is_final();
        last = Some(status);
        if done {
            break;
        }
    }
    last.context("the watch ended without a status")
}

/// A cluster on one of the test backends: `"kafka_etcd"` (the real broker and etcd the
/// test services run, under names of its own) or anything else for the file log and
/// catalog in a temporary directory that lives as long as this value.
pub struct TestCluster {
    pub cluster: Cluster,
    pub log_url: String,
    _dir: Option<tempfile::TempDir>,
}

impl TestCluster {
    /// Starts `workers` workers; `tune` adjusts the rest of the config.
    pub async fn start(
        kind: &str,
        name: &str,
        workers: usize,
        tune: impl FnOnce(&mut ClusterConfig),
    ) -> anyhow::Result<TestCluster> {
        let (catalog, log, dir) = match kind {
            "kafka_etcd" => {
                (reprise_store::testing::etcd_catalog_url(name), reprise_store::testing::kafka_log_url(name), None)
            }
            _ => {
                let dir = tempfile::tempdir()?;
                let root = dir.path().display().to_string();
                (format!("file://{root}/catalog"), format!("file://{root}/log"), Some(dir))
            }
        };
        let mut config = ClusterConfig::new(catalog, log.clone(), workers);
        tune(&mut config);
        Ok(TestCluster { cluster: Cluster::start(&config).await?, log_url: log, _dir: dir })
    }

    pub async fn stop(self) {
        self.cluster.stop().await;
    }
}

impl std::ops::Deref for TestCluster {
    type Target = Cluster;
    fn deref(&self) -> &Cluster {
        &self.cluster
    }
}

/// A replay of `recording` to `target` at original pace, with test-friendly bounds.
pub fn replay_request(recording: &str, target: &str, multiple: u32) -> StartReplayRequest {
    StartReplayRequest {
        protocol_version: PROTOCOL_VERSION,
        recording_id: recording.into(),
        target: target.into(),
        multiple,
        speed: 1.0,
        pacing: 1,
        max_in_flight: 256,
        request_timeout_ms: 5_000,
        ..Default::default()
    }
}
