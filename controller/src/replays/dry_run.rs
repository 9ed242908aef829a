//! `ctl replay --dry-run`: the plan a start would make, and the load it would put on the
//! target, computed without assigning, starting or sending anything.

use std::collections::HashMap;

use futures::TryStreamExt;
use reprise_proto::v1::{MessageKind, PacingMode, PartitionShare, PlannedWorker, ReplayPlanView};
use reprise_store::log::RangeSpec;
use reprise_store::schema::Recording;

use super::{ReplayError, ReplayManager, ReplaySpec};

/// Records read at a time while counting the recording's requests per second.
const READ_AHEAD: usize = 4096;

impl ReplayManager {
    /// What `start` would do with `spec`: the same checks and plan, then the rates.
    pub async fn dry_run(&self, spec: &ReplaySpec) -> Result<ReplayPlanView, ReplayError> {
        let (recording, plan) = self.plan(spec).await?;
        let per_second = requests_per_second(&recording, spec.options.speed).await?;
        let requests: u64 = per_second.values().sum();
        let multiple = u64::from(spec.options.multiple.max(1));
        let sends = requests * multiple * u64::from(spec.passes().unwrap_or(1));
        let rate = spec.options.rate_per_sec;
        let cap = |r: f64| if rate > 0.0 { r.min(rate) } else { r };
        let (duration_s, peak_rate) = match spec.pacing() {
            PacingMode::Constant => (Some(sends as f64 / rate), rate),
            PacingMode::Max => (spec.until().map(|d| d.as_secs_f64()), 0.0),
            _ => {
                let timeline = plan.timeline_s(spec);
                // A rate cap below the recorded pace stretches the replay.
                let stretched = (rate > 0.0).then(|| sends as f64 / rate);
                let duration = timeline.map(|t| stretched.map_or(t, |s| s.max(t)));
                let peak = per_second.values().max().copied().unwrap_or(0) * multiple;
                (duration, cap(peak as f64))
            }
        };
        let mean_rate = duration_s.filter(|d| *d > 0.0).map_or(0.0, |d| cap(sends as f64 / d));
        let share = |s: &RangeSpec| PartitionShare::from(*s);
        let workers = plan
            .workers
            .iter()
            .map(|w| PlannedWorker {
                id: w.worker_id.clone(),
                address: w.address.clone(),
                records: w.records,
                shares: w.shares.iter().map(share).collect(),
            })
            .collect();
        Ok(ReplayPlanView {
            recording_id: recording.id,
            target: spec.options.target.clone(),
            records: recording.record_count,
            requests,
            sends,
            duration_s,
            mean_rate,
            peak_rate,
            connections_per_worker: spec.options.max_in_flight,
            workers,
            warnings: plan.warnings,
        })
    }
}

/// The recording's requests per second of the replay's timeline at `speed`, read from
/// the log (responses and undecodable records are not sent, so not counted).
async fn requests_per_second(recording: &Recording, speed: f64) -> Result<HashMap<i64, u64>, ReplayError> {
    let log = reprise_store::open_log(&recording.log_url).await.map_err(ReplayError::Log)?;
    let origin = recording.first_timestamp_ns.unwrap_or(0);
    let speed = if speed > 0.0 { speed } else { 1.0 };
    let mut counts = HashMap::new();
    for range in &recording.ranges {
        let whole = RangeSpec::whole(range.partition, range.start, range.end);
        let mut records = log.read_range(whole, READ_AHEAD).await.map_err(ReplayError::Log)?;
        while let Some(record) = records.try_next().await.map_err(ReplayError::Log)? {
            let Ok(traffic) = reprise_store::traffic::decode(&record.payload[..]) else { continue };
            if traffic.kind() == MessageKind::Request {
                let second = ((traffic.timestamp_ns - origin) as f64 / speed / 1e9).floor() as i64;
                *counts.entry(second).or_insert(0) += 1;
            }
        }
    }
    Ok(counts)
}
