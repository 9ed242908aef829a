//! The controller's Prometheus metrics, built at each scrape: the cluster (registered
//! workers, whether this controller leads, replays running) and, per replay and worker,
//! what the workers reported, for the replays this controller follows. A finished
//! replay stays exported for `--metrics-linger-secs` (so a scrape sees its final counts,
//! its rate gauge at 0), then its series go: a long-lived controller does not export
//! every replay it ever ran.

use std::collections::BTreeMap;

use reprise_process::metrics::{self, Exporter, Family, Format, ReplaySeries, Value};
use reprise_proto::v1::{ReplayStatus, WorkerStats};
use reprise_store::CatalogError;
use reprise_store::schema::WorkerInfo;

use crate::state::ControllerState;

/// A replay exported at a scrape: its status and each part's latest report, with the
/// part's worker id.
struct Exported {
    status: ReplayStatus,
    reports: Vec<(String, WorkerStats)>,
}

/// The metrics of this controller now, in `format`.
pub async fn render(state: &ControllerState, format: Format) -> Result<String, CatalogError> {
    let workers = state.catalog.list::<WorkerInfo>().await?.len();
    let now = reprise_store::now_ms();
    let mut replays = Vec::new();
    for live in state.replays.followed() {
        let status = live.status();
        // A final status without its time is an old record: nothing to linger for.
        let finished_at = status.state().is_final().then(|| status.finished_at_ms.unwrap_or(0));
        if metrics::exported(finished_at, now, state.metrics_linger) {
            replays.push(Exported { status, reports: live.reports() });
        }
    }
    Ok(metrics::render(families(workers, state.election.is_leader(), &replays), format))
}

fn families(workers: usize, leading: bool, replays: &[Exported]) -> Vec<Family> {
    let mut series: BTreeMap<(String, String), ReplaySeries> = BTreeMap::new();
    let mut qps = Family::gauge("replay_qps", "Requests sent in the last second (0 once the replay has ended).");
    let mut progress = Family::gauge("replay_progress_ratio", "Share of the replay done.");
    let mut running = 0;
    for Exported { status, reports } in replays {
        let ended = status.state().is_final();
        running += u64::from(!ended);
        let labels = vec![("replay", status.id.clone())];
        qps.sample(labels.clone(), Value::Gauge(if ended { 0.0 } else { status.current_qps }));
        progress.sample(labels, Value::Gauge(status.progress));
        for (worker, report) in reports {
            series.entry((status.id.clone(), worker.clone())).or_default().add(report);
        }
    }
    let mut families =
        vec![
            Family::gauge("workers", "Live registered workers.").single(Value::Gauge(workers as f64)),
            Family::gauge("controller_leader", "1 while this controller leads, else 0.")
                .single(Value::Gauge(if leading { 1.0 } else { 0.0 })),
            Family::gauge("replays_running", "Replays this controller follows that have not ended.")
                .single(Value::Gauge(running as f64)),
            qps,
            progress,
        ];
    families.extend(metrics::replay_families(Exporter::Controller, &series));
    families
}

#[cfg(test)]
mod tests {
    use reprise_proto::v1::ReplayState;

    use super::*;

    fn replay(id: &str, state: ReplayState, reports: &[(&str, u64)]) -> Exported {
        let status = ReplayStatus { id: id.into(), state: state.into(), current_qps: 250.0, ..Default::default() };
        let report = |sent| WorkerStats { sent, status_2xx: sent, ..Default::default() };
        Exported { status, reports: reports.iter().map(|(w, sent)| (w.to_string(), report(*sent))).collect() }
    }

    #[test]
    fn parts_add_up_per_worker_and_an_ended_replay_s_rate_is_0() {
        let replays = [
            // w1 holds two parts of rep-1 (its own and one taken over).
            replay("rep-1", ReplayState::Running, &[("w1", 10), ("w2", 7), ("w1", 5)]),
            replay("rep-2", ReplayState::Done, &[("w2", 3)]),
        ];
        let text = metrics::render(families(2, true, &replays), Format::OpenMetrics);
        let has = |line: &str| assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        has("reprise_workers 2.0");
        has("reprise_controller_leader 1.0");
        has("reprise_replays_running 1.0");
        has(r#"reprise_replay_qps{replay="rep-1"} 250.0"#);
        has(r#"reprise_replay_qps{replay="rep-2"} 0.0"#);
        has(r#"reprise_replay_sent_total{replay="rep-1",worker="w1"} 15"#);
        has(r#"reprise_replay_sent_total{replay="rep-1",worker="w2"} 7"#);
        has(r#"reprise_replay_responses_total{replay="rep-2",worker="w2",class="2xx"} 3"#);
        let standby = metrics::render(families(2, false, &[]), Format::OpenMetrics);
        assert!(standby.lines().any(|l| l == "reprise_controller_leader 0.0"), "{standby}");
        assert!(!standby.contains("replay=\""), "a standby follows no replay: {standby}");
    }
}
