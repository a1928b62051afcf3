//! Response-time histograms: fixed buckets from 1 ms to 10 s (1-2-5 steps), counted in atomics so that
//! every worker and thread records without a lock and a backend's histogram is already the sum over
//! all of them. Percentiles are read from a snapshot, interpolated inside the bucket they fall in (so
//! they are as exact as the buckets are fine: within a factor of 2.5 at worst, much closer in practice).

use crate::counter::Writer;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the buckets, in milliseconds; one more bucket above the last takes the rest.
pub const BOUNDS_MS: [u64; 13] = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000];
const BUCKETS: usize = BOUNDS_MS.len() + 1;

/// Counts of responses by time, and their total time.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS],
    sum_us: AtomicU64,
}

/// A copy of a histogram's counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Responses per bucket (not cumulative); the last is above 10 s.
    pub buckets: [u64; BUCKETS],
    pub sum_us: u64,
}

impl Histogram {
    pub fn record(&self, elapsed: Duration) {
        self.record_as(elapsed, Writer::Any);
    }

    /// Records one response time; `writer` says whether other threads may record in this histogram
    /// at the same time (see [`Writer`]).
    pub fn record_as(&self, elapsed: Duration, writer: Writer) {
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let bucket = BOUNDS_MS
            .iter()
            .position(|&ms| us <= ms * 1000)
            .unwrap_or(BUCKETS - 1);
        writer.add(&self.buckets[bucket], 1);
        writer.add(&self.sum_us, us);
    }

    /// Adds this histogram's counts to `total`.
    pub fn add_to(&self, total: &mut Counts) {
        total.sum_us += self.sum_us.load(Ordering::Relaxed);
        for (sum, bucket) in total.buckets.iter_mut().zip(&self.buckets) {
            *sum += bucket.load(Ordering::Relaxed);
        }
    }

    pub fn counts(&self) -> Counts {
        let mut counts = Counts::default();
        self.add_to(&mut counts);
        counts
    }
}

impl Counts {
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// Cumulative counts by upper bound in seconds, as Prometheus wants them (`+Inf` last).
    pub fn cumulative(&self) -> impl Iterator<Item = (Option<f64>, u64)> + '_ {
        let mut running = 0;
        self.buckets.iter().enumerate().map(move |(i, n)| {
            running += n;
            (BOUNDS_MS.get(i).map(|&ms| ms as f64 / 1000.0), running)
        })
    }

    /// The `q`-quantile (0 < q ≤ 1) in milliseconds, interpolated within its bucket; `None` without
    /// samples. Above the last bound, the last bound is the answer (the bucket has no upper end).
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = (q.clamp(0.0, 1.0) * total as f64).max(1.0);
        let mut below = 0u64;
        for (i, &n) in self.buckets.iter().enumerate() {
            if n > 0 && (below + n) as f64 >= rank {
                let Some(&upper) = BOUNDS_MS.get(i) else {
                    return Some(BOUNDS_MS[BOUNDS_MS.len() - 1] as f64);
                };
                let lower = if i == 0 { 0 } else { BOUNDS_MS[i - 1] };
                let within = (rank - below as f64) / n as f64;
                return Some(lower as f64 + within * (upper - lower) as f64);
            }
            below += n;
        }
        Some(BOUNDS_MS[BOUNDS_MS.len() - 1] as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn samples_land_in_their_buckets() {
        let h = Histogram::default();
        // (sample, bucket index)
        let cases: &[(Duration, usize)] = &[
            (Duration::ZERO, 0),
            (Duration::from_micros(999), 0),
            (ms(1), 0),
            (Duration::from_micros(1001), 1),
            (ms(7), 3),
            (ms(10_000), 12),
            (ms(10_001), 13),
            (Duration::from_secs(3600), 13),
        ];
        for &(sample, bucket) in cases {
            let before = h.counts().buckets[bucket];
            h.record(sample);
            assert_eq!(h.counts().buckets[bucket], before + 1, "{sample:?}");
        }
        assert_eq!(h.counts().count(), cases.len() as u64);
        let cumulative: Vec<(Option<f64>, u64)> = h.counts().cumulative().collect();
        assert_eq!(cumulative[0], (Some(0.001), 3));
        assert_eq!(cumulative.last(), Some(&(None, 8)));
    }

    #[test]
    fn quantiles_interpolate_within_buckets() {
        let h = Histogram::default();
        assert_eq!(h.counts().quantile_ms(0.5), None);
        // 100 samples: 50 in (5, 10] ms, 40 in (20, 50] ms, 10 in (200, 500] ms.
        for _ in 0..50 {
            h.record(ms(8));
        }
        for _ in 0..40 {
            h.record(ms(30));
        }
        for _ in 0..10 {
            h.record(ms(300));
        }
        let c = h.counts();
        let cases: &[(f64, f64)] = &[
            (0.5, 10.0),
            (0.25, 7.5),
            (0.9, 50.0),
            (0.99, 470.0),
            (1.0, 500.0),
        ];
        for &(q, expected) in cases {
            let got = c.quantile_ms(q).unwrap();
            assert!((got - expected).abs() < 1e-9, "p{q}: {got} != {expected}");
        }
        assert_eq!(c.sum_us, 50 * 8_000 + 40 * 30_000 + 10 * 300_000);
        h.record(Duration::from_secs(60));
        assert_eq!(h.counts().quantile_ms(1.0), Some(10_000.0));
    }

    #[test]
    fn concurrent_recording_loses_nothing() {
        let h = Histogram::default();
        std::thread::scope(|s| {
            for t in 0..4u64 {
                let h = &h;
                s.spawn(move || {
                    for i in 0..1000 {
                        h.record(ms((i * 7 + t) % 3000));
                    }
                });
            }
        });
        assert_eq!(h.counts().count(), 4000);
    }
}
