//! Per-camera sequence numbers and event ids.

use std::sync::atomic::{AtomicU64, Ordering};

/// Hands out the sequence numbers of one camera: 1, 2, 3, … with no gap,
/// so a consumer that sees 7 after 5 knows it missed one.
#[derive(Debug, Default)]
pub struct Sequencer {
    last: AtomicU64,
}

impl Sequencer {
    pub fn next(&self) -> u64 {
        self.last.fetch_add(1, Ordering::Relaxed) + 1
    }
}

pub fn new_event_id() -> uuid::Uuid {
    uuid::Uuid::now_v7()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_starts_at_one_without_gaps() {
        let s = Sequencer::default();
        assert_eq!((s.next(), s.next(), s.next()), (1, 2, 3));
    }

    #[test]
    fn ids_are_time_ordered_v7() {
        let a = new_event_id();
        let b = new_event_id();
        assert_eq!(a.get_version_num(), 7);
        assert!(a < b);
    }
}
