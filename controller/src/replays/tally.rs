//! The live tally of a replay: each worker's latest report, merged into the cluster's
//! status, its per-second timeline and its outcome. Pure data, no network: the callers
//! pass the time in.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use hdrhistogram::Histogram;
use reprise_proto::v1::{
    PacingMode, ReplayState, ReplayStatus, TimelinePoint, WorkerProgress, WorkerReplayState, WorkerStats,
};
use reprise_store::schema::Replay;
use tokio::time::Instant;

use super::spec::ReplaySpec;
use super::stored::ReplayPlan;
use crate::planner::{Handover, PartKey, PartProgress, WorkerPlan, part_name};
use crate::status::{diff_results, empty_histogram, endpoint_results, histogram, percentiles};

/// Timeline points kept per replay (an hour at one per second).
const MAX_TIMELINE: usize = 3600;

/// A second's point is made at the latest this long after it, whether or not every
/// worker has reported it closed (a worker whose reports are late must not stall the
/// series).
const FORCE_CLOSE_S: i64 = 5;
/// Allowance for the clocks of controller and worker to differ when the controller
/// reckons that a lost worker's grace has passed.
pub const CLOCK_MARGIN: Duration = Duration::from_secs(1);

pub struct WorkerTally {
    pub address: String,
    planned_records: u64,
    grace: Duration,
    latest: Option<WorkerStats>,
    /// The most sends between two of the part's reports that reached here: about what a
    /// lost worker may have sent past its last report.
    most_sends_between_reports: u64,
    /// Why and since when the worker is out of reach.
    lost: Option<(String, Instant)>,
    handover: Option<Handover>,
    /// Why the part's ranges could not be handed over.
    abandoned: Option<String>,
}

impl WorkerTally {
    /// Nothing more will come from this part: its final report is in, it is lost, or its
    /// ranges went to others.
    pub fn is_final(&self) -> bool {
        self.lost.is_some() || self.handover.is_some() || self.latest.as_ref().is_some_and(|s| s.state().is_final())
    }

    fn released(&self) -> bool {
        self.latest.as_ref().is_some_and(|s| s.state() == WorkerReplayState::Released)
    }

    /// Lost or released, and its ranges not handed over yet.
    fn awaits_handover(&self) -> bool {
        (self.lost.is_some() || self.released()) && self.handover.is_none() && self.abandoned.is_none()
    }

    fn state_name(&self) -> String {
        match (&self.lost, &self.latest) {
            (None, Some(report)) => report.state().to_string(),
            (Some(_), _) => "lost".into(),
            (None, None) if self.handover.is_some() => "lost".into(),
            (None, None) => "starting".into(),
        }
    }

    fn error(&self) -> Option<String> {
        let reported = self.latest.as_ref().map(|s| s.error.clone()).filter(|e| !e.is_empty());
        self.lost.as_ref().map(|(reason, _)| reason.clone()).or(reported)
    }
}

pub struct Tally {
    pub workers: BTreeMap<PartKey, WorkerTally>,
    interval_latency: Histogram<u64>,
    interval_lag: Histogram<u64>,
    timeline: VecDeque<TimelinePoint>,
    /// Sends per Unix second per part, as the workers report them, until the second's
    /// point is made.
    seconds: BTreeMap<i64, BTreeMap<PartKey, u64>>,
    /// The first second without a point yet, once there is one.
    next_second: Option<i64>,
    /// Sends up to the end of the last second with a point.
    sent_through: u64,
    /// The replay's start, ns since the epoch.
    start_unix_ns: i64,
}

/// One count of a worker report.
type Count = fn(&WorkerStats) -> u64;

fn ok_count(s: &WorkerStats) -> u64 {
    s.status_1xx + s.status_2xx + s.status_3xx
}

fn error_count(s: &WorkerStats) -> u64 {
    s.errors_connect + s.errors_timeout + s.errors_reset + s.errors_other
}

impl Tally {
    /// An empty tally of the planned parts.
    pub fn new(plan: &ReplayPlan) -> Tally {
        let mut tally = Tally {
            workers: BTreeMap::new(),
            interval_latency: empty_histogram(),
            interval_lag: empty_histogram(),
            timeline: VecDeque::new(),
            seconds: BTreeMap::new(),
            next_second: None,
            sent_through: 0,
            start_unix_ns: 0,
        };
        for part in &plan.workers {
            tally.add_part(part);
        }
        tally
    }

    /// A part to follow (planned, or a takeover).
    pub fn add_part(&mut self, part: &WorkerPlan) {
        let tally = WorkerTally {
            address: part.address.clone(),
            planned_records: part.records,
            grace: Duration::from_millis(part.grace_ms),
            latest: None,
            most_sends_between_reports: 0,
            lost: None,
            handover: part.handed_over.clone(),
            abandoned: None,
        };
        self.workers.insert(part.key(), tally);
    }

    /// The replay starts (started) at this Unix time: its points count from here.
    pub fn start(&mut self, start_unix_ns: i64) {
        self.start_unix_ns = start_unix_ns;
    }

    /// Takes a report in; whether it was the part's final one.
    pub fn on_report(&mut self, key: &PartKey, mut report: WorkerStats) -> bool {
        let Some(worker) = self.workers.get_mut(key) else { return true };
        // A re-attached stream starts with the latest report, which may be known already.
        if worker.latest.as_ref().is_some_and(|l| l.seq >= report.seq) {
            return worker.is_final();
        }
        if let Some(previous) = &worker.latest {
            let between = report.sent.saturating_sub(previous.sent);
            worker.most_sends_between_reports = worker.most_sends_between_reports.max(between);
        }
        match (worker.latest.take(), report.light) {
            // A light report leaves the histograms and endpoints as they were.
            (Some(previous), true) => {
                report.latency_us_total = previous.latency_us_total;
                report.lag_us_total = previous.lag_us_total;
                report.endpoints = previous.endpoints;
            }
            _ => {
                let _ = self.interval_latency.add(histogram(&report.latency_us_interval));
                let _ = self.interval_lag.add(histogram(&report.lag_us_interval));
                // Counts so far: a later report of the same second replaces them. A second
                // whose point is made already (forced) takes nothing more.
                let made = self.next_second.unwrap_or(i64::MIN);
                for second in report.sends_per_second.iter().filter(|s| s.unix_s >= made) {
                    self.seconds.entry(second.unix_s).or_default().insert(key.clone(), second.sent);
                }
            }
        }
        worker.latest = Some(report);
        worker.is_final()
    }

    /// The worker is out of reach: every part of it that has not ended is lost, from `now`.
    pub fn mark_lost(&mut self, worker_id: &str, reason: &str, now: Instant) {
        for ((id, _), worker) in self.workers.iter_mut().filter(|((id, _), w)| id == worker_id && !w.is_final()) {
            worker.lost = Some((format!("worker {id} lost: {reason}"), now));
        }
    }

    pub fn is_part_final(&self, key: &PartKey) -> bool {
        self.workers.get(key).is_none_or(WorkerTally::is_final)
    }

    /// Parts whose ranges may go to others now: released ones at once, lost ones once
    /// their worker's grace (from when it was lost) has surely passed, so that it can no
    /// longer be sending.
    pub fn due_handovers(&self, now: Instant) -> Vec<PartKey> {
        let due = |w: &WorkerTally| match &w.lost {
            Some((_, since)) => now >= *since + w.grace + CLOCK_MARGIN,
            None => true,
        };
        self.workers.iter().filter(|(_, w)| w.awaits_handover() && due(w)).map(|(key, _)| key.clone()).collect()
    }

    /// The part's latest checkpoints and sends past them, if it reported any.
    pub fn progress(&self, key: &PartKey) -> Option<PartProgress> {
        let report = self.workers.get(key)?.latest.as_ref()?;
        let checkpoints = report.checkpoints.iter().map(|c| c.next_offset).collect();
        let passes = report.checkpoints.iter().map(|c| c.pass).collect();
        Some(PartProgress { checkpoints, passes, sends_past: report.sends_past_checkpoints })
    }

    /// The most sends seen between two of the part's reports.
    pub fn most_sends_between_reports(&self, key: &PartKey) -> u64 {
        self.workers.get(key).map_or(0, |w| w.most_sends_between_reports)
    }

    /// Whether the part stopped early and gave its ranges back (its last report is exact).
    pub fn is_released(&self, key: &PartKey) -> bool {
        self.workers.get(key).is_some_and(|w| w.lost.is_none() && w.released())
    }

    /// Workers that lost or gave back a part of this replay: no takeover goes to them.
    pub fn departed(&self) -> BTreeSet<String> {
        self.workers.iter().filter(|(_, w)| w.lost.is_some() || w.released()).map(|((id, _), _)| id.clone()).collect()
    }

    pub fn handed_over(&mut self, key: &PartKey, handover: Handover) {
        if let Some(worker) = self.workers.get_mut(key) {
            worker.handover = Some(handover);
        }
    }

    pub fn abandon(&mut self, key: &PartKey, reason: String) {
        if let Some(worker) = self.workers.get_mut(key) {
            worker.abandoned = Some(reason);
        }
    }

    /// Whether the replay can end: nothing more will come from any part, and every lost
    /// or released part was handed over (unless the replay is being cancelled).
    pub fn workers_final(&self, cancelling: bool) -> bool {
        self.workers.values().all(|w| w.is_final() && (cancelling || !w.awaits_handover()))
    }

    /// The final state from the parts: failed if a part failed, or was lost or released
    /// without a takeover (unless cancelled); cancelled if one was cancelled (or the user
    /// cancelled); else done.
    pub fn outcome(&self, cancelling: bool) -> (ReplayState, Option<String>) {
        let mut errors = Vec::new();
        let mut cancelled = cancelling;
        for ((id, part), worker) in &self.workers {
            if worker.handover.is_some() {
                continue;
            }
            let name = part_name(id, *part);
            let stranded = |why: &str| match &worker.abandoned {
                Some(abandoned) => format!("{why}; {abandoned}"),
                None => why.to_string(),
            };
            match (&worker.lost, worker.latest.as_ref().map(|l| (l.state(), &l.error))) {
                _ if cancelling && worker.awaits_handover() => {}
                (Some((reason, _)), _) => errors.push(stranded(reason)),
                (None, Some((WorkerReplayState::Failed, error))) => errors.push(format!("worker {name}: {error}")),
                (None, Some((WorkerReplayState::Released, _))) => {
                    errors.push(stranded(&format!("worker {name} stopped early")))
                }
                (None, Some((WorkerReplayState::Cancelled, _))) => cancelled = true,
                _ => {}
            }
        }
        if !errors.is_empty() {
            (ReplayState::Failed, Some(errors.join("; ")))
        } else if cancelled {
            (ReplayState::Cancelled, None)
        } else {
            (ReplayState::Done, None)
        }
    }

    fn reports(&self) -> impl Iterator<Item = &WorkerStats> {
        self.workers.values().filter_map(|w| w.latest.as_ref())
    }

    fn sum(&self, field: impl Fn(&WorkerStats) -> u64) -> u64 {
        self.reports().map(field).sum()
    }

    /// The first and the last send over every part's report, ns since the epoch (reports
    /// of workers too old to say are left out).
    fn send_window(&self) -> Option<(i64, i64)> {
        let first = self.reports().filter_map(|r| r.first_send_unix_ns).min()?;
        let last = self.reports().filter_map(|r| r.last_send_unix_ns).max()?;
        Some((first, last))
    }

    /// Named sums, e.g. responses by status class.
    fn named(&self, fields: &[(&str, Count)]) -> BTreeMap<String, u64> {
        fields.iter().map(|(name, field)| (name.to_string(), self.sum(field))).collect()
    }

    /// The points of the seconds that are complete: every part that may still send has
    /// reported the second closed, or it ended [`FORCE_CLOSE_S`] ago. Latency and lag are
    /// those reported since the previous point.
    pub fn timeline_points(&mut self, now_unix_ns: i64) -> Vec<TimelinePoint> {
        const NS: i64 = 1_000_000_000;
        let Some(first) = self.next_second.or_else(|| self.seconds.keys().next().copied()) else { return Vec::new() };
        // A worker's report at T carries every second before T's previous one closed.
        let reported_through = self
            .workers
            .values()
            .filter(|w| !w.is_final())
            .map(|w| w.latest.as_ref().map_or(i64::MIN, |r| r.at_unix_ns.div_euclid(NS) - 2));
        let horizon = match reported_through.min() {
            Some(through) => through.max(now_unix_ns.div_euclid(NS) - FORCE_CLOSE_S),
            None => self.seconds.keys().next_back().copied().unwrap_or(first - 1),
        };
        if horizon < first {
            return Vec::new();
        }
        let (latency, lag) = (percentiles(&self.interval_latency), percentiles(&self.interval_lag));
        self.interval_latency.reset();
        self.interval_lag.reset();
        let (ok, errors) = (self.sum(ok_count), self.sum(error_count));
        let mut points = Vec::new();
        for second in first.max(horizon - MAX_TIMELINE as i64 + 1)..=horizon {
            let mut workers = BTreeMap::new();
            for ((id, _), sent) in self.seconds.remove(&second).unwrap_or_default() {
                *workers.entry(id).or_default() += sent;
            }
            let sent: u64 = workers.values().sum();
            self.sent_through += sent;
            points.push(TimelinePoint {
                t_s: ((second + 1) * NS - self.start_unix_ns).max(0) as f64 / 1e9,
                at_ms: second * 1000,
                qps: sent as f64,
                sent: self.sent_through,
                ok,
                errors,
                latency_p50_ms: latency.p50,
                latency_p99_ms: latency.p99,
                lag_p99_ms: lag.p99,
                workers,
            });
        }
        self.next_second = Some(horizon + 1);
        for point in &points {
            if self.timeline.len() >= MAX_TIMELINE {
                self.timeline.pop_front();
            }
            self.timeline.push_back(point.clone());
        }
        points
    }

    pub fn timeline(&self) -> Vec<TimelinePoint> {
        self.timeline.iter().cloned().collect()
    }

    /// One row per part: its worker, state, counts and handover.
    fn part_rows(&self) -> Vec<WorkerProgress> {
        let row = |((id, part), w): (&PartKey, &WorkerTally)| WorkerProgress {
            id: id.clone(),
            address: w.address.clone(),
            state: w.state_name(),
            planned_records: w.planned_records,
            read: w.latest.as_ref().map_or(0, |s| s.records_read),
            sent: w.latest.as_ref().map_or(0, |s| s.sent),
            error: w.error(),
            part: *part,
            handed_to: w.handover.as_ref().map(|h| h.to.clone()).unwrap_or_default(),
        };
        self.workers.iter().map(row).collect()
    }

    fn handovers(&self) -> impl Iterator<Item = &Handover> {
        self.workers.values().filter_map(|w| w.handover.as_ref())
    }

    /// The replay's status: the record's state and times, the spec, and the merged reports.
    pub fn status(&self, replay: &Replay, spec: &ReplaySpec, plan: &ReplayPlan, now_ms: i64) -> ReplayStatus {
        let (mut latency, mut lag) = (empty_histogram(), empty_histogram());
        for report in self.reports() {
            let _ = latency.add(histogram(&report.latency_us_total));
            let _ = lag.add(histogram(&report.lag_us_total));
        }
        let (sent, read) = (self.sum(|s| s.sent), self.sum(|s| s.records_read));
        let duration_s = match (replay.state.is_final(), self.send_window(), replay.started_at_ms) {
            // Ended: from the first send to the last, not to the report that said so.
            (true, Some((first, last)), _) => (last - first).max(0) as f64 / 1e9,
            (_, _, Some(start)) => (replay.finished_at_ms.unwrap_or(now_ms) - start).max(0) as f64 / 1000.0,
            _ => 0.0,
        };
        let progress = progress(read, duration_s, spec, plan);
        let original = spec.pacing() == PacingMode::Original;
        let timeline_s = if original { plan.timeline_s(spec) } else { spec.until().map(|d| d.as_secs_f64()) };
        let eta_s = match replay.state {
            s if s.is_final() => Some(0.0),
            _ if timeline_s.is_some() => timeline_s.map(|t| (t - duration_s).max(0.0)),
            _ if progress > 0.0 => Some(duration_s * (1.0 - progress) / progress),
            _ => None,
        };
        let mut status = ReplayStatus {
            id: replay.id.clone(),
            recording_id: replay.recording_id.clone(),
            target: replay.target.clone(),
            state: replay.state.into(),
            error: replay.error.clone(),
            multiple: spec.options.multiple,
            speed: original.then_some(spec.options.speed),
            pacing: spec.options.pacing,
            rate: (spec.options.rate_per_sec > 0.0).then_some(spec.options.rate_per_sec),
            records: plan.records,
            read,
            skipped: self.sum(|s| s.records_skipped),
            sent,
            ok: self.sum(ok_count),
            errors: self.sum(error_count),
            http_errors: self.sum(|s| s.status_4xx + s.status_5xx),
            status: self.named(&[
                ("1xx", |s| s.status_1xx),
                ("2xx", |s| s.status_2xx),
                ("3xx", |s| s.status_3xx),
                ("4xx", |s| s.status_4xx),
                ("5xx", |s| s.status_5xx),
            ]),
            error_kinds: self.named(&[
                ("connect", |s| s.errors_connect),
                ("timeout", |s| s.errors_timeout),
                ("reset", |s| s.errors_reset),
                ("other", |s| s.errors_other),
            ]),
            bytes_sent: self.sum(|s| s.bytes_sent),
            bytes_received: self.sum(|s| s.bytes_received),
            in_flight: self.sum(|s| s.in_flight),
            qps: if duration_s > 0.0 { sent as f64 / duration_s } else { 0.0 },
            current_qps: self.timeline.back().map_or(0.0, |p| p.qps),
            duration_s,
            progress,
            eta_s,
            created_at_ms: replay.created_at_ms,
            started_at_ms: replay.started_at_ms,
            finished_at_ms: replay.finished_at_ms,
            // No response, no latency: timeouts and errors are counted, never timed as 0 ms.
            latency_ms: (!latency.is_empty()).then(|| percentiles(&latency)),
            lag_ms: Some(percentiles(&lag)),
            workers: self.part_rows(),
            reassigned: self.handovers().map(|h| h.records).sum(),
            duplicates_bound: self.handovers().map(|h| h.duplicates_bound).sum(),
            current_pass: self.reports().map(|r| r.current_pass).max().unwrap_or(0),
            passes: spec.passes().unwrap_or(0),
            breach: None,
            warnings: plan.warnings.clone(),
            sent_cut: self.sum(|s| s.sent_cut),
            filtered: self.sum(|s| s.records_filtered),
            endpoints: endpoint_results(self.reports().map(|r| &r.endpoints[..])),
            diffs: diff_results(self.reports().map(|r| &r.endpoints[..])),
            uncompared: self.sum(|s| s.uncompared),
        };
        judge(&mut status, replay.state, spec);
        status
    }

    /// Each part's latest report, with its worker's id (for metrics).
    pub fn latest_reports(&self) -> impl Iterator<Item = (&str, &WorkerStats)> {
        self.workers.iter().filter_map(|((id, _), w)| Some((id.as_str(), w.latest.as_ref()?)))
    }
}

/// What a status tells beyond its counts: requests sent with a cut body, and, once the
/// replay ran to its end, whether it breached its thresholds.
fn judge(status: &mut ReplayStatus, state: ReplayState, spec: &ReplaySpec) {
    if spec.compares_recorded() && state == ReplayState::Done && status.diffs.is_empty() && status.sent > 0 {
        status
            .warnings
            .push("no response was compared: the recording holds no responses (record with --track-responses)".into());
    } else if status.uncompared > 0 {
        let n = status.uncompared;
        status.warnings.push(format!("{n} requests or recorded responses found nothing to be compared with"));
    }
    if status.sent_cut > 0 {
        let cut = status.sent_cut;
        status.warnings.push(format!(
            "{cut} requests went out with the body cut short, as the capture stored them (its --max-body)"
        ));
    }
    if state == ReplayState::Done {
        status.breach = breach(status, spec);
    }
}

/// Why a replay that ran to its end breached its thresholds, if it did: nothing sent,
/// no send answered with 1xx-3xx, or more failed sends (transport errors and 5xx) than
/// `max_error_rate` allows. A simulated replay sends nothing real and has none.
fn breach(status: &ReplayStatus, spec: &ReplaySpec) -> Option<String> {
    if spec.options.simulate {
        return None;
    }
    let server_errors = status.status.get("5xx").copied().unwrap_or(0);
    let finished = status.ok + status.http_errors + status.errors;
    let failed = status.errors + server_errors;
    let kinds = || {
        let named = status.error_kinds.iter().filter(|(_, n)| **n > 0).map(|(k, n)| format!("{k} {n}"));
        named.chain((server_errors > 0).then(|| format!("5xx {server_errors}"))).collect::<Vec<_>>().join(", ")
    };
    if status.sent == 0 {
        let filtered = match status.filtered {
            0 => String::new(),
            n => format!(", {n} left out by the replay's rules"),
        };
        return Some(format!(
            "no request was sent ({} records read, {} skipped{filtered})",
            status.read, status.skipped
        ));
    }
    if status.ok == 0 {
        let why = if failed > 0 { kinds() } else { format!("4xx {}", status.http_errors) };
        return Some(format!("no request succeeded: {finished} sends, {why}"));
    }
    let rate = failed as f64 / finished.max(1) as f64;
    let max = spec.max_error_rate();
    (rate > max).then(|| {
        format!(
            "error rate {:.1}% over the maximum {:.1}%: {failed} of {finished} sends failed ({})",
            rate * 100.0,
            max * 100.0,
            kinds()
        )
    })
}

/// Share of the replay done: records read of those planned over every pass, or time on
/// the timeline of the duration, whichever is further (an endless replay without a
/// duration has no end to measure against: 0).
fn progress(read: u64, duration_s: f64, spec: &ReplaySpec, plan: &ReplayPlan) -> f64 {
    let by_records = spec.passes().map(|passes| {
        let planned = plan.records * u64::from(passes);
        if planned == 0 { 1.0 } else { read as f64 / planned as f64 }
    });
    let by_time = spec.until().map(|until| duration_s / until.as_secs_f64().max(1e-9));
    by_records.into_iter().chain(by_time).fold(0.0, f64::max).min(1.0)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use hdrhistogram::serialization::{Serializer, V2Serializer};
    use reprise_proto::v1::{ReplayOptions, SecondSends, WorkerReplayState};
    use reprise_store::log::RangeSpec;

    use super::*;
    use crate::planner::WorkerPlan;

    fn plan(workers: &[&str]) -> ReplayPlan {
        let worker = |id: &&str| WorkerPlan {
            worker_id: id.to_string(),
            address: format!("{id}:1"),
            shares: vec![RangeSpec::whole(0, 0, 50)],
            resume: Vec::new(),
            records: 50,
            part: 0,
            grace_ms: 1000,
            progress: None,
            handed_over: None,
        };
        ReplayPlan {
            records: 50 * workers.len() as u64,
            span_ns: 10_000_000_000,
            workers: workers.iter().map(worker).collect(),
            ..Default::default()
        }
    }

    fn spec(pacing: PacingMode) -> ReplaySpec {
        let options =
            ReplayOptions { multiple: 2, speed: 2.0, pacing: pacing.into(), rate_per_sec: 0.0, ..Default::default() };
        ReplaySpec { options, ..Default::default() }
    }

    fn replay(state: ReplayState, started_at_ms: Option<i64>, finished_at_ms: Option<i64>) -> Replay {
        Replay {
            id: "rep-1".into(),
            recording_id: "rec-1".into(),
            target: "http://t".into(),
            state,
            options: Default::default(),
            plan: Default::default(),
            summary: Default::default(),
            error: None,
            created_at_ms: 1,
            started_at_ms,
            finished_at_ms,
            cancel_requested: false,
        }
    }

    fn key(id: &str) -> PartKey {
        (id.to_string(), 0)
    }

    fn encoded(values_us: &[u64]) -> Vec<u8> {
        let mut h = empty_histogram();
        values_us.iter().for_each(|v| h.record(*v).unwrap());
        let mut out = Vec::new();
        V2Serializer::new().serialize(&h, &mut out).unwrap();
        out
    }

    fn report(seq: u64, state: WorkerReplayState, read: u64, sent: u64, latency_us: &[u64]) -> WorkerStats {
        WorkerStats {
            seq,
            state: state.into(),
            records_read: read,
            sent,
            status_2xx: sent.saturating_sub(2),
            status_5xx: sent.min(1),
            errors_timeout: sent.min(1),
            latency_us_total: encoded(latency_us),
            latency_us_interval: encoded(latency_us),
            ..Default::default()
        }
    }

    #[test]
    fn reports_merge_into_one_status() {
        let plan = plan(&["a", "b"]);
        let mut tally = Tally::new(&plan);
        assert!(!tally.on_report(&key("a"), report(1, WorkerReplayState::Running, 20, 30, &[1000, 3000])));
        assert!(!tally.on_report(&key("b"), report(1, WorkerReplayState::Running, 30, 40, &[5000])));
        let status =
            tally.status(&replay(ReplayState::Running, Some(1_000), None), &spec(PacingMode::Original), &plan, 5_000);
        assert_eq!((status.read, status.sent, status.ok, status.http_errors, status.errors), (50, 70, 66, 2, 2));
        assert_eq!((status.status["2xx"], status.error_kinds["timeout"]), (66, 2));
        assert_eq!((status.progress, status.duration_s, status.qps), (0.5, 4.0, 17.5));
        assert_eq!(status.eta_s, Some(1.0), "10 s recorded at speed 2, 4 s in");
        assert!((status.latency().max - 5.0).abs() < 0.01, "{:?}", status.latency());
        assert_eq!((status.speed, status.multiple, status.pacing()), (Some(2.0), 2, PacingMode::Original));
        let states: Vec<&str> = status.workers.iter().map(|w| w.state.as_str()).collect();
        assert_eq!(states, ["running", "running"]);
    }

    #[test]
    fn an_ended_replay_lasts_from_its_first_send_to_its_last() {
        let plan = plan(&["a", "b"]);
        let mut tally = Tally::new(&plan);
        let sends = |first_ms: i64, last_ms: i64| WorkerStats {
            first_send_unix_ns: Some(first_ms * 1_000_000),
            last_send_unix_ns: Some(last_ms * 1_000_000),
            ..report(1, WorkerReplayState::Done, 300, 300, &[1000])
        };
        tally.on_report(&key("a"), sends(1_002, 16_001));
        tally.on_report(&key("b"), sends(1_001, 15_998));
        // The controller saw the end at the next report, at 17 s: the summary says 15 s.
        let ended = replay(ReplayState::Done, Some(1_000), Some(17_000));
        let status = tally.status(&ended, &spec(PacingMode::Original), &plan, 17_000);
        assert_eq!((status.duration_s, status.qps), (15.0, 40.0));
        let running =
            tally.status(&replay(ReplayState::Running, Some(1_000), None), &spec(PacingMode::Original), &plan, 9_000);
        assert_eq!(running.duration_s, 8.0, "while it runs: since the start");
    }

    #[test]
    fn the_most_sends_between_two_reports_is_kept_per_part() {
        let plan = plan(&["a", "b"]);
        let mut tally = Tally::new(&plan);
        for (seq, sent) in [(1, 100), (2, 400), (3, 450), (4, 450)] {
            tally.on_report(&key("a"), report(seq, WorkerReplayState::Running, sent, sent, &[1000]));
        }
        tally.on_report(&key("b"), report(1, WorkerReplayState::Running, 900, 900, &[1000]));
        assert_eq!(tally.most_sends_between_reports(&key("a")), 300, "the sends before the first report are not a gap");
        assert_eq!(tally.most_sends_between_reports(&key("b")), 0);
    }

    #[test]
    fn a_repeated_or_older_report_changes_nothing() {
        let plan = plan(&["a"]);
        let mut tally = Tally::new(&plan);
        let with_second =
            |r: WorkerStats| WorkerStats { sends_per_second: vec![SecondSends { unix_s: 0, sent: 10 }], ..r };
        tally.on_report(&key("a"), with_second(report(2, WorkerReplayState::Running, 10, 10, &[1000])));
        tally.on_report(&key("a"), report(1, WorkerReplayState::Running, 5, 5, &[1000]));
        tally.on_report(&key("a"), with_second(report(2, WorkerReplayState::Running, 10, 10, &[1000])));
        let status = tally.status(&replay(ReplayState::Running, None, None), &spec(PacingMode::Max), &plan, 0);
        assert_eq!(status.sent, 10);
        let point = &tally.timeline_points(10 * NS)[0];
        assert_eq!((point.qps, point.latency_p99_ms), (10.0, 1.0), "the report counted once");
        assert!(tally.on_report(&key("unknown"), report(1, WorkerReplayState::Running, 1, 1, &[])), "unknown: ignored");
    }

    #[test]
    fn the_outcome_is_the_worst_final_state() {
        let plan = plan(&["a", "b"]);
        let mut tally = Tally::new(&plan);
        tally.on_report(&key("a"), report(1, WorkerReplayState::Done, 50, 50, &[]));
        assert!(!tally.workers_final(false));
        assert!(tally.on_report(&key("b"), report(1, WorkerReplayState::Done, 50, 50, &[])));
        assert!(tally.workers_final(false));
        assert_eq!(tally.outcome(false), (ReplayState::Done, None));
        assert_eq!(tally.outcome(true), (ReplayState::Cancelled, None), "the user cancelled");
        tally.on_report(&key("b"), report(2, WorkerReplayState::Cancelled, 50, 50, &[]));
        assert_eq!(tally.outcome(false), (ReplayState::Cancelled, None));
        tally.workers.get_mut(&key("a")).unwrap().latest = None;
        tally.mark_lost("a", "gone", Instant::now());
        assert_eq!(tally.outcome(false), (ReplayState::Failed, Some("worker a lost: gone".into())));
        let status = tally.status(&replay(ReplayState::Failed, Some(0), Some(1)), &spec(PacingMode::Max), &plan, 0);
        assert_eq!((status.workers[0].state.as_str(), status.eta_s), ("lost", Some(0.0)));
        assert_eq!(status.workers[0].error.as_deref(), Some("worker a lost: gone"));
    }

    #[test]
    fn lost_and_released_parts_are_handed_over_then_count_as_done() {
        let plan = plan(&["a", "b", "c"]);
        let mut tally = Tally::new(&plan);
        let t0 = Instant::now();
        let mut released = report(3, WorkerReplayState::Released, 20, 20, &[]);
        released.sends_past_checkpoints = 2;
        tally.on_report(&key("b"), released);
        tally.on_report(&key("c"), report(1, WorkerReplayState::Done, 50, 50, &[]));
        tally.mark_lost("a", "gone", t0);
        assert_eq!(tally.departed().into_iter().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(tally.due_handovers(t0), [key("b")], "released: at once; lost: after its grace");
        let after_grace = t0 + Duration::from_millis(1000) + CLOCK_MARGIN;
        assert_eq!(tally.due_handovers(after_grace), [key("a"), key("b")]);
        assert!(tally.is_released(&key("b")) && !tally.is_released(&key("a")));
        assert_eq!(tally.progress(&key("b")).unwrap().sends_past, 2);
        assert!(!tally.workers_final(false), "handovers pending");
        assert!(tally.workers_final(true), "unless the replay is being cancelled");
        tally.handed_over(&key("b"), Handover { to: vec!["c#1".into()], records: 30, duplicates_bound: 2 });
        tally.abandon(&key("a"), "no live worker was left".into());
        let (state, error) = tally.outcome(false);
        assert_eq!(
            (state, error.as_deref()),
            (ReplayState::Failed, Some("worker a lost: gone; no live worker was left"))
        );
        tally.handed_over(&key("a"), Handover { to: vec!["c#2".into()], records: 50, duplicates_bound: 8 });
        assert_eq!(tally.outcome(false), (ReplayState::Done, None));
        let status = tally.status(&replay(ReplayState::Done, Some(0), Some(1)), &spec(PacingMode::Max), &plan, 0);
        assert_eq!((status.reassigned, status.duplicates_bound), (80, 10));
        let states: Vec<&str> = status.workers.iter().map(|w| w.state.as_str()).collect();
        assert_eq!(states, ["lost", "released", "done"]);
        assert_eq!(status.workers[1].handed_to, ["c#1"]);
    }

    #[test]
    fn a_light_report_keeps_the_histograms() {
        let plan = plan(&["a"]);
        let mut tally = Tally::new(&plan);
        tally.on_report(&key("a"), report(1, WorkerReplayState::Running, 10, 10, &[4000]));
        let light =
            WorkerStats { light: true, latency_us_total: vec![], ..report(2, WorkerReplayState::Running, 15, 15, &[]) };
        tally.on_report(&key("a"), light);
        let status = tally.status(&replay(ReplayState::Running, None, None), &spec(PacingMode::Max), &plan, 0);
        assert_eq!(status.sent, 15);
        assert!((status.latency().max - 4.0).abs() < 0.01, "{:?}", status.latency());
    }

    const NS: i64 = 1_000_000_000;

    /// A report made at Unix second `at`, with sends per second.
    fn at(at: i64, report: WorkerStats, seconds: &[(i64, u64)]) -> WorkerStats {
        let sends_per_second = seconds.iter().map(|&(unix_s, sent)| SecondSends { unix_s, sent }).collect();
        WorkerStats { at_unix_ns: at * NS, sends_per_second, ..report }
    }

    #[test]
    fn timeline_points_are_unix_seconds_made_once_every_part_reported_them_closed() {
        use WorkerReplayState::{Done, Running};
        let plan = plan(&["a", "b"]);
        let mut tally = Tally::new(&plan);
        tally.start(100 * NS + NS / 2);
        tally.on_report(&key("a"), at(102, report(1, Running, 15, 15, &[2000]), &[(100, 5), (101, 10)]));
        assert!(tally.timeline_points(102 * NS).is_empty(), "b has not reported");
        tally.on_report(&key("b"), at(102, report(1, Running, 5, 5, &[]), &[(101, 5)]));
        let points = tally.timeline_points(102 * NS);
        assert_eq!(points.len(), 1, "{points:?}");
        let p = &points[0];
        assert_eq!((p.at_ms, p.qps, p.sent, p.t_s, p.latency_p99_ms), (100_000, 5.0, 5, 0.5, 2.0));
        assert_eq!(p.workers, [("a".to_string(), 5)].into());

        // 101 closes once both said so; b has ended, a goes on.
        tally.on_report(&key("a"), at(103, report(2, Running, 26, 26, &[]), &[(101, 12), (102, 4)]));
        tally.on_report(&key("b"), at(103, report(2, Done, 5, 5, &[]), &[(101, 5)]));
        let points = tally.timeline_points(103 * NS);
        let p = &points[0];
        assert_eq!((points.len(), p.at_ms, p.qps, p.sent, p.t_s), (1, 101_000, 17.0, 22, 1.5));
        assert_eq!((p.workers["a"], p.workers["b"], p.latency_p99_ms), (12, 5, 0.0), "percentiles start again");

        // a goes silent: its open second is made anyway, FORCE_CLOSE_S later, and a late
        // count for it changes nothing.
        assert!(tally.timeline_points((102 + FORCE_CLOSE_S) * NS - 1).is_empty());
        let forced = tally.timeline_points((102 + FORCE_CLOSE_S) * NS);
        assert_eq!(forced.iter().map(|p| (p.at_ms, p.qps)).collect::<Vec<_>>(), [(102_000, 4.0)]);
        tally.on_report(&key("a"), at(108, report(3, Done, 31, 31, &[]), &[(102, 6), (104, 1)]));
        let last = tally.timeline_points(108 * NS);
        let seconds: Vec<(i64, f64)> = last.iter().map(|p| (p.at_ms / 1000, p.qps)).collect();
        assert_eq!(seconds, [(103, 0.0), (104, 1.0)], "a quiet second is a 0, and all ends are in");
        assert_eq!(tally.timeline().len(), 5);
        let status = tally.status(&replay(ReplayState::Running, None, None), &spec(PacingMode::Max), &plan, 0);
        assert_eq!(status.current_qps, 1.0);
    }

    #[test]
    fn a_replay_breaches_when_too_many_sends_fail_or_none_succeeds() {
        let done = |ok: u64, c5xx: u64, c4xx: u64, timeouts: u64| ReplayStatus {
            sent: ok + c5xx + c4xx + timeouts,
            ok,
            http_errors: c5xx + c4xx,
            errors: timeouts,
            status: [("4xx".to_string(), c4xx), ("5xx".to_string(), c5xx)].into(),
            error_kinds: [("timeout".to_string(), timeouts), ("connect".to_string(), 0)].into(),
            ..Default::default()
        };
        let spec = |max: Option<f64>| ReplaySpec {
            options: ReplayOptions { max_error_rate: max, ..Default::default() },
            ..Default::default()
        };
        assert_eq!(breach(&done(60, 30, 10, 0), &spec(None)), None, "30% failed, 4xx not counted");
        assert_eq!(
            breach(&done(40, 50, 0, 10), &spec(None)).as_deref(),
            Some("error rate 60.0% over the maximum 50.0%: 60 of 100 sends failed (timeout 10, 5xx 50)")
        );
        assert!(breach(&done(99, 1, 0, 0), &spec(Some(0.0))).is_some(), "zero tolerance");
        assert_eq!(
            breach(&done(0, 0, 7, 0), &spec(Some(1.0))).as_deref(),
            Some("no request succeeded: 7 sends, 4xx 7")
        );
        assert_eq!(
            breach(&ReplayStatus { read: 3, skipped: 3, ..Default::default() }, &spec(None)).as_deref(),
            Some("no request was sent (3 records read, 3 skipped)")
        );
        let simulated =
            ReplaySpec { options: ReplayOptions { simulate: true, ..Default::default() }, ..Default::default() };
        assert_eq!(breach(&done(0, 0, 0, 0), &simulated), None);
    }
}
