//! Events the broker refused. They wait in the outbox, are not sent again
//! with the others after a reconnect, and are offered again sparingly: a
//! broker that keeps refusing costs one publish per topic a period, and
//! once it takes one, the rest of that topic follow.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the oldest event of each topic the broker's rules refused is
/// offered again: an installer who fixes the rules sees events flow within
/// this.
pub const RULES_RETRY: Duration = Duration::from_secs(15);
/// How often the oldest event too large for the broker is offered again.
/// Mosquitto's `message_size_limit` answers it with a code (0x95) that
/// ends the connection, so each try costs a reconnect.
pub const TOO_LARGE_RETRY: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, PartialEq)]
pub enum Why {
    /// The broker's access rules, quota or the like, as it gave them:
    /// they concern a topic, so one event taken there clears them all.
    Rules(String),
    /// Larger than the broker takes: it concerns the event alone.
    TooLarge(String),
}

#[derive(Default)]
pub struct Refused {
    /// By outbox record id: its topic, and why it was refused.
    records: BTreeMap<u64, (Arc<str>, Why)>,
    /// Offered again and not yet answered, so not offered twice.
    retrying: HashSet<u64>,
    large_tried: Option<Instant>,
    /// The smallest payload the broker refused as too large without
    /// saying its limit (Mosquitto's `message_size_limit`): each such
    /// refusal ends the connection, so none as large is sent until one
    /// too large is taken.
    too_large_from: Option<usize>,
}

impl Refused {
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    pub fn contains(&self, id: u64) -> bool {
        self.records.contains_key(&id)
    }

    /// Returns true when this refusal is news for the log: the first on
    /// its topic for that reason.
    pub fn add(&mut self, id: u64, topic: Arc<str>, why: Why) -> bool {
        self.retrying.remove(&id);
        if matches!(why, Why::TooLarge(_)) {
            self.large_tried.get_or_insert_with(Instant::now);
        }
        let news = !self.records.values().any(|(t, w)| *t == topic && *w == why);
        self.records.insert(id, (topic, why));
        news
    }

    /// The broker refused a payload of `bytes` as too large: the least
    /// its limit can be below.
    pub fn too_large_from(&mut self, bytes: usize) {
        self.too_large_from = Some(self.too_large_from.map_or(bytes, |b| b.min(bytes)));
    }

    /// Whether a payload of `bytes` is as large as one the broker refused.
    pub fn as_large_as_refused(&self, bytes: usize) -> bool {
        self.too_large_from.is_some_and(|b| bytes >= b)
    }

    /// The broker took `id`, of `topic`: the events its rules refused
    /// there are to be offered again now.
    pub fn taken(&mut self, topic: &str, id: u64) -> Vec<u64> {
        if let Some((_, Why::TooLarge(_))) = self.records.get(&id) {
            // Its limit was raised.
            self.too_large_from = None;
        }
        self.gone(id);
        let again: Vec<u64> = self
            .records
            .iter()
            .filter(|(i, (t, why))| {
                &**t == topic && matches!(why, Why::Rules(_)) && !self.retrying.contains(i)
            })
            .map(|(i, _)| *i)
            .collect();
        self.retrying.extend(&again);
        again
    }

    /// A refused event that needs no more offering: the outbox's bounds
    /// dropped it.
    pub fn gone(&mut self, id: u64) {
        self.records.remove(&id);
        self.retrying.remove(&id);
    }

    /// The connection ended: what was being offered again went unanswered.
    pub fn connection_lost(&mut self) {
        self.retrying.clear();
    }

    /// The events to offer again now: the oldest the rules refused on each
    /// topic, and every [`TOO_LARGE_RETRY`] the oldest too large one.
    pub fn due(&mut self, now: Instant) -> Vec<u64> {
        let mut out = Vec::new();
        let mut topics = HashSet::new();
        let mut large = None;
        for (id, (topic, why)) in &self.records {
            match why {
                Why::Rules(_) => {
                    if topics.insert(topic.clone()) && !self.retrying.contains(id) {
                        out.push(*id);
                    }
                }
                Why::TooLarge(_) => {
                    large = large.or((!self.retrying.contains(id)).then_some(*id));
                }
            }
        }
        if let Some(id) = large
            && self
                .large_tried
                .is_none_or(|at| now.duration_since(at) >= TOO_LARGE_RETRY)
        {
            out.push(id);
            self.large_tried = Some(now);
        }
        self.retrying.extend(&out);
        out
    }

    /// What the agent's status says while events wait.
    pub fn problem(&self) -> Option<String> {
        let mut topics: BTreeMap<&str, &str> = BTreeMap::new();
        let (mut large, mut large_why) = (0, "");
        for (topic, why) in self.records.values() {
            match why {
                Why::Rules(w) => {
                    topics.insert(topic, w);
                }
                Why::TooLarge(w) => {
                    large += 1;
                    large_why = w;
                }
            }
        }
        let mut parts = Vec::new();
        if !topics.is_empty() {
            let named: Vec<String> = topics.iter().map(|(t, w)| format!("{t} ({w})")).collect();
            parts.push(format!(
                "the broker refused events on {}: allow this client to publish there in the \
                 broker's access rules; the events wait in the outbox, and one per topic is \
                 offered again every {} s",
                named.join(", "),
                RULES_RETRY.as_secs()
            ));
        }
        if large > 0 {
            parts.push(format!(
                "{large} event(s) too large for the broker ({large_why}): raise its maximum packet \
                 size (Mosquitto: max_packet_size, message_size_limit); they wait in the outbox \
                 and one is offered again every {} min",
                TOO_LARGE_RETRY.as_secs() / 60
            ));
        }
        (!parts.is_empty()).then(|| parts.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Why {
        Why::Rules("not authorized".into())
    }

    #[test]
    fn refused_events_are_offered_again_one_per_topic_until_one_is_taken() {
        let mut r = Refused::default();
        let (a, b): (Arc<str>, Arc<str>) = ("s/a/event/plate".into(), "s/b/event/plate".into());
        assert!(r.add(3, a.clone(), rules()));
        assert!(!r.add(5, a.clone(), rules()), "logged once per topic");
        assert!(r.add(4, b.clone(), rules()));
        let p = r.problem().unwrap();
        assert!(
            p.contains("s/a/event/plate (not authorized), s/b/event/plate (not authorized)"),
            "{p}"
        );
        let now = Instant::now();
        assert_eq!(r.due(now), [3, 4]);
        assert!(r.due(now).is_empty(), "not offered again while unanswered");
        assert!(!r.add(3, a.clone(), rules()));
        assert_eq!(r.due(now), [3]);
        assert_eq!(
            r.taken(&a, 3),
            [5],
            "the topic's other refused events follow"
        );
        assert!(r.taken(&a, 3).is_empty(), "and only once");
        r.gone(5);
        assert!(r.taken(&b, 4).is_empty());
        assert!(r.is_empty());
        assert_eq!(r.problem(), None);
    }

    #[test]
    fn an_event_too_large_is_offered_again_alone_and_rarely() {
        let mut r = Refused::default();
        let a: Arc<str> = "s/a/event/plate".into();
        r.add(7, a.clone(), Why::TooLarge("packet too large".into()));
        r.add(8, a.clone(), rules());
        let start = Instant::now();
        assert_eq!(r.due(start), [8], "the rules' retry only");
        assert!(
            r.taken(&a, 8).is_empty(),
            "an event taken does not resend one too large"
        );
        assert!(r.due(start + TOO_LARGE_RETRY / 2).is_empty());
        assert_eq!(r.due(start + TOO_LARGE_RETRY), [7]);
        r.connection_lost();
        assert!(
            r.due(start + TOO_LARGE_RETRY).is_empty(),
            "not again before its period"
        );
        assert!(r.problem().unwrap().contains("1 event(s) too large"));
        r.too_large_from(1400);
        r.too_large_from(1500);
        assert!(r.as_large_as_refused(1400) && !r.as_large_as_refused(1399));
        r.taken(&a, 7);
        assert!(
            !r.as_large_as_refused(5000),
            "a too large one taken: the limit was raised"
        );
    }
}
