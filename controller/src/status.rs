//! The workers' latency and lag histograms (HDR, microseconds) as the controller reads,
//! merges and summarises them. The status documents themselves are wire types
//! (`reprise_proto::v1::ReplayStatus` and friends).

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use hdrhistogram::serialization::Deserializer;
use reprise_proto::v1::{EndpointDiff, EndpointResult, EndpointStats, Percentiles};
use reprise_rules::endpoint::OTHER;

/// Endpoints a status names; the rest are summed as "other".
pub const TOP_ENDPOINTS: usize = 20;

/// Percentiles of a histogram of microseconds, in milliseconds.
pub fn percentiles(h: &Histogram<u64>) -> Percentiles {
    if h.is_empty() {
        return Percentiles::default();
    }
    let ms = |us: u64| us as f64 / 1000.0;
    Percentiles {
        p50: ms(h.value_at_quantile(0.50)),
        p90: ms(h.value_at_quantile(0.90)),
        p99: ms(h.value_at_quantile(0.99)),
        p999: ms(h.value_at_quantile(0.999)),
        max: ms(h.max()),
        mean: h.mean() / 1000.0,
    }
}

/// Decodes a serialized histogram from a worker report; an empty or bad one is empty.
pub fn histogram(bytes: &[u8]) -> Histogram<u64> {
    if bytes.is_empty() {
        return empty_histogram();
    }
    Deserializer::new().deserialize(&mut &bytes[..]).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "undecodable histogram in a worker report");
        empty_histogram()
    })
}

/// An auto-resizing histogram to merge worker histograms into.
pub fn empty_histogram() -> Histogram<u64> {
    Histogram::new(3).expect("valid histogram")
}

/// One endpoint's results, merged over the workers' reports.
#[derive(Default)]
struct EndpointSum {
    sent: u64,
    status: [u64; 5],
    errors: [u64; 4],
    latency: Option<Histogram<u64>>,
}

impl EndpointSum {
    fn add_report(&mut self, e: &EndpointStats) {
        self.sent += e.sent;
        let status = [e.status_1xx, e.status_2xx, e.status_3xx, e.status_4xx, e.status_5xx];
        self.status.iter_mut().zip(status).for_each(|(a, b)| *a += b);
        let errors = [e.errors_connect, e.errors_timeout, e.errors_reset, e.errors_other];
        self.errors.iter_mut().zip(errors).for_each(|(a, b)| *a += b);
        self.add_latency(histogram(&e.latency_us));
    }

    fn add_latency(&mut self, latency: Histogram<u64>) {
        // Into an auto-resizing histogram: a decoded one is bounded by what it held.
        let merged = self.latency.get_or_insert_with(|| Histogram::new(2).expect("valid histogram"));
        let _ = merged.add(latency);
    }

    fn add(&mut self, other: EndpointSum) {
        self.sent += other.sent;
        self.status.iter_mut().zip(other.status).for_each(|(a, b)| *a += b);
        self.errors.iter_mut().zip(other.errors).for_each(|(a, b)| *a += b);
        if let Some(latency) = other.latency {
            self.add_latency(latency);
        }
    }

    fn result(self, endpoint: String) -> EndpointResult {
        let named = |names: &[&str], counts: &[u64]| {
            names.iter().zip(counts).filter(|(_, n)| **n > 0).map(|(k, n)| (k.to_string(), *n)).collect()
        };
        EndpointResult {
            endpoint,
            sent: self.sent,
            status: named(&["1xx", "2xx", "3xx", "4xx", "5xx"], &self.status),
            error_kinds: named(&["connect", "timeout", "reset", "other"], &self.errors),
            latency_ms: self.latency.filter(|h| !h.is_empty()).map(|h| percentiles(&h)),
        }
    }
}

/// Per-endpoint results over the workers' reports: the [`TOP_ENDPOINTS`] with the most
/// sends, most first, then everything else as one "other" row.
pub fn endpoint_results<'a>(reports: impl Iterator<Item = &'a [EndpointStats]>) -> Vec<EndpointResult> {
    let mut sums: BTreeMap<&str, EndpointSum> = BTreeMap::new();
    for endpoints in reports {
        for e in endpoints {
            sums.entry(&e.endpoint).or_default().add_report(e);
        }
    }
    let mut other = sums.remove(OTHER).unwrap_or_default();
    let mut ranked: Vec<(&str, EndpointSum)> = sums.into_iter().collect();
    ranked.sort_by(|a, b| b.1.sent.cmp(&a.1.sent).then(a.0.cmp(b.0)));
    for (_, rest) in ranked.drain(TOP_ENDPOINTS.min(ranked.len())..) {
        other.add(rest);
    }
    let mut results: Vec<EndpointResult> = ranked.into_iter().map(|(name, sum)| sum.result(name.to_string())).collect();
    if other.sent > 0 {
        results.push(other.result(OTHER.to_string()));
    }
    results
}

/// Endpoints an A/B summary lists (those with differing requests come first).
pub const MAX_DIFF_ENDPOINTS: usize = 100;
const MAX_DIFF_SAMPLES: usize = 3;

/// Per endpoint of an A/B replay, the comparisons merged over the workers' reports: the
/// endpoints with differing requests first (most first), each field most frequent first.
pub fn diff_results<'a>(reports: impl Iterator<Item = &'a [EndpointStats]>) -> Vec<EndpointDiff> {
    let mut merged: BTreeMap<&str, EndpointDiff> = BTreeMap::new();
    let mut noise: BTreeMap<&str, BTreeMap<String, u64>> = BTreeMap::new();
    for endpoints in reports {
        for e in endpoints.iter().filter(|e| e.compared > 0) {
            let diff = merged
                .entry(&e.endpoint)
                .or_insert_with(|| EndpointDiff { endpoint: e.endpoint.clone(), ..Default::default() });
            diff.compared += e.compared;
            diff.differing += e.differing;
            for (field, n) in &e.fields {
                *diff.field_counts.entry(field.clone()).or_default() += n;
            }
            for sample in &e.samples {
                if diff.samples.len() < MAX_DIFF_SAMPLES && !diff.samples.iter().any(|s| s.field == sample.field) {
                    diff.samples.push(sample.clone());
                }
            }
            let endpoint_noise = noise.entry(&e.endpoint).or_default();
            e.noise.iter().for_each(|(field, n)| *endpoint_noise.entry(field.clone()).or_default() += n);
        }
    }
    let by_count = |counts: &BTreeMap<String, u64>| {
        let mut fields: Vec<(&String, &u64)> = counts.iter().collect();
        fields.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        fields.into_iter().map(|(field, _)| field.clone()).collect::<Vec<_>>()
    };
    let mut diffs: Vec<EndpointDiff> = merged
        .into_iter()
        .map(|(name, mut diff)| {
            diff.fields = by_count(&diff.field_counts);
            diff.noise = noise.get(name).map(by_count).unwrap_or_default();
            diff
        })
        .collect();
    diffs.sort_by(|a, b| b.differing.cmp(&a.differing).then(a.endpoint.cmp(&b.endpoint)));
    diffs.truncate(MAX_DIFF_ENDPOINTS);
    diffs
}

#[cfg(test)]
mod tests {
    use hdrhistogram::serialization::{Serializer, V2Serializer};

    use super::*;

    fn endpoint_report(name: &str, sent: u64, latency_us: &[u64]) -> EndpointStats {
        let mut h = Histogram::<u64>::new(2).unwrap();
        latency_us.iter().for_each(|v| h.record(*v).unwrap());
        let mut latency = Vec::new();
        V2Serializer::new().serialize(&h, &mut latency).unwrap();
        EndpointStats { endpoint: name.into(), sent, status_2xx: sent, latency_us: latency, ..Default::default() }
    }

    #[test]
    fn diffs_merge_over_workers_differing_endpoints_first() {
        let compared = |name: &str, compared: u64, differing: u64, fields: &[(&str, u64)], noise: &[(&str, u64)]| {
            let map = |list: &[(&str, u64)]| list.iter().map(|(f, n)| (f.to_string(), *n)).collect();
            EndpointStats {
                endpoint: name.into(),
                sent: compared,
                compared,
                differing,
                fields: map(fields),
                noise: map(noise),
                ..Default::default()
            }
        };
        let a = [
            compared("GET /a", 10, 0, &[], &[("$.ts", 10)]),
            compared("POST /b", 5, 2, &[("$.price", 2)], &[]),
            endpoint_report("GET /not-compared", 3, &[]),
        ];
        let b = [compared("POST /b", 5, 3, &[("$.price", 3), ("header:etag", 1)], &[("$.ts", 5)])];
        let diffs = diff_results([&a[..], &b[..]].into_iter());
        let rows: Vec<(&str, u64, u64)> =
            diffs.iter().map(|d| (d.endpoint.as_str(), d.compared, d.differing)).collect();
        assert_eq!(rows, [("POST /b", 10, 5), ("GET /a", 10, 0)]);
        assert_eq!(diffs[0].fields, ["$.price", "header:etag"]);
        assert_eq!((diffs[0].field_counts["$.price"], &diffs[0].noise[..]), (5, &["$.ts".to_string()][..]));
        assert!(diffs[1].fields.is_empty());
    }

    #[test]
    fn endpoints_merge_over_workers_and_the_tail_is_other() {
        let a: Vec<EndpointStats> = (0..TOP_ENDPOINTS + 3)
            .map(|i| endpoint_report(&format!("GET /e{i:02}"), 100 - i as u64, &[1000 * (i as u64 + 1)]))
            .chain([endpoint_report(OTHER, 7, &[])])
            .collect();
        let b = vec![endpoint_report("GET /e22", 200, &[50_000]), endpoint_report("GET /e00", 1, &[2000])];
        let results = endpoint_results([&a[..], &b[..]].into_iter());
        assert_eq!(results.len(), TOP_ENDPOINTS + 1);
        assert_eq!((results[0].endpoint.as_str(), results[0].sent), ("GET /e22", 278), "merged and ranked first");
        assert_eq!((results[1].endpoint.as_str(), results[1].sent), ("GET /e00", 101));
        assert!((results[1].latency_ms.as_ref().unwrap().max - 2.0).abs() < 0.02, "both workers' latencies");
        let other = results.last().unwrap();
        // e19, e20 and e21 (81 + 80 + 79) fall out of the top, beside the workers' own
        // "other" (7).
        assert_eq!((other.endpoint.as_str(), other.sent, other.status["2xx"]), ("other", 247, 247));
        let total: u64 = results.iter().map(|r| r.sent).sum();
        assert_eq!(total, a.iter().chain(&b).map(|e| e.sent).sum::<u64>());
    }

    #[test]
    fn percentiles_are_milliseconds_of_the_microseconds_recorded() {
        let mut h = empty_histogram();
        for us in 1..=1000u64 {
            h.record(us * 1000).unwrap();
        }
        let mut bytes = Vec::new();
        V2Serializer::new().serialize(&h, &mut bytes).unwrap();
        let p = percentiles(&histogram(&bytes));
        assert!((p.p50 - 500.0).abs() < 1.0 && (p.p99 - 990.0).abs() < 1.0, "{p:?}");
        assert!((p.max - 1000.0).abs() < 1.0, "{p:?}");
        assert_eq!(percentiles(&histogram(b"garbage")), Percentiles::default(), "a bad histogram reads as empty");
    }
}
