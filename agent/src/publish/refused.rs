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
/// How often the smallest event too large for the broker is offered
/// again. Mosquitto's `message_size_limit` answers it with a code (0x95)
/// that ends the connection, so each try costs a reconnect.
pub const TOO_LARGE_RETRY: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, PartialEq)]
pub enum Why {
    /// The broker's access rules, quota or the like, as it gave them:
    /// they concern a topic, so one event taken there clears them all.
    Rules(String),
    /// Larger than the broker takes (payload bytes, and why).
    TooLarge(usize, String),
}

#[derive(Default)]
pub struct Refused {
    /// By outbox record id: its topic, and why it was refused.
    records: BTreeMap<u64, (Arc<str>, Why)>,
    /// Offered again and not yet answered, so not offered twice; cleared
    /// with the connection.
    retrying: HashSet<u64>,
    /// Topics (and whether for size) already named in the log.
    logged: HashSet<(Arc<str>, bool)>,
    large_tried: Option<Instant>,
    /// The smallest payload the broker refused as too large without
    /// saying its limit (Mosquitto's `message_size_limit`). Each such
    /// refusal ends the connection, so none as large is sent until one
    /// held as too large is taken; each one smaller that is refused
    /// lowers it, so the refusals stop soon.
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
    /// its topic of its kind.
    pub fn add(&mut self, id: u64, topic: Arc<str>, why: Why) -> bool {
        self.retrying.remove(&id);
        let large = matches!(why, Why::TooLarge(..));
        if large {
            self.large_tried.get_or_insert_with(Instant::now);
        }
        self.records.insert(id, (topic.clone(), why));
        self.logged.insert((topic, large))
    }

    /// The broker refused a payload of `bytes` as too large, without
    /// saying its limit: the limit is below that.
    pub fn limit_below(&mut self, bytes: usize) {
        self.too_large_from = Some(self.too_large_from.map_or(bytes, |b| b.min(bytes)));
    }

    /// Whether a payload of `bytes` is as large as one the broker refused.
    pub fn beyond_known_limit(&self, bytes: usize) -> bool {
        self.too_large_from.is_some_and(|b| bytes >= b)
    }

    /// Whether `id` is offered again as too large (a probe of the limit,
    /// which the learned bound must not hold back).
    pub fn is_too_large(&self, id: u64) -> bool {
        matches!(self.records.get(&id), Some((_, Why::TooLarge(..))))
    }

    /// The broker took `id`, of `topic`: returns what is to be offered
    /// again now. After one the rules refused, the others refused there;
    /// after one too large, every one too large (the limit was raised;
    /// the first still over it ends a connection again, and holds those
    /// as large back again).
    pub fn taken(&mut self, topic: &str, id: u64) -> Vec<u64> {
        let was_large = self.is_too_large(id);
        self.gone(id);
        if was_large {
            self.too_large_from = None;
        }
        let again: Vec<u64> = self
            .records
            .iter()
            .filter(|(i, (t, why))| match why {
                Why::Rules(_) => &**t == topic,
                Why::TooLarge(..) => was_large,
            } && !self.retrying.contains(i))
            .map(|(i, _)| *i)
            .collect();
        self.retrying.extend(&again);
        again
    }

    /// A refused event that needs no more offering.
    pub fn gone(&mut self, id: u64) {
        self.records.remove(&id);
        self.retrying.remove(&id);
        if !self
            .records
            .values()
            .any(|(_, w)| matches!(w, Why::TooLarge(..)))
        {
            self.large_tried = None;
        }
    }

    /// Forgets the refused events the outbox no longer holds: its bounds
    /// drop the oldest first, so those before its oldest. Returns whether
    /// any went.
    pub fn forget_before(&mut self, oldest: Option<u64>) -> bool {
        let gone: Vec<u64> = self
            .records
            .keys()
            .copied()
            .take_while(|&id| oldest.is_none_or(|o| id < o))
            .collect();
        for id in &gone {
            self.gone(*id);
        }
        !gone.is_empty()
    }

    /// The connection ended: what was being offered again went unanswered.
    pub fn connection_lost(&mut self) {
        self.retrying.clear();
    }

    /// The events to offer again now: the oldest the rules refused on each
    /// topic, and every [`TOO_LARGE_RETRY`] the smallest too large one
    /// (the likeliest to fit a raised limit).
    pub fn due(&mut self, now: Instant) -> Vec<u64> {
        let mut out = Vec::new();
        let mut topics = HashSet::new();
        let mut smallest: Option<(usize, u64)> = None;
        for (id, (topic, why)) in &self.records {
            let free = !self.retrying.contains(id);
            match why {
                Why::Rules(_) => {
                    if topics.insert(topic.clone()) && free {
                        out.push(*id);
                    }
                }
                Why::TooLarge(bytes, _) if free => {
                    if smallest.is_none_or(|(b, _)| *bytes < b) {
                        smallest = Some((*bytes, *id));
                    }
                }
                Why::TooLarge(..) => {}
            }
        }
        if let Some((_, id)) = smallest
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
                Why::TooLarge(_, w) => {
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
        r.connection_lost();
        assert_eq!(r.due(now), [4, 5], "unanswered when the connection went");
        assert!(r.forget_before(Some(5)), "4 left the outbox");
        assert!(!r.forget_before(Some(5)));
        assert!(r.taken(&a, 5).is_empty());
        assert!(r.is_empty());
        assert_eq!(r.problem(), None);
    }

    #[test]
    fn events_too_large_are_offered_again_rarely_smallest_first() {
        let mut r = Refused::default();
        let a: Arc<str> = "s/a/event/plate".into();
        r.add(7, a.clone(), Why::TooLarge(1500, "0x95".into()));
        r.add(9, a.clone(), Why::TooLarge(1400, "0x95".into()));
        r.add(8, a.clone(), rules());
        let start = Instant::now();
        assert_eq!(r.due(start), [8], "the rules' retry only");
        assert!(
            r.taken(&a, 8).is_empty(),
            "an event taken does not resend one too large"
        );
        assert!(r.due(start + TOO_LARGE_RETRY / 2).is_empty());
        assert_eq!(r.due(start + TOO_LARGE_RETRY), [9], "the smallest");
        r.connection_lost();
        assert!(
            r.due(start + TOO_LARGE_RETRY).is_empty(),
            "not again before its period"
        );
        assert!(r.problem().unwrap().contains("2 event(s) too large"));
        r.limit_below(1500);
        r.limit_below(1400);
        assert!(r.beyond_known_limit(1400) && !r.beyond_known_limit(1399));
        assert_eq!(
            r.taken(&a, 9),
            [7],
            "the limit was raised: the others follow"
        );
        assert!(!r.beyond_known_limit(5000));
        r.gone(7);
        assert_eq!(
            r.large_tried, None,
            "the next one too large waits a full period"
        );
    }
}
