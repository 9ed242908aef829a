//! What `ctl replay` asks for, validated once: the one conversion from the wire request.

use std::collections::BTreeMap;

use reprise_proto::v1::{DiffOptions, PacingMode, ReplayOptions, StartReplayRequest};
use reprise_rules::diff::DiffRules;
use reprise_rules::replay::ReplayRules;
use serde::{Deserialize, Serialize};

use super::ReplayError;
use crate::planner::Split;

/// A validated replay request; stored with the replay so another controller can carry on.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReplaySpec {
    pub recording_id: String,
    /// What every worker is told; `rate_per_sec` is the cluster's cap (each worker is
    /// assigned its share).
    pub options: ReplayOptions,
    /// How many workers to use; 0 = every live one.
    pub workers: u32,
    pub worker_labels: BTreeMap<String, String>,
}

impl TryFrom<StartReplayRequest> for ReplaySpec {
    type Error = ReplayError;

    fn try_from(request: StartReplayRequest) -> Result<Self, ReplayError> {
        let options = request.options.ok_or_else(|| invalid("the request carries no replay options"))?;
        validate(&options)?;
        Ok(ReplaySpec {
            recording_id: request.recording_id,
            options,
            workers: request.workers,
            worker_labels: request.worker_labels,
        })
    }
}

impl ReplaySpec {
    pub fn pacing(&self) -> PacingMode {
        self.options.pacing()
    }

    /// Whether responses are compared with the recorded ones (`--compare`).
    pub fn compares_recorded(&self) -> bool {
        self.options.diff.as_ref().is_some_and(|d| d.recorded)
    }

    /// How the plan may cut the recording: sessions and comparisons keep a connection's
    /// records (requests and their recorded responses) together.
    pub fn split(&self) -> Split {
        Split::of(self.options.sessions || self.compares_recorded())
    }

    /// The share of sends that may fail before the replay counts as breached.
    pub fn max_error_rate(&self) -> f64 {
        self.options.max_error_rate.unwrap_or(DEFAULT_MAX_ERROR_RATE)
    }

    /// Passes over the recording; `None`: endless.
    pub fn passes(&self) -> Option<u32> {
        (!self.options.endless).then_some(self.options.passes.max(1))
    }

    /// Nothing due later than this on the timeline is sent.
    pub fn until(&self) -> Option<std::time::Duration> {
        (self.options.duration_ms > 0).then(|| std::time::Duration::from_millis(self.options.duration_ms))
    }

    /// The options for a worker that sends `records` of the recording's `total`: its
    /// share of the cluster's rate cap.
    pub fn worker_options(&self, records: u64, total: u64) -> ReplayOptions {
        let rate_per_sec = self.options.rate_per_sec * records as f64 / total.max(1) as f64;
        ReplayOptions { rate_per_sec, ..self.options.clone() }
    }
}

/// Half the sends failing is a broken target, not a replay that worked.
pub const DEFAULT_MAX_ERROR_RATE: f64 = 0.5;

fn invalid(message: impl Into<String>) -> ReplayError {
    ReplayError::Invalid(message.into())
}

fn validate(options: &ReplayOptions) -> Result<(), ReplayError> {
    let pacing = PacingMode::try_from(options.pacing).unwrap_or_default();
    if pacing == PacingMode::Unspecified {
        return Err(invalid(format!("unknown pacing mode {}", options.pacing)));
    }
    if options.multiple == 0 {
        return Err(invalid("--multiple must be at least 1"));
    }
    if pacing == PacingMode::Original && !(options.speed.is_finite() && options.speed > 0.0) {
        return Err(invalid(format!("--speed must be a positive number, got {}", options.speed)));
    }
    if pacing == PacingMode::Constant && options.rate_per_sec <= 0.0 {
        return Err(invalid("constant pacing needs --rate"));
    }
    if options.rate_per_sec < 0.0 || options.rate_per_sec.is_nan() {
        return Err(invalid("--rate must not be negative"));
    }
    if options.max_error_rate.is_some_and(|r| !(0.0..=1.0).contains(&r)) {
        return Err(invalid("--max-error-rate must be between 0 and 1"));
    }
    if options.max_in_flight == 0 {
        return Err(invalid("--max-in-flight must be at least 1"));
    }
    let uri: http::Uri = options.target.parse().map_err(|e| invalid(format!("target {:?}: {e}", options.target)))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.authority().is_none() {
        return Err(invalid(format!("target {:?} must be an http:// or https:// URL with a host", options.target)));
    }
    // Checked here too, so that a bad rule refuses the replay before any worker is told.
    if let Some(rules) = &options.rules {
        ReplayRules::compile(rules, "").map_err(|e| invalid(e.to_string()))?;
    }
    if let Some(diff) = &options.diff {
        validate_diff(diff, options.simulate)?;
    }
    if options.sessions && options.diff.as_ref().is_some_and(|d| !d.candidate.is_empty() || d.recorded) {
        return Err(invalid("--sessions cannot go with --candidate or --compare yet"));
    }
    Ok(())
}

fn validate_diff(diff: &DiffOptions, simulate: bool) -> Result<(), ReplayError> {
    let url = |flag: &str, url: &str| match url.parse::<http::Uri>() {
        Ok(uri) if matches!(uri.scheme_str(), Some("http" | "https")) && uri.authority().is_some() => Ok(()),
        _ => Err(invalid(format!("{flag} {url:?} must be an http:// or https:// URL with a host"))),
    };
    match (diff.candidate.as_str(), diff.recorded) {
        ("", false) if diff.baseline.is_empty() && diff.ignore.is_empty() => return Ok(()),
        ("", false) => return Err(invalid("--baseline and --diff-ignore need --candidate or --compare")),
        ("", true) => {}
        (_, true) => return Err(invalid("--compare and --candidate cannot go together: diff one or the other")),
        (candidate, false) => url("--candidate", candidate)?,
    }
    if !diff.baseline.is_empty() {
        url("--baseline", &diff.baseline)?;
    }
    if simulate {
        return Err(invalid("a diff needs real responses: --candidate and --compare cannot go with --simulate"));
    }
    DiffRules::new(&diff.ignore).map_err(|e| invalid(e.to_string()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use reprise_proto::v1::RequestRules;

    use super::*;

    fn request(options: ReplayOptions) -> StartReplayRequest {
        StartReplayRequest { recording_id: "rec-1".into(), options: Some(options), ..Default::default() }
    }

    fn valid() -> ReplayOptions {
        ReplayOptions {
            target: "http://127.0.0.1:8080".into(),
            multiple: 2,
            speed: 1.0,
            pacing: PacingMode::Original.into(),
            rate_per_sec: 100.0,
            max_in_flight: 8,
            ..Default::default()
        }
    }

    #[test]
    fn a_valid_request_converts_whole() {
        let mut wire = request(valid());
        wire.worker_labels.insert("zone".into(), "a".into());
        let spec = ReplaySpec::try_from(wire).unwrap();
        assert_eq!((spec.recording_id.as_str(), spec.options, spec.worker_labels.len()), ("rec-1", valid(), 1));
    }

    #[test]
    fn bad_requests_are_refused_with_the_flag_named() {
        type Spoil = fn(&mut ReplayOptions);
        let cases: [(Spoil, &str); 11] = [
            (|o| o.multiple = 0, "--multiple"),
            (|o| o.speed = f64::NAN, "--speed"),
            (|o| o.pacing = 9, "pacing mode 9"),
            (|o| o.rate_per_sec = -1.0, "--rate"),
            (|o| o.max_in_flight = 0, "--max-in-flight"),
            (|o| o.target = "ftp://host".into(), "http:// or https://"),
            (|o| o.rules = Some(RequestRules { deny_urls: vec!["[".into()], ..Default::default() }), "--deny-url"),
            (|o| o.diff = Some(DiffOptions { candidate: "b:1".into(), ..Default::default() }), "--candidate"),
            (|o| o.diff = Some(DiffOptions { baseline: "http://c".into(), ..Default::default() }), "need --candidate"),
            (
                |o| o.diff = Some(DiffOptions { candidate: "http://b".into(), recorded: true, ..Default::default() }),
                "--compare and --candidate",
            ),
            (
                |o| {
                    o.diff = Some(DiffOptions {
                        candidate: "http://b".into(),
                        ignore: vec!["$.a[".into()],
                        ..Default::default()
                    })
                },
                "--diff-ignore",
            ),
        ];
        for (spoil, named) in cases {
            let mut options = valid();
            spoil(&mut options);
            let error = ReplaySpec::try_from(request(options)).unwrap_err().to_string();
            assert!(error.contains(named), "{error:?} should name {named:?}");
        }
        let constant = ReplayOptions { pacing: PacingMode::Constant.into(), rate_per_sec: 0.0, ..valid() };
        assert!(ReplaySpec::try_from(request(constant)).unwrap_err().to_string().contains("--rate"));
        assert!(ReplaySpec::try_from(StartReplayRequest::default()).is_err(), "no options at all");
    }

    #[test]
    fn each_worker_gets_its_share_of_the_rate() {
        let spec = ReplaySpec::try_from(request(valid())).unwrap();
        assert_eq!(spec.worker_options(25, 100).rate_per_sec, 25.0);
        assert_eq!(spec.worker_options(25, 100).target, valid().target);
    }
}
