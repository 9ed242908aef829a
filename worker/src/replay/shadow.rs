//! An A/B replay (`ReplayOptions.diff` with a candidate): each request also goes to the
//! candidate (and to the baseline, if there is one); the candidate's responses are diffed
//! against the target's and the differing fields counted per endpoint.

use std::sync::Arc;

use reprise_proto::v1::DiffOptions;

use super::sides::{DiffSides, copy_for, send_all};
use crate::request::{RecordedRequest, Target};
use crate::sender::{Outcome, ReplayRequest, Sender};
use crate::stats::Stats;

pub(crate) struct Shadow {
    candidate: Target,
    sides: DiffSides,
}

/// The other sides' copies of one send.
pub(super) struct ShadowSends {
    candidate: ReplayRequest,
    baseline: Option<ReplayRequest>,
    /// The request's path and query, for samples.
    request: String,
}

impl Shadow {
    /// `None` when the options name no candidate.
    pub(crate) fn compile(options: Option<&DiffOptions>) -> Result<Option<Arc<Shadow>>, String> {
        let Some(options) = options.filter(|o| !o.candidate.is_empty()) else { return Ok(None) };
        let candidate = Target::parse(&options.candidate).map_err(|e| format!("candidate: {e}"))?;
        Ok(Some(Arc::new(Shadow { candidate, sides: DiffSides::compile(options)? })))
    }

    /// The candidate's and baseline's copies of a request (`None` if the recorded path
    /// makes no URI at the candidate, which the target's would not either).
    pub(super) fn sends(&self, recorded: &RecordedRequest, keep_host: bool) -> Option<ShadowSends> {
        Some(ShadowSends {
            candidate: copy_for(&self.candidate, recorded, keep_host)?,
            baseline: self.sides.baseline_request(recorded, keep_host),
            request: recorded.path_and_query.clone(),
        })
    }

    /// Sends `request` to the target and its copies to the other sides at once; counts
    /// the diff. Returns the target's outcome and when it ended.
    pub(super) async fn exchange<S: Sender>(
        &self,
        sender: &S,
        request: ReplayRequest,
        sends: ShadowSends,
        stats: &Stats,
        (shard, slot): (usize, usize),
    ) -> (Outcome, tokio::time::Instant) {
        let answers = send_all(sender, request, Some(sends.candidate), sends.baseline).await;
        let candidate = answers.candidate.as_ref().expect("a candidate copy was sent");
        let (differences, noise) = self.sides.judge(&answers.target, candidate, answers.baseline.as_ref());
        stats.record_diff(shard, slot, &sends.request, &differences, &noise);
        (answers.outcome, answers.ended)
    }
}
