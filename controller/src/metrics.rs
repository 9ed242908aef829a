//! The controller's Prometheus metrics, built at each scrape: the cluster (registered
//! workers, whether this controller leads, replays running) and, per replay and worker,
//! what the workers reported, for the replays this controller follows. A finished
//! replay stays exported for `--metrics-linger-secs` (so a scrape sees its final counts,
//! its rate gauge at 0), then its series go: a long-lived controller does not export
//! every replay it ever ran.

use std::collections::BTreeMap;

use reprise_process::metrics::{self, Exporter, Family, ReplaySeries, Value};
use reprise_store::CatalogError;
use reprise_store::schema::WorkerInfo;

use crate::state::ControllerState;

/// The OpenMetrics text of this controller now.
pub async fn render(state: &ControllerState) -> Result<String, CatalogError> {
    let workers = state.catalog.list::<WorkerInfo>().await?.len();
    let now = reprise_store::now_ms();
    let mut series: BTreeMap<(String, String), ReplaySeries> = BTreeMap::new();
    let mut qps = Family::gauge("replay_qps", "Requests sent in the last second (0 once the replay has ended).");
    let mut progress = Family::gauge("replay_progress_ratio", "Share of the replay done.");
    let mut running = 0;
    for live in state.replays.followed() {
        let status = live.status();
        let ended = status.state().is_final();
        // A final status without its time is an old record: nothing to linger for.
        let finished_at = ended.then(|| status.finished_at_ms.unwrap_or(0));
        if !metrics::exported(finished_at, now, state.metrics_linger) {
            continue;
        }
        running += u64::from(!ended);
        let labels = vec![("replay", status.id.clone())];
        qps.sample(labels.clone(), Value::Gauge(if ended { 0.0 } else { status.current_qps }));
        progress.sample(labels, Value::Gauge(status.progress));
        live.for_each_report(|worker, report| {
            series.entry((status.id.clone(), worker.to_string())).or_default().add(report);
        });
    }
    let mut families = vec![
        Family::gauge("workers", "Live registered workers.").single(Value::Gauge(workers as f64)),
        Family::gauge("controller_leader", "1 while this controller leads, else 0.")
            .single(Value::Gauge(if state.election.is_leader() { 1.0 } else { 0.0 })),
        Family::gauge("replays_running", "Replays this controller follows that have not ended.")
            .single(Value::Gauge(running as f64)),
        qps,
        progress,
    ];
    families.extend(metrics::replay_families(Exporter::Controller, &series));
    Ok(metrics::render(families))
}
