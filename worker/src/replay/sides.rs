//! What a diffing replay sends besides the target, and how the answers are judged. Both
//! kinds share it: an A/B replay (`--candidate`: the candidate's response is diffed
//! against the target's) and `--compare` (the target's against the recording's); either
//! may add a baseline, a live instance of the reference version, whose own differences
//! from the reference are noise rather than regressions.

use reprise_proto::v1::DiffOptions;
use reprise_rules::diff::{DiffRules, Difference, Response};
use tokio::time::Instant;

use crate::request::{RecordedRequest, Target};
use crate::sender::{Outcome, ReplayRequest, Sender};

pub(crate) struct DiffSides {
    rules: DiffRules,
    baseline: Option<Target>,
}

/// The target's answer to one send and the other sides' responses to their copies.
pub(super) struct Answers {
    pub outcome: Outcome,
    pub target: Response,
    /// When the target's answer ended.
    pub ended: Instant,
    pub candidate: Option<Response>,
    pub baseline: Option<Response>,
}

impl DiffSides {
    pub(super) fn compile(options: &DiffOptions) -> Result<DiffSides, String> {
        let baseline = match options.baseline.as_str() {
            "" => None,
            url => Some(Target::parse(url).map_err(|e| format!("baseline: {e}"))?),
        };
        let rules = DiffRules::new(&options.ignore).map_err(|e| e.to_string())?;
        Ok(DiffSides { rules, baseline })
    }

    /// The baseline's copy of a request, if there is a baseline (and the recorded path
    /// makes a URI there).
    pub(super) fn baseline_request(&self, recorded: &RecordedRequest, keep_host: bool) -> Option<ReplayRequest> {
        copy_for(self.baseline.as_ref()?, recorded, keep_host)
    }

    /// How `actual` differs from `reference`, and the fields in which the baseline does
    /// too (noise for this request).
    pub(super) fn judge(
        &self,
        reference: &Response,
        actual: &Response,
        baseline: Option<&Response>,
    ) -> (Vec<Difference>, Vec<String>) {
        let differences = self.rules.compare(reference, actual);
        let noise = baseline.map(|b| self.rules.compare(reference, b).into_iter().map(|d| d.field).collect());
        (differences, noise.unwrap_or_default())
    }
}

/// A recorded request as sent to `target` (`None` if its path makes no URI there).
pub(super) fn copy_for(target: &Target, recorded: &RecordedRequest, keep_host: bool) -> Option<ReplayRequest> {
    Some(super::dispatch::build_request(recorded, target.uri_for(recorded).ok()?, keep_host))
}

/// Sends `request` to the target and the copies to the other sides, all at once.
pub(super) async fn send_all<S: Sender>(
    sender: &S,
    request: ReplayRequest,
    candidate: Option<ReplayRequest>,
    baseline: Option<ReplayRequest>,
) -> Answers {
    let target = async {
        let (outcome, response) = sender.send_keeping(request).await;
        (outcome, response, Instant::now())
    };
    let side = async |request: Option<ReplayRequest>| match request {
        Some(request) => Some(sender.send_keeping(request).await.1),
        None => None,
    };
    let ((outcome, target, ended), candidate, baseline) = tokio::join!(target, side(candidate), side(baseline));
    Answers { outcome, target, ended, candidate, baseline }
}
