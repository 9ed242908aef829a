//! The workers' latency and lag histograms (HDR, microseconds) as the controller reads,
//! merges and summarises them. The status documents themselves are wire types
//! (`reprise_proto::v1::ReplayStatus` and friends).

use hdrhistogram::Histogram;
use hdrhistogram::serialization::Deserializer;
use reprise_proto::v1::Percentiles;

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

#[cfg(test)]
mod tests {
    use hdrhistogram::serialization::{Serializer, V2Serializer};

    use super::*;

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
