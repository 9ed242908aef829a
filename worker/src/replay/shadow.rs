//! An A/B replay (`ReplayOptions.diff`): each request also goes to the candidate (and to
//! the baseline, if there is one); the responses are diffed against the target's and the
//! differing fields counted per endpoint.

use std::sync::Arc;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use reprise_proto::v1::DiffOptions;
use reprise_rules::diff::DiffRules;

use crate::request::{RecordedRequest, Target};
use crate::sender::{Outcome, Sender};
use crate::stats::Stats;

pub(crate) struct Shadow {
    candidate: Target,
    baseline: Option<Target>,
    rules: DiffRules,
}

/// The other sides of one send.
pub(super) struct ShadowSends {
    candidate: Request<Full<Bytes>>,
    baseline: Option<Request<Full<Bytes>>>,
    /// The request's path and query, for samples.
    request: String,
}

impl Shadow {
    /// `None` when the options name no candidate.
    pub(crate) fn compile(options: Option<&DiffOptions>) -> Result<Option<Arc<Shadow>>, String> {
        let Some(options) = options.filter(|o| !o.candidate.is_empty()) else { return Ok(None) };
        let candidate = Target::parse(&options.candidate).map_err(|e| format!("candidate: {e}"))?;
        let baseline = match options.baseline.as_str() {
            "" => None,
            url => Some(Target::parse(url).map_err(|e| format!("baseline: {e}"))?),
        };
        let rules = DiffRules::new(&options.ignore).map_err(|e| e.to_string())?;
        Ok(Some(Arc::new(Shadow { candidate, baseline, rules })))
    }

    /// The candidate's and baseline's copies of a request (`None` if the recorded path
    /// makes no URI there, which the target's would not either).
    pub(super) fn sends(&self, recorded: &RecordedRequest, keep_host: bool) -> Option<ShadowSends> {
        let candidate = super::dispatch::build_request(recorded, self.candidate.uri_for(recorded).ok()?, keep_host);
        let baseline = match &self.baseline {
            Some(target) => Some(super::dispatch::build_request(recorded, target.uri_for(recorded).ok()?, keep_host)),
            None => None,
        };
        Some(ShadowSends { candidate, baseline, request: recorded.path_and_query.clone() })
    }

    /// Sends `request` to the target and its copies to the other sides at once; counts
    /// the diff. Returns the target's outcome and when it ended.
    pub(super) async fn exchange<S: Sender>(
        &self,
        sender: &S,
        request: Request<Full<Bytes>>,
        sends: ShadowSends,
        stats: &Stats,
        (shard, slot): (usize, usize),
    ) -> (Outcome, tokio::time::Instant) {
        let target = async {
            let answer = sender.send_keeping(request).await;
            (answer, tokio::time::Instant::now())
        };
        let baseline = async {
            match sends.baseline {
                Some(request) => Some(sender.send_keeping(request).await.1),
                None => None,
            }
        };
        let (((outcome, target), ended), (_, candidate), baseline) =
            tokio::join!(target, sender.send_keeping(sends.candidate), baseline);
        let differences = self.rules.compare(&target, &candidate);
        let noise: Vec<String> = baseline
            .map(|baseline| self.rules.compare(&target, &baseline).into_iter().map(|d| d.field).collect())
            .unwrap_or_default();
        stats.record_diff(shard, slot, &sends.request, &differences, &noise);
        (outcome, ended)
    }
}
