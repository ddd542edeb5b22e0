//! Frame-to-event latency: from the arrival of the frame whose analysis
//! decided a pass to the broker's acknowledgement of its event. Kept as
//! the last samples, so the metrics endpoint (and the benchmark that reads
//! it) can report medians and tails of the present load.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::SystemTime;

/// Samples kept for the quantiles.
const SAMPLES: usize = 4096;

/// Records waiting for their acknowledgement that are timed. Some never
/// will be acknowledged (dropped by the outbox's bounds, or damaged on
/// disk), and a long broker outage piles up many that will: beyond this
/// the oldest go untimed rather than memory growing with the outage.
const WAITING: usize = 4 * SAMPLES;

/// Upper bounds, in seconds, of the histogram's finite buckets: every
/// 10 ms up to a second, where the benchmark's 300 ms bar and a healthy
/// gateway lie, then coarser for outages.
pub fn bucket_bounds() -> impl Iterator<Item = f64> {
    (1..=100)
        .map(|i| f64::from(i) / 100.0)
        .chain([1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0])
}

const FINITE_BUCKETS: usize = 109;

/// The histogram's name on the metrics page.
pub const HISTOGRAM: &str = "matthan_frame_to_event_latency_seconds";

#[derive(Default)]
pub struct Latency {
    /// Outbox record id → when its deciding frame arrived.
    waiting: Mutex<BTreeMap<u64, SystemTime>>,
    acknowledged: Mutex<Acknowledged>,
}

struct Acknowledged {
    /// The last [`SAMPLES`], for the quantiles.
    seconds: VecDeque<f64>,
    /// Since start, for a summary's `_count` and `_sum`, which only grow.
    count: u64,
    sum: f64,
    /// Since start, per bucket of [`bucket_bounds`] (not cumulative); the
    /// last one is beyond every bound. Unlike the quantiles of the last
    /// samples, these can be taken over any window by difference.
    buckets: [u64; FINITE_BUCKETS + 1],
}

impl Default for Acknowledged {
    fn default() -> Self {
        Self {
            seconds: VecDeque::new(),
            count: 0,
            sum: 0.0,
            buckets: [0; FINITE_BUCKETS + 1],
        }
    }
}

/// The latencies acknowledged since start and the quantiles of the last ones.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary<const N: usize> {
    /// None while nothing has been acknowledged.
    pub quantiles: Option<[f64; N]>,
    pub count: u64,
    pub sum: f64,
}

impl Latency {
    pub fn stored(&self, record: u64, decided_at: SystemTime) {
        if let Ok(mut w) = self.waiting.lock() {
            w.insert(record, decided_at);
            if w.len() > WAITING {
                w.pop_first();
            }
        }
    }

    pub fn acknowledged(&self, record: u64) {
        let Some(at) = self.waiting.lock().ok().and_then(|mut w| w.remove(&record)) else {
            return;
        };
        let s = SystemTime::now()
            .duration_since(at)
            .unwrap_or_default()
            .as_secs_f64();
        if let Ok(mut a) = self.acknowledged.lock() {
            if a.seconds.len() == SAMPLES {
                a.seconds.pop_front();
            }
            a.seconds.push_back(s);
            a.count += 1;
            a.sum += s;
            let bucket = bucket_bounds()
                .position(|le| s <= le)
                .unwrap_or(FINITE_BUCKETS);
            a.buckets[bucket] += 1;
        }
    }

    /// Cumulative counts per bucket bound (`le`), the last at infinity,
    /// as a Prometheus histogram gives them, and the sum of the samples.
    /// Both are read at once: a scraper requires the `+Inf` bucket to be
    /// the count the sum is of.
    pub fn histogram(&self) -> (Vec<(f64, u64)>, f64) {
        let (buckets, sum) = self
            .acknowledged
            .lock()
            .map(|a| (a.buckets, a.sum))
            .unwrap_or(([0; FINITE_BUCKETS + 1], 0.0));
        let mut total = 0;
        let cumulative = bucket_bounds()
            .chain([f64::INFINITY])
            .zip(buckets)
            .map(|(le, n)| {
                total += n;
                (le, total)
            })
            .collect();
        (cumulative, sum)
    }

    /// The quantiles `qs` of the samples kept (nearest rank, from one
    /// sort), with the count and sum since start.
    pub fn summary<const N: usize>(&self, qs: [f64; N]) -> Summary<N> {
        let Ok(a) = self.acknowledged.lock() else {
            return Summary {
                quantiles: None,
                count: 0,
                sum: 0.0,
            };
        };
        let (count, sum) = (a.count, a.sum);
        let mut v: Vec<f64> = a.seconds.iter().copied().collect();
        drop(a);
        v.sort_by(f64::total_cmp);
        let at = |q: f64| v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
        Summary {
            quantiles: (!v.is_empty()).then(|| qs.map(at)),
            count,
            sum,
        }
    }
}

/// The quantile `q` of the samples counted by a cumulative histogram
/// (`le`, count), as Prometheus's `histogram_quantile` estimates it:
/// linear within the bucket holding the rank. A rank past every finite
/// bound gives the highest finite bound. None when the histogram is empty.
pub fn histogram_quantile(cumulative: &[(f64, u64)], q: f64) -> Option<f64> {
    let total = cumulative.last()?.1;
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let (mut lower, mut below) = (0.0, 0);
    for &(le, count) in cumulative {
        if count as f64 >= rank {
            if le.is_infinite() {
                return Some(lower);
            }
            let inside = (count - below) as f64;
            return Some(lower + (le - lower) * (rank - below as f64) / inside.max(1.0));
        }
        (lower, below) = (le, count);
    }
    Some(lower)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn quantiles_of_acknowledged_records() {
        let l = Latency::default();
        for i in 0..100u64 {
            l.stored(i, SystemTime::now() - Duration::from_millis(i * 10));
            l.acknowledged(i);
        }
        l.acknowledged(500); // never stored: ignored
        for i in 1000..1000 + WAITING as u64 * 2 {
            l.stored(i, SystemTime::now()); // never acknowledged
        }
        assert_eq!(l.waiting.lock().unwrap().len(), WAITING);
        let summary = l.summary([0.5, 0.99]);
        assert_eq!(summary.count, 100);
        let [p50, p99] = summary.quantiles.unwrap();
        assert!((0.49..0.55).contains(&p50), "{p50}");
        assert!((0.98..1.05).contains(&p99), "{p99}");

        let (histogram, sum) = l.histogram();
        assert!((sum - summary.sum).abs() < 1e-9);
        assert_eq!(histogram.len(), bucket_bounds().count() + 1);
        assert_eq!(histogram.last(), Some(&(f64::INFINITY, 100)));
        // Samples of 0 to 990 ms, ten in every tenth of a second.
        assert_eq!(histogram[49], (0.5, 50));
        let p50 = histogram_quantile(&histogram, 0.5).unwrap();
        let p99 = histogram_quantile(&histogram, 0.99).unwrap();
        assert!((0.49..=0.51).contains(&p50), "{p50}");
        assert!((0.98..=1.0).contains(&p99), "{p99}");
    }

    #[test]
    fn a_window_of_the_histogram_is_the_difference_of_two_readings() {
        let l = Latency::default();
        let ack = |record: u64, ms: u64| {
            l.stored(record, SystemTime::now() - Duration::from_millis(ms));
            l.acknowledged(record);
        };
        // A slow start, then a window of fast events.
        for i in 0..20 {
            ack(i, 2_500);
        }
        let (before, _) = l.histogram();
        for i in 20..120 {
            ack(i, 100);
        }
        let (after, _) = l.histogram();
        let window: Vec<(f64, u64)> = after
            .iter()
            .zip(&before)
            .map(|(&(le, a), &(_, b))| (le, a - b))
            .collect();
        let p99 = histogram_quantile(&window, 0.99).unwrap();
        assert!((0.09..=0.11).contains(&p99), "{p99}");
        // Over all samples, the slow start is the tail.
        let all = histogram_quantile(&after, 0.99).unwrap();
        assert!((2.0..=3.0).contains(&all), "{all}");
        assert_eq!(
            histogram_quantile(&[(0.1, 0), (f64::INFINITY, 0)], 0.5),
            None
        );
        // Beyond every finite bound: the highest finite bound.
        assert_eq!(
            histogram_quantile(&[(0.1, 0), (f64::INFINITY, 3)], 0.5),
            Some(0.1)
        );
    }
}
