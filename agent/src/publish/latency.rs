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
    seconds: Mutex<VecDeque<f64>>,
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
        if let Ok(mut q) = self.seconds.lock() {
            if q.len() == SAMPLES {
                q.pop_front();
            }
            q.push_back(s);
        }
    }

    /// The quantiles `qs` of the samples kept (nearest rank, from one
    /// sort), and their count; no quantiles while there are no samples.
    pub fn quantiles<const N: usize>(&self, qs: [f64; N]) -> (Option<[f64; N]>, usize) {
        let Ok(samples) = self.seconds.lock() else {
            return (None, 0);
        };
        let mut v: Vec<f64> = samples.iter().copied().collect();
        drop(samples);
        if v.is_empty() {
            return (None, 0);
        }
        v.sort_by(f64::total_cmp);
        let at = |q: f64| v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
        (Some(qs.map(at)), v.len())
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
        let (q, n) = l.quantiles([0.5, 0.99]);
        assert_eq!(n, 100);
        let [p50, p99] = q.unwrap();
        assert!((0.49..0.55).contains(&p50), "{p50}");
        assert!((0.98..1.05).contains(&p99), "{p99}");
    }
}
