//! A whole Reprise cluster in one process: controller, workers and a sink, each on an
//! ephemeral loopback port. Worker `i` sends from 127.0.0.`2+i`, so the sink can tell
//! the workers' traffic apart.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::Context;
use reprise_controller::ControllerConfig;
pub use reprise_ctl::client::replay_request;
use reprise_ctl::client::{self, Client};
use reprise_ctl::local::LocalCluster;
use reprise_proto::PROTOCOL_VERSION;
use reprise_proto::v1::{
    Recording, ReplayOptions, ReplayStatus, StartRecordingRequest, StartReplayRequest, StopRecordingRequest,
};
use reprise_worker::WorkerConfig;

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

/// An in-process cluster ([`LocalCluster`]) and a sink to replay to.
pub struct Cluster {
    pub local: LocalCluster,
    pub sink: Sink,
}

/// The loopback address worker `i` sends from.
pub fn worker_source_ip(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + i as u8))
}

impl Cluster {
    pub async fn start(config: &ClusterConfig) -> anyhow::Result<Cluster> {
        let sink = Sink::start(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let controller = ControllerConfig {
            partitions: config.partitions,
            start_lead_ms: 1000,
            ..ControllerConfig::local(&config.catalog, &config.log)
        };
        let workers = (0..config.workers)
            .map(|i| WorkerConfig {
                labels: vec![("index".into(), i.to_string())],
                controller_grace_secs: config.controller_grace_secs,
                source_ip: Some(worker_source_ip(i)),
                // Two threads even on a one-core machine, so split lanes are always exercised.
                dispatch_threads: 2,
                ..WorkerConfig::local(&config.catalog, &format!("worker-{i}"))
            })
            .collect();
        Ok(Cluster { local: LocalCluster::start(controller, workers).await?, sink })
    }

    /// The URL `ctl --controller` takes.
    pub fn controller_url(&self) -> String {
        self.local.controller_url()
    }

    pub fn sink_url(&self) -> String {
        format!("http://{}", self.sink.addr)
    }

    pub async fn client(&self) -> anyhow::Result<Client> {
        self.local.client().await
    }

    /// Records `profile` through the controller: start a recording, write the traffic
    /// into `log_url` (as a capture node would), stop it.
    pub async fn record(&self, log_url: &str, profile: &Profile) -> anyhow::Result<Recording> {
        record_synthetic(&mut self.client().await?, log_url, profile, None).await
    }

    /// Starts a replay; returns its id.
    pub async fn replay(&self, request: StartReplayRequest) -> anyhow::Result<String> {
        Ok(self.client().await?.start_replay(request).await?.into_inner().id)
    }

    /// Follows a replay to its end (at most `limit`); returns the final status.
    pub async fn wait_final(&self, id: &str, limit: Duration) -> anyhow::Result<ReplayStatus> {
        let mut client = self.client().await?;
        tokio::time::timeout(limit, client::follow(&mut client, id, |_| {}))
            .await
            .with_context(|| format!("replay {id} did not end within {limit:?}"))?
    }

    pub async fn stop(self) {
        self.local.stop().await;
        self.sink.stop();
    }
}

impl std::ops::Deref for Cluster {
    type Target = LocalCluster;
    fn deref(&self) -> &LocalCluster {
        &self.local
    }
}

/// Makes a recording of synthetic traffic through the controller: starts a recording,
/// writes `profile` into `log_url` (as a capture node would; also as a GoReplay file to
/// `gor`), stops it.
pub async fn record_synthetic(
    client: &mut Client,
    log_url: &str,
    profile: &Profile,
    gor: Option<&std::path::Path>,
) -> anyhow::Result<Recording> {
    let request = StartRecordingRequest {
        protocol_version: PROTOCOL_VERSION,
        name: "synthetic".into(),
        labels: Default::default(),
    };
    let started = client.start_recording(request).await?.into_inner();
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
    Ok(client.stop_recording(StopRecordingRequest { id: started.id }).await?.into_inner())
}

/// A cluster on one of the test backends: `"kafka_etcd"` (the real broker and etcd the
/// test services run, under names of its own) or anything else for the file log and
/// catalog in a temporary directory that lives as long as this value.
pub struct TestCluster {
    pub cluster: Cluster,
    pub log_url: String,
    pub catalog_url: String,
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
        let mut config = ClusterConfig::new(catalog.clone(), log.clone(), workers);
        tune(&mut config);
        Ok(TestCluster { cluster: Cluster::start(&config).await?, log_url: log, catalog_url: catalog, _dir: dir })
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

/// The options of a request, to adjust.
pub fn options(request: &mut StartReplayRequest) -> &mut ReplayOptions {
    request.options.get_or_insert_with(Default::default)
}
