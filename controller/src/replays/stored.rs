//! A replay as the catalog keeps it: the record (`reprise_store::schema::Replay`) with
//! the validated spec and the plan as its JSON parts, so that a restarted or newly
//! elected controller has everything it needs to carry on.

use reprise_store::schema::Replay;
use serde::{Deserialize, Serialize};

use super::spec::ReplaySpec;
use crate::planner::WorkerPlan;

/// The plan of a replay: who sends what, and the timeline it keeps.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReplayPlan {
    /// The common start instant; 0 until every worker has accepted its share.
    pub start_at_unix_ns: i64,
    /// The recording's first timestamp: the zero of the timeline.
    pub origin_ns: i64,
    /// From the recording's first to its last timestamp, at speed 1.
    pub span_ns: i64,
    /// Records in the recording.
    pub records: u64,
    /// The traffic log holding them.
    pub log_url: String,
    pub workers: Vec<WorkerPlan>,
    /// What every status of the replay tells its user.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

impl ReplayPlan {
    /// The shift from one pass to the next on the recording's clock: its span plus one
    /// mean gap between records, so that a loop keeps the recorded rate across the seam
    /// (1 s when the recording has no span).
    pub fn pass_period_ns(&self) -> i64 {
        match self.records {
            n if n > 1 && self.span_ns > 0 => self.span_ns + self.span_ns / (n as i64 - 1),
            _ => self.span_ns.max(1_000_000_000),
        }
    }

    /// How long the replay lasts on its timeline at original pace, if it ends: the last
    /// pass's end, or the duration when that comes first.
    pub fn timeline_s(&self, spec: &ReplaySpec) -> Option<f64> {
        let passes = spec.passes().map(|p| {
            (f64::from(p - 1) * self.pass_period_ns() as f64 + self.span_ns as f64) / 1e9 / spec.options.speed
        });
        let until = spec.until().map(|d| d.as_secs_f64());
        match (passes, until) {
            (Some(p), Some(u)) => Some(p.min(u)),
            (p, u) => p.or(u),
        }
    }
}

/// The spec and plan stored in a replay record (defaults where a record lacks them).
pub fn parts(replay: &Replay) -> (ReplaySpec, ReplayPlan) {
    let spec = serde_json::from_value(replay.options.clone()).unwrap_or_default();
    let plan = serde_json::from_value(replay.plan.clone()).unwrap_or_default();
    (spec, plan)
}

/// Writes the spec and plan into a replay record.
pub fn set_parts(replay: &mut Replay, spec: &ReplaySpec, plan: &ReplayPlan) {
    replay.options = spec_json(spec);
    replay.plan = plan_json(plan);
}

/// The spec as a replay record keeps it.
pub fn spec_json(spec: &ReplaySpec) -> serde_json::Value {
    serde_json::to_value(spec).expect("serialisable")
}

/// The plan as a replay record keeps it.
pub fn plan_json(plan: &ReplayPlan) -> serde_json::Value {
    serde_json::to_value(plan).expect("serialisable")
}

#[cfg(test)]
mod tests {
    use reprise_proto::v1::ReplayState;
    use reprise_store::log::RangeSpec;

    use super::*;

    #[test]
    fn spec_and_plan_survive_the_catalog() {
        let spec = ReplaySpec { recording_id: "rec-1".into(), workers: 2, ..Default::default() };
        let plan = ReplayPlan {
            start_at_unix_ns: 7,
            origin_ns: 3,
            span_ns: 9,
            records: 10,
            log_url: "file:///tmp/log".into(),
            workers: vec![WorkerPlan {
                worker_id: "w1".into(),
                address: "127.0.0.1:1".into(),
                shares: vec![RangeSpec { partition: 0, start: 0, end: 10, stride: 1, phase: 0 }],
                resume: vec![crate::planner::Resume { pass: 1, offset: 2 }],
                records: 10,
                part: 1,
                grace_ms: 5000,
                progress: Some(crate::planner::PartProgress { checkpoints: vec![4], passes: vec![1], sends_past: 1 }),
                handed_over: None,
            }],
            warnings: vec!["w".into()],
        };
        let mut replay = Replay {
            id: "rep-1".into(),
            recording_id: "rec-1".into(),
            target: String::new(),
            state: ReplayState::Running,
            options: Default::default(),
            plan: Default::default(),
            summary: Default::default(),
            error: None,
            created_at_ms: 0,
            started_at_ms: None,
            finished_at_ms: None,
            cancel_requested: false,
        };
        set_parts(&mut replay, &spec, &plan);
        let json = serde_json::to_string(&replay).unwrap();
        let back: Replay = serde_json::from_str(&json).unwrap();
        assert_eq!(parts(&back), (spec, plan));
    }
}
