//! The reading side of a replay: its shares cut into lanes, each lane an open stream of
//! the traffic log (once per pass), and the merge of a thread's lanes into one stream by
//! timestamp.

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use reprise_proto::v1::PartitionShare;
use reprise_store::log::{LogError, RangeSpec, TrafficLog};
use reprise_store::traffic::{Located, decode_stream};

use crate::stats::Stats;

/// Records buffered ahead of the dispatcher, per lane.
const READ_AHEAD: usize = 2048;

pub(super) type LocatedStream = Pin<Box<dyn Stream<Item = Result<Located, LogError>> + Send>>;

/// A part of one share read by one stream: the whole share, or one stride of it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Lane {
    pub(super) share: usize,
    pub(super) range: RangeSpec,
    /// The lane's first pass (a takeover may start later), read from `resume` on.
    pub(super) first_pass: u32,
    pub(super) resume: i64,
}

impl Lane {
    /// What the lane reads in `pass`: nothing before its first pass, the rest of that
    /// pass from `resume`, every later pass whole.
    pub(super) fn range_in(&self, pass: u32) -> Option<RangeSpec> {
        match pass.cmp(&self.first_pass) {
            std::cmp::Ordering::Less => None,
            std::cmp::Ordering::Equal => Some(self.range.from_offset(self.resume)),
            std::cmp::Ordering::Greater => Some(self.range),
        }
    }
}

/// A lane opened for one pass: the lane's index (for checkpoints), the pass, where it
/// ends, and its records.
pub(super) struct LaneStream {
    pub(super) lane: usize,
    pub(super) pass: u32,
    pub(super) end: i64,
    pub(super) records: LocatedStream,
}

/// Opens `lane` (index `index`) for `pass`, or `None` if it reads nothing in that pass.
pub(super) async fn open_lane(
    log: &dyn TrafficLog,
    index: usize,
    lane: &Lane,
    pass: u32,
    stats: &Stats,
) -> Result<Option<LaneStream>, LogError> {
    let Some(range) = lane.range_in(pass) else { return Ok(None) };
    let raw = log.read_range(range, READ_AHEAD).await?;
    let records: LocatedStream = Box::pin(decode_stream(raw, stats.records_undecodable.clone()));
    Ok(Some(LaneStream { lane: index, pass, end: range.end, records }))
}

/// Cuts `shares` into at least `threads` lanes where it can: a share of stride `s` and
/// phase `p` becomes `k` lanes of stride `s * k` and phases `p, p + s, ..`.
pub(super) fn plan_lanes(shares: &[PartitionShare], threads: usize) -> Vec<Lane> {
    let split = threads.div_ceil(shares.len().max(1)).max(1) as u32;
    let mut lanes = Vec::new();
    for (share, s) in shares.iter().enumerate() {
        let range = RangeSpec {
            partition: s.partition,
            start: s.start_offset,
            end: s.end_offset,
            stride: s.stride.max(1),
            phase: s.phase,
        };
        let (first_pass, resume) = (s.first_pass, s.resume_offset.max(s.start_offset));
        lanes.extend(range.split(split).into_iter().map(|range| Lane { share, range, first_pass, resume }));
    }
    lanes
}

/// Records the lanes read over `passes` (`None`, endless: over one pass).
pub(super) fn planned_records(lanes: &[Lane], passes: Option<u32>) -> u64 {
    lanes
        .iter()
        .map(|lane| {
            let first = lane.range_in(lane.first_pass).map_or(0, |r| r.len());
            let later = passes.map_or(0, |p| u64::from(p.saturating_sub(lane.first_pass + 1)));
            first + later * lane.range.len()
        })
        .sum()
}

/// Deals lanes to at most `threads` groups, largest first to the least loaded, so
/// every thread carries about the same number of records.
pub(super) fn deal_lanes<T>(lanes: Vec<(u64, T)>, threads: usize) -> Vec<Vec<T>> {
    let mut lanes = lanes;
    lanes.sort_by_key(|(len, _)| std::cmp::Reverse(*len));
    let mut groups: Vec<(u64, Vec<T>)> = (0..threads.clamp(1, lanes.len().max(1))).map(|_| (0, Vec::new())).collect();
    for (len, lane) in lanes {
        let lightest = groups.iter_mut().min_by_key(|(load, _)| *load).expect("at least one group");
        lightest.0 += len;
        lightest.1.push(lane);
    }
    groups.into_iter().map(|(_, group)| group).filter(|group| !group.is_empty()).collect()
}

/// Merges lane streams into one, by record timestamp. A lane that ends is checkpointed
/// at its end once everything taken from it has finished.
pub(super) struct Merge {
    lanes: Vec<LaneStream>,
    heads: Vec<Option<Located>>,
    live: Vec<bool>,
    stats: Arc<Stats>,
}

impl Merge {
    pub(super) fn new(lanes: Vec<LaneStream>, stats: Arc<Stats>) -> Self {
        let n = lanes.len();
        Merge { lanes, heads: (0..n).map(|_| None).collect(), live: vec![true; n], stats }
    }

    /// Reads ahead one record in every lane that has none waiting.
    async fn fill(&mut self) -> Result<(), LogError> {
        for i in 0..self.lanes.len() {
            if self.live[i] && self.heads[i].is_none() {
                match self.lanes[i].records.next().await {
                    Some(Ok(located)) => self.heads[i] = Some(located),
                    Some(Err(e)) => return Err(e),
                    None => {
                        self.live[i] = false;
                        let lane = &self.lanes[i];
                        self.stats.lane_end(lane.lane, lane.pass, lane.end);
                    }
                }
            }
        }
        Ok(())
    }

    /// The lane and timestamp of the earliest record waiting.
    fn earliest(&self) -> Option<(usize, i64)> {
        (0..self.heads.len())
            .filter_map(|i| self.heads[i].as_ref().map(|h| (h.record.timestamp_ns, i)))
            .min()
            .map(|(timestamp, i)| (i, timestamp))
    }

    /// The earliest record across lanes, with its lane's index.
    pub(super) async fn next(&mut self) -> Option<Result<(usize, Located), LogError>> {
        if let Err(e) = self.fill().await {
            return Some(Err(e));
        }
        let (earliest, _) = self.earliest()?;
        Some(Ok((self.lanes[earliest].lane, self.heads[earliest].take().expect("head present"))))
    }

    /// The timestamp of the record [`Merge::next`] will return, without taking it.
    pub(super) async fn peek_timestamp(&mut self) -> Result<Option<i64>, LogError> {
        self.fill().await?;
        Ok(self.earliest().map(|(_, timestamp)| timestamp))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn share(partition: i32, start: i64, end: i64) -> PartitionShare {
        PartitionShare { partition, start_offset: start, end_offset: end, stride: 1, phase: 0, ..Default::default() }
    }

    #[test]
    fn fewer_shares_than_threads_are_split_by_stride_into_disjoint_lanes() {
        let shares =
            [PartitionShare { partition: 0, start_offset: 3, end_offset: 103, stride: 2, phase: 1, ..share(0, 0, 0) }];
        let lanes = plan_lanes(&shares, 3);
        assert_eq!(lanes.len(), 3);
        // Every offset the share selects is read by exactly one lane.
        for offset in 0..110 {
            let readers = lanes.iter().filter(|l| l.range.selects(offset)).count();
            let selected = (3..103).contains(&offset) && offset % 2 == 1;
            assert_eq!(readers, usize::from(selected), "offset {offset}");
        }
        let total: u64 = lanes.iter().map(|l| l.range.len()).sum();
        assert_eq!(total, 50);
    }

    #[test]
    fn enough_shares_are_not_split_and_tiny_shares_never() {
        assert_eq!(plan_lanes(&[share(0, 0, 10), share(1, 0, 10)], 2).len(), 2);
        assert_eq!(plan_lanes(&[share(0, 0, 1)], 4).len(), 1);
        assert_eq!(plan_lanes(&[], 4).len(), 0);
    }

    #[test]
    fn a_taken_over_share_starts_at_its_pass_and_resume_offset() {
        let shares = [PartitionShare { first_pass: 2, resume_offset: 40, ..share(0, 10, 100) }];
        let lane = plan_lanes(&shares, 1)[0];
        assert_eq!(lane.range_in(1), None);
        assert_eq!(lane.range_in(2), Some(RangeSpec::whole(0, 40, 100)));
        assert_eq!(lane.range_in(3), Some(RangeSpec::whole(0, 10, 100)));
    }

    #[test]
    fn lanes_are_dealt_evenly_by_records() {
        let groups = deal_lanes(vec![(10, 'a'), (70, 'b'), (30, 'c'), (40, 'd')], 2);
        assert_eq!(groups, vec![vec!['b', 'a'], vec!['d', 'c']]);
        assert_eq!(deal_lanes(vec![(5, 'a')], 4), vec![vec!['a']]);
        assert!(deal_lanes(Vec::<(u64, char)>::new(), 2).is_empty());
    }
}
