//! Splitting a recording over workers so that load is spread over all workers at every
//! moment of the timeline.
//!
//! Cutting a partition into contiguous pieces would be wrong: the first worker would
//! carry the whole first half of the timeline alone. Instead:
//! * whole partitions go to workers (largest first, to the least loaded worker) when
//!   that balances the record counts within [`BALANCE_TOLERANCE`];
//! * otherwise (fewer partitions than workers, or skewed partitions) every partition is
//!   striped over all workers: worker `j` of `k` reads the offsets where
//!   `offset % k == (j + partition) % k`. Each worker then holds an even sample of the
//!   whole timeline, at the cost of every worker reading every partition.
//!
//! A session-aware replay ([`Split::ByConnection`]) keeps every record of one original
//! connection with one worker: the log is keyed by connection, so a partition holds
//! whole connections, and partitions go whole to workers however unbalanced (spread a
//! recording over as many partitions as workers and their dispatch threads).

use reprise_store::log::RangeSpec;
use reprise_store::schema::PartitionRange;
use serde::{Deserialize, Serialize};

/// Largest tolerated excess of the busiest worker over the mean, for whole partitions.
const BALANCE_TOLERANCE: f64 = 0.05;

/// One worker's part of a replay: part 0 is its planned share, a part above 0 ranges it
/// took over from a lost worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerPlan {
    pub worker_id: String,
    pub address: String,
    pub shares: Vec<RangeSpec>,
    /// Per share, where this part picks it up (a takeover of a looping replay may start
    /// mid-pass); empty: every share whole from the first pass.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resume: Vec<Resume>,
    /// Records this part reads, over all its passes (one pass for an endless replay).
    pub records: u64,
    #[serde(default)]
    pub part: u32,
    /// The worker's controller grace: once it has lost touch, it may still be sending
    /// for this long, so its ranges go to others only after it.
    #[serde(default = "default_grace_ms")]
    pub grace_ms: u64,
    /// The part's progress as last stored (about once a second): where a takeover
    /// resumes when no fresher report is at hand.
    #[serde(default)]
    pub progress: Option<PartProgress>,
    /// Once the part was lost or released: the parts that took its ranges over ("w2#1";
    /// empty if nothing was left), and how many requests that may have sent twice.
    #[serde(default)]
    pub handed_over: Option<Handover>,
}

/// Where a part stands: per share, the offset below which every record has finished
/// (in the pass `passes[i]`, every earlier pass finished), and the sends past them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PartProgress {
    pub checkpoints: Vec<i64>,
    #[serde(default)]
    pub passes: Vec<u32>,
    pub sends_past: u64,
}

/// A place in a looping replay's share: an offset within a pass (from 0).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resume {
    pub pass: u32,
    pub offset: i64,
}

/// Records of `share` from `from` on, over `passes` (`None`, endless: to the end of
/// `from`'s pass).
pub fn remaining_records(share: &RangeSpec, from: Resume, passes: Option<u32>) -> u64 {
    let later = passes.map_or(0, |p| u64::from(p.saturating_sub(from.pass + 1)));
    share.from_offset(from.offset).len() + later * share.len()
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Handover {
    pub to: Vec<String>,
    pub records: u64,
    pub duplicates_bound: u64,
}

/// What a worker registered before it had to say (its default).
fn default_grace_ms() -> u64 {
    15_000
}

impl WorkerPlan {
    fn new(worker: &Candidate, part: u32) -> WorkerPlan {
        WorkerPlan {
            worker_id: worker.id.clone(),
            address: worker.address.clone(),
            shares: Vec::new(),
            resume: Vec::new(),
            records: 0,
            part,
            grace_ms: worker.grace_ms,
            progress: None,
            handed_over: None,
        }
    }

    pub fn key(&self) -> PartKey {
        (self.worker_id.clone(), self.part)
    }

    /// How the part is named in statuses: the worker, and the part when above 0.
    pub fn name(&self) -> String {
        part_name(&self.worker_id, self.part)
    }

    /// Where the part picks share `i` up.
    pub fn start_of(&self, i: usize) -> Resume {
        self.resume.get(i).copied().unwrap_or(Resume { pass: 0, offset: self.shares[i].start })
    }

    /// What is left of the part's shares over `passes` (`None`: endless), from
    /// `progress` on (shares it has no checkpoint for, from where the part picked them
    /// up): each share whole, with where the rest starts.
    pub fn remainder(&self, progress: &PartProgress, passes: Option<u32>) -> Vec<(RangeSpec, Resume)> {
        let checkpoint = |i: usize| {
            let offset = *progress.checkpoints.get(i)?;
            Some(Resume { pass: progress.passes.get(i).copied().unwrap_or(0), offset })
        };
        let mut left = Vec::new();
        for (i, share) in self.shares.iter().enumerate() {
            let mut from = checkpoint(i).unwrap_or_else(|| self.start_of(i));
            if share.from_offset(from.offset).is_empty() {
                from = Resume { pass: from.pass + 1, offset: share.start };
            }
            if !share.is_empty() && passes.is_none_or(|p| from.pass < p) {
                left.push((*share, from));
            }
        }
        left
    }
}

/// A worker's part of a replay: the worker's id and the part number.
pub type PartKey = (String, u32);

/// "w1" for a worker's planned share, "w1#2" for the second set of ranges it took over.
pub fn part_name(worker_id: &str, part: u32) -> String {
    if part == 0 { worker_id.to_string() } else { format!("{worker_id}#{part}") }
}

/// A worker that can take a share.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub id: String,
    pub address: String,
    pub grace_ms: u64,
}

/// How a plan may cut the recording.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// Whole partitions when balanced, else every partition striped by offset.
    Striped,
    /// Whole partitions only, so that each original connection stays on one worker.
    ByConnection,
}

impl Split {
    pub fn of(sessions: bool) -> Split {
        if sessions { Split::ByConnection } else { Split::Striped }
    }
}

/// Plans `ranges` over `workers`. Workers that would get nothing are left out.
pub fn plan(ranges: &[PartitionRange], workers: &[Candidate], split: Split) -> Vec<WorkerPlan> {
    let ranges: Vec<&PartitionRange> = ranges.iter().filter(|r| !r.is_empty()).collect();
    if workers.is_empty() || ranges.is_empty() {
        return Vec::new();
    }
    let mut plans: Vec<WorkerPlan> = workers.iter().map(|w| WorkerPlan::new(w, 0)).collect();
    let balanced = whole_partitions(&ranges, &mut plans);
    if split == Split::ByConnection || (ranges.len() >= workers.len() && balanced) {
        plans.retain(|p| p.records > 0);
        return plans;
    }
    let k = workers.len() as u32;
    for plan in &mut plans {
        plan.shares.clear();
        plan.records = 0;
    }
    for (j, plan) in plans.iter_mut().enumerate() {
        for range in &ranges {
            let phase = (j as u32 + range.partition.unsigned_abs()) % k;
            let share = RangeSpec { partition: range.partition, start: range.start, end: range.end, stride: k, phase };
            plan.records += share.len();
            plan.shares.push(share);
        }
    }
    plans.retain(|p| p.records > 0);
    plans
}

/// Spreads what is left of lost parts over `workers`: every range is striped over all of
/// them, as a plan is, so the takeover is shared evenly (whole ranges to the least
/// loaded, by connection). `next_part(worker)` numbers each worker's new part.
pub fn takeover(
    remainder: &[(RangeSpec, Resume)],
    passes: Option<u32>,
    workers: &[Candidate],
    next_part: impl Fn(&str) -> u32,
    split: Split,
) -> Vec<WorkerPlan> {
    let mut plans: Vec<WorkerPlan> = workers.iter().map(|w| WorkerPlan::new(w, next_part(&w.id))).collect();
    if plans.is_empty() {
        return plans;
    }
    for (range, from) in remainder {
        let stripes = match split {
            Split::ByConnection => vec![*range],
            Split::Striped => range.split(plans.len() as u32),
        };
        // Striped from the share's start, so that later passes split the same way.
        for (j, stripe) in stripes.into_iter().enumerate() {
            let j = match split {
                Split::ByConnection => (0..plans.len()).min_by_key(|&i| plans[i].records).expect("a worker"),
                Split::Striped => j,
            };
            let records = remaining_records(&stripe, *from, passes);
            // An endless replay's stripe counts one pass, but has every later one to send.
            if records > 0 || (passes.is_none() && !stripe.is_empty()) {
                plans[j].records += records;
                plans[j].shares.push(stripe);
                plans[j].resume.push(*from);
            }
        }
    }
    plans.retain(|p| p.records > 0);
    plans
}

/// Longest-processing-time assignment of whole partitions; whether it is balanced.
fn whole_partitions(ranges: &[&PartitionRange], plans: &mut [WorkerPlan]) -> bool {
    let mut by_size: Vec<&&PartitionRange> = ranges.iter().collect();
    by_size.sort_by_key(|r| (std::cmp::Reverse(r.len()), r.partition));
    for range in by_size {
        let least = plans.iter_mut().min_by_key(|p| p.records).expect("at least one worker");
        least.shares.push(RangeSpec::whole(range.partition, range.start, range.end));
        least.records += range.len();
    }
    let total: u64 = plans.iter().map(|p| p.records).sum();
    let mean = total as f64 / plans.len() as f64;
    let busiest = plans.iter().map(|p| p.records).max().unwrap_or(0) as f64;
    busiest <= mean * (1.0 + BALANCE_TOLERANCE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workers(n: usize) -> Vec<Candidate> {
        (0..n)
            .map(|i| Candidate { id: format!("w{i}"), address: format!("127.0.0.1:{}", 7000 + i), grace_ms: 1000 })
            .collect()
    }

    fn ranges(lens: &[i64]) -> Vec<PartitionRange> {
        lens.iter()
            .enumerate()
            .map(|(p, &len)| PartitionRange { partition: p as i32, start: 10, end: 10 + len })
            .collect()
    }

    /// Every offset of every range is read by exactly one worker.
    fn assert_exact_cover(ranges: &[PartitionRange], plans: &[WorkerPlan]) {
        for r in ranges {
            for offset in r.start..r.end {
                let readers = plans
                    .iter()
                    .flat_map(|p| &p.shares)
                    .filter(|s| s.partition == r.partition && s.selects(offset))
                    .count();
                assert_eq!(readers, 1, "partition {} offset {offset}", r.partition);
            }
        }
        let planned: u64 = plans.iter().map(|p| p.records).sum();
        assert_eq!(planned, ranges.iter().map(|r| r.len()).sum::<u64>());
    }

    #[test]
    fn by_connection_partitions_go_whole_even_unbalanced_and_so_do_takeovers() {
        let r = ranges(&[100, 10, 10]);
        let plans = plan(&r, &workers(3), Split::ByConnection);
        assert_exact_cover(&r, &plans);
        assert!(plans.iter().flat_map(|p| &p.shares).all(|s| s.stride == 1), "no striping");
        assert_eq!(plan(&ranges(&[50]), &workers(3), Split::ByConnection).len(), 1, "one partition: one worker");
        let lost = plans.into_iter().find(|p| p.records == 100).unwrap();
        let remainder = lost.remainder(&PartProgress { checkpoints: vec![40], ..Default::default() }, Some(1));
        let parts = takeover(&remainder, Some(1), &workers(2), |_| 1, Split::ByConnection);
        assert_eq!(parts.len(), 1);
        assert_eq!((parts[0].shares[0].stride, parts[0].records, parts[0].resume[0].offset), (1, 70, 40));
    }

    #[test]
    fn balanced_partitions_go_whole() {
        let r = ranges(&[100, 100, 100, 100, 100, 100]);
        let plans = plan(&r, &workers(3), Split::Striped);
        assert_exact_cover(&r, &plans);
        assert!(plans.iter().all(|p| p.records == 200 && p.shares.iter().all(|s| s.stride == 1)));
    }

    #[test]
    fn fewer_partitions_than_workers_are_striped() {
        let r = ranges(&[1000, 999]);
        let plans = plan(&r, &workers(3), Split::Striped);
        assert_exact_cover(&r, &plans);
        assert_eq!(plans.len(), 3);
        for p in &plans {
            assert!(p.shares.iter().all(|s| s.stride == 3));
            assert!((665..=668).contains(&p.records), "{}", p.records);
        }
    }

    #[test]
    fn skewed_partitions_are_striped_rather_than_unbalanced() {
        let r = ranges(&[500, 100, 100, 100]);
        let plans = plan(&r, &workers(3), Split::Striped);
        assert_exact_cover(&r, &plans);
        let (min, max) =
            (plans.iter().map(|p| p.records).min().unwrap(), plans.iter().map(|p| p.records).max().unwrap());
        assert!(max - min <= 4, "{min}..{max}");
    }

    #[test]
    fn a_takeover_spreads_the_remainder_from_the_checkpoints() {
        let r = ranges(&[100, 100]);
        let lost = plan(&r, &workers(3), Split::Striped).remove(0);
        let progress = PartProgress { checkpoints: vec![60, 80], ..Default::default() };
        let remainder = lost.remainder(&progress, Some(1));
        let left: u64 = remainder.iter().map(|(s, from)| remaining_records(s, *from, Some(1))).sum();
        let parts = takeover(&remainder, Some(1), &workers(2), |id| if id == "w0" { 3 } else { 1 }, Split::Striped);
        assert_eq!(parts.iter().map(|p| p.records).sum::<u64>(), left);
        assert_eq!(parts.iter().map(|p| p.name()).collect::<Vec<_>>(), ["w0#3", "w1#1"]);
        for offset in 0..120 {
            for (i, share) in lost.shares.iter().enumerate() {
                let wanted = share.selects(offset) && offset >= [60, 80][i];
                let readers = parts
                    .iter()
                    .flat_map(|p| p.shares.iter().enumerate().map(|(i, s)| s.from_offset(p.start_of(i).offset)))
                    .filter(|s| s.partition == share.partition && s.selects(offset));
                assert_eq!(readers.count(), usize::from(wanted), "partition {} offset {offset}", share.partition);
            }
        }
        let done = PartProgress { checkpoints: vec![110, 110], ..Default::default() };
        assert!(
            takeover(&lost.remainder(&done, Some(1)), Some(1), &workers(2), |_| 1, Split::Striped).is_empty(),
            "nothing left"
        );
    }

    #[test]
    fn a_looping_takeover_carries_the_rest_of_the_pass_and_every_later_pass() {
        let lost = plan(&ranges(&[100]), &workers(1), Split::Striped).remove(0);
        // Three passes; the lost part finished pass 0 and pass 1 up to offset 40.
        let progress = PartProgress { checkpoints: vec![40], passes: vec![1], sends_past: 0 };
        let remainder = lost.remainder(&progress, Some(3));
        let share = lost.shares[0];
        assert_eq!((share.start, share.end), (10, 110));
        assert_eq!(remainder, vec![(share, Resume { pass: 1, offset: 40 })]);
        let parts = takeover(&remainder, Some(3), &workers(2), |_| 1, Split::Striped);
        assert_eq!(parts.iter().map(|p| p.records).sum::<u64>(), 70 + 100);
        assert!(parts.iter().all(|p| p.resume == vec![Resume { pass: 1, offset: 40 }]));
        // A share finished to its end moves to the next pass; past the last, nothing.
        let at_end = PartProgress { checkpoints: vec![110], passes: vec![1], sends_past: 0 };
        assert_eq!(lost.remainder(&at_end, Some(3))[0].1, Resume { pass: 2, offset: 10 });
        let all_done = PartProgress { checkpoints: vec![110], passes: vec![2], sends_past: 0 };
        assert!(lost.remainder(&all_done, Some(3)).is_empty());
        assert_eq!(lost.remainder(&all_done, None)[0].1, Resume { pass: 3, offset: 10 }, "endless");
    }

    #[test]
    fn empty_inputs_plan_nothing() {
        assert!(plan(&ranges(&[0, 0]), &workers(2), Split::Striped).is_empty());
        assert!(plan(&ranges(&[5]), &[], Split::Striped).is_empty());
        let tiny = ranges(&[1]);
        let plans = plan(&tiny, &workers(3), Split::Striped);
        assert_exact_cover(&tiny, &plans);
        assert_eq!(plans.len(), 1, "workers with nothing to do are left out");
    }
}
