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

use reprise_store::log::RangeSpec;
use reprise_store::schema::PartitionRange;
use serde::{Deserialize, Serialize};

/// Largest tolerated excess of the busiest worker over the mean, for whole partitions.
const BALANCE_TOLERANCE: f64 = 0.05;

/// One worker's part of a replay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerPlan {
    pub worker_id: String,
    pub address: String,
    pub shares: Vec<RangeSpec>,
    /// Records this worker reads.
    pub records: u64,
}

/// A worker that can take a share.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub id: String,
    pub address: String,
}

/// Plans `ranges` over `workers`. Workers that would get nothing are left out.
pub fn plan(ranges: &[PartitionRange], workers: &[Candidate]) -> Vec<WorkerPlan> {
    let ranges: Vec<&PartitionRange> = ranges.iter().filter(|r| !r.is_empty()).collect();
    if workers.is_empty() || ranges.is_empty() {
        return Vec::new();
    }
    let mut plans: Vec<WorkerPlan> = workers
        .iter()
        .map(|w| WorkerPlan { worker_id: w.id.clone(), address: w.address.clone(), shares: Vec::new(), records: 0 })
        .collect();
    if ranges.len() >= workers.len() && whole_partitions(&ranges, &mut plans) {
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
        (0..n).map(|i| Candidate { id: format!("w{i}"), address: format!("127.0.0.1:{}", 7000 + i) }).collect()
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
    fn balanced_partitions_go_whole() {
        let r = ranges(&[100, 100, 100, 100, 100, 100]);
        let plans = plan(&r, &workers(3));
        assert_exact_cover(&r, &plans);
        assert!(plans.iter().all(|p| p.records == 200 && p.shares.iter().all(|s| s.stride == 1)));
    }

    #[test]
    fn fewer_partitions_than_workers_are_striped() {
        let r = ranges(&[1000, 999]);
        let plans = plan(&r, &workers(3));
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
        let plans = plan(&r, &workers(3));
        assert_exact_cover(&r, &plans);
        let (min, max) =
            (plans.iter().map(|p| p.records).min().unwrap(), plans.iter().map(|p| p.records).max().unwrap());
        assert!(max - min <= 4, "{min}..{max}");
    }

    #[test]
    fn empty_inputs_plan_nothing() {
        assert!(plan(&ranges(&[0, 0]), &workers(2)).is_empty());
        assert!(plan(&ranges(&[5]), &[]).is_empty());
        let tiny = ranges(&[1]);
        let plans = plan(&tiny, &workers(3));
        assert_exact_cover(&tiny, &plans);
        assert_eq!(plans.len(), 1, "workers with nothing to do are left out");
    }
}
