//! `--compare`: each replayed response is diffed against the one kept in the recording.
//! A request's recorded response follows it in its lane (the log is keyed by connection,
//! and such a replay keeps partitions whole), so a dispatch thread notes each request it
//! sends and meets both sides there: whichever of the replayed response and the recorded
//! one comes second completes the comparison. Requests whose counterpart never comes
//! (no recorded response, the replay stopped) are given up after [`GIVE_UP_AFTER`] and
//! counted as uncompared.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reprise_proto::v1::DiffOptions;
use reprise_rules::diff::Response;
use tokio::time::Instant;

use super::sides::DiffSides;
use crate::stats::Stats;

const GIVE_UP_AFTER: Duration = Duration::from_secs(60);
/// Requests noted between two sweeps for those to give up on.
const SWEEP_EVERY: usize = 1024;

/// A replay's comparison settings.
pub(crate) struct Compare {
    pub(super) sides: DiffSides,
}

impl Compare {
    /// `None` unless the options ask to compare with the recording.
    pub(crate) fn compile(options: Option<&DiffOptions>) -> Result<Option<Arc<Compare>>, String> {
        let Some(options) = options.filter(|o| o.recorded) else { return Ok(None) };
        Ok(Some(Arc::new(Compare { sides: DiffSides::compile(options)? })))
    }
}

/// A request: its connection and place in it (a recorded response names the same).
pub(super) type Key = (String, u64);

/// One dispatch thread's requests awaiting their counterpart.
pub(super) struct Pending {
    compare: Arc<Compare>,
    stats: Arc<Stats>,
    shard: usize,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    entries: HashMap<Key, Entry>,
    noted: usize,
}

struct Entry {
    slot: usize,
    request: String,
    /// Copies whose comparison is still to come.
    copies_left: u32,
    recorded: Option<Response>,
    /// The capture cut the recorded response's body (`--max-body`): replayed bodies are
    /// compared by as much of them.
    recorded_cut: bool,
    /// Replayed responses (with the baseline's) that came before the recorded one.
    waiting: Vec<(Response, Option<Response>)>,
    since: Instant,
}

impl Pending {
    pub(super) fn new(compare: Arc<Compare>, stats: Arc<Stats>, shard: usize) -> Arc<Pending> {
        Arc::new(Pending { compare, stats, shard, state: Mutex::new(State::default()) })
    }

    pub(super) fn compare(&self) -> &Compare {
        &self.compare
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("compare lock")
    }

    /// A request goes out `copies` times: its comparisons are to come.
    pub(super) fn expect(&self, key: Key, copies: u32, slot: usize, request: String) {
        let now = Instant::now();
        let mut state = self.state();
        state.noted += 1;
        if state.noted.is_multiple_of(SWEEP_EVERY) {
            self.give_up(&mut state, now.checked_sub(GIVE_UP_AFTER));
        }
        let entry = Entry {
            slot,
            request,
            copies_left: copies,
            recorded: None,
            recorded_cut: false,
            waiting: Vec::new(),
            since: now,
        };
        state.entries.insert(key, entry);
    }

    /// The recorded response of a request, and whether the capture cut its body (a
    /// request that was not sent has none to meet).
    pub(super) fn recorded(&self, key: &Key, response: Response, cut: bool) {
        let mut state = self.state();
        let Some(entry) = state.entries.get_mut(key) else { return };
        entry.recorded_cut = cut;
        for (actual, baseline) in std::mem::take(&mut entry.waiting) {
            self.count(entry, &response, &actual, baseline.as_ref());
        }
        entry.recorded = Some(response);
        if entry.copies_left == 0 {
            state.entries.remove(key);
        }
    }

    /// A copy's replayed response (and the baseline's).
    pub(super) fn replayed(&self, key: &Key, actual: Response, baseline: Option<Response>) {
        let mut state = self.state();
        let Some(entry) = state.entries.get_mut(key) else { return };
        match entry.recorded.take() {
            Some(recorded) => {
                self.count(entry, &recorded, &actual, baseline.as_ref());
                entry.recorded = Some(recorded);
            }
            None => entry.waiting.push((actual, baseline)),
        }
        if entry.copies_left == 0 {
            state.entries.remove(key);
        }
    }

    /// Gives up on every comparison still to come (the thread is done).
    pub(super) fn finish(&self) {
        self.give_up(&mut self.state(), None);
    }

    fn count(&self, entry: &mut Entry, recorded: &Response, actual: &Response, baseline: Option<&Response>) {
        let (differences, noise) = if entry.recorded_cut {
            let (actual, baseline) = (cut_like(actual, recorded), baseline.map(|b| cut_like(b, recorded)));
            self.compare.sides.judge(recorded, &actual, baseline.as_ref())
        } else {
            self.compare.sides.judge(recorded, actual, baseline)
        };
        self.stats.record_diff(self.shard, entry.slot, &entry.request, &differences, &noise);
        entry.copies_left = entry.copies_left.saturating_sub(1);
    }

    /// Drops the entries noted before `before` (all, with `None`), counting their copies
    /// still to compare.
    fn give_up(&self, state: &mut State, before: Option<Instant>) {
        let mut dropped = 0;
        state.entries.retain(|_, entry| {
            let keep = before.is_some_and(|before| entry.since >= before);
            if !keep {
                dropped += u64::from(entry.copies_left);
            }
            keep
        });
        self.stats.uncompared.fetch_add(dropped, Ordering::Relaxed);
    }
}

/// `response` with its body cut to the length of the recorded one's, which the capture cut.
fn cut_like(response: &Response, recorded: &Response) -> Response {
    let mut response = response.clone();
    if let (Response::Answered { body, .. }, Response::Answered { body: kept, .. }) = (&mut response, recorded) {
        *body = body.slice(..body.len().min(kept.len()));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answered(status: u16, body: &'static str) -> Response {
        let mut headers = http::HeaderMap::new();
        headers.insert("content-type", "application/json".parse().unwrap());
        Response::Answered {
            status,
            headers,
            body: bytes::Bytes::from_static(body.as_bytes()),
            trailers: http::HeaderMap::new(),
        }
    }

    #[test]
    fn either_side_may_come_first_a_cut_recording_compares_its_part_and_the_rest_is_given_up() {
        let compare = Compare::compile(Some(&DiffOptions { recorded: true, ..Default::default() })).unwrap().unwrap();
        let stats = Arc::new(Stats::new(&[], &[], 1));
        let slot = crate::stats::EndpointSlots::default().slot(&stats, 0, "GET /a");
        let pending = Pending::new(compare, stats.clone(), 0);
        let key = |s: u64| ("c1".to_string(), s);
        // Recorded first, then two copies replayed: one the same, one not.
        pending.expect(key(0), 2, slot, "/a".into());
        pending.recorded(&key(0), answered(200, r#"{"v":1}"#), false);
        pending.replayed(&key(0), answered(200, r#"{"v":1}"#), None);
        pending.replayed(&key(0), answered(200, r#"{"v":2}"#), None);
        // Replayed first.
        pending.expect(key(1), 1, slot, "/a".into());
        pending.replayed(&key(1), answered(500, r#"{"v":1}"#), None);
        pending.recorded(&key(1), answered(200, r#"{"v":1}"#), false);
        // A response to a request that was not sent, and a request whose response never came.
        // A recorded body the capture cut: the replayed one is compared by as much of it.
        pending.expect(key(3), 1, slot, "/a".into());
        pending.replayed(&key(3), answered(200, r#"{"v":1,"w":[1,2,3]}"#), None);
        pending.recorded(&key(3), answered(200, r#"{"v":1,"w""#), true);
        pending.recorded(&key(7), answered(200, "{}"), false);
        pending.expect(key(2), 1, slot, "/a".into());
        assert_eq!(pending.state().entries.len(), 1);
        pending.finish();
        let report = stats.report(
            &crate::stats::ReportId { worker_id: "w", replay_id: "r", part: 0 },
            1,
            Default::default(),
            "",
            false,
        );
        let e = &report.endpoints[0];
        assert_eq!((e.compared, e.differing, report.uncompared), (4, 2, 1));
        assert_eq!((e.fields["$.v"], e.fields["status"]), (1, 1));
    }
}
