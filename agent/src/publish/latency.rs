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

#[derive(Default)]
pub struct Latency {
    /// Outbox record id → when its deciding frame arrived.
    waiting: Mutex<BTreeMap<u64, SystemTime>>,
    acknowledged: Mutex<Acknowledged>,
}

#[derive(Default)]
struct Acknowledged {
    /// The last [`SAMPLES`], for the quantiles.
    seconds: VecDeque<f64>,
    /// Since start, for a summary's `_count` and `_sum`, which only grow.
    count: u64,
    sum: f64,
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
        }
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
    }
}
