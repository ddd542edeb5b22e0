//! The MQTT side: one connection to the IOC broker, QoS 1 events, a
//! retained status per camera, and a retained agent status that the broker
//! itself turns to "offline" (last will) when the agent disappears.
//!
//! Topic tree, under the configured prefix (default `matthan/v1`):
//! ```text
//! {prefix}/{site}/status                      retained  {"state":"online"|"offline",…}
//! {prefix}/{site}/{camera}/status             retained  {"state":"streaming"|"reconnecting"|…}
//! {prefix}/{site}/{camera}/event/plate        QoS 1     event JSON (agent/schema/event.v1.schema.json)
//! {prefix}/{site}/{camera}/event/face         QoS 1     event JSON
//! ```
//!
//! Events reach the broker only through the outbox, so what the broker
//! has not acknowledged survives a reconnect, a crash or a power cut, and
//! is sent again in order with its original id and sequence number.
//!
//! MQTT 5, because a 3.1.1 broker answers a publish its access rules
//! refuse with the same PUBACK as one it took: the agent would delete an
//! event the IOC never got. A refused event stays in the outbox, and the
//! agent's status says which topic and why (see [`super::refused`]).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rumqttc::Transport;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{
    LastWill, LastWillProperties, Packet, PubAckReason, Publish, PublishProperties,
    SubscribeReasonCode,
};
use rumqttc::v5::{AsyncClient, ConnectionError, Event, MqttOptions, StateError};
use serde_json::json;

use tokio::sync::Notify;

use super::outbox::{Outbox, Record};
use super::refused::{RULES_RETRY, Refused, Why};
use crate::config::MqttOutput;
use crate::evidence::Receipt;
use crate::ingest::{CameraStatus, StatusReport};

pub const KEEP_ALIVE: Duration = Duration::from_secs(15);
pub const RECONNECT_MIN: Duration = Duration::from_millis(500);
pub const RECONNECT_MAX: Duration = Duration::from_secs(30);
/// How long shutdown waits for the broker to acknowledge what was sent.
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest MQTT packet taken, announced to the broker at connect (what
/// is sent is bounded by the broker's own announcement, see
/// `held_too_large`). rumqttc's own default, 10 KiB, is small enough for
/// one IOC acknowledgement of a few hundred packages to be lost. An MQTT 5
/// broker does not send a larger packet: it drops it, so a huge message on
/// the acknowledgement topic cannot break the connection.
pub const MAX_PACKET_BYTES: u32 = 8 << 20;
/// "Never expires": the session (the subscription, and the IOC's
/// acknowledgements queued while the gateway is away) outlives any outage.
const SESSION_NEVER_EXPIRES: u32 = u32::MAX;

#[derive(Debug, Clone, PartialEq)]
pub struct BrokerAddress {
    pub host: String,
    pub port: u16,
    pub tls: bool,
}

impl BrokerAddress {
    pub fn parse(url: &str) -> Result<BrokerAddress, String> {
        let shown = crate::config::redact(url);
        let u = url::Url::parse(url).map_err(|e| {
            format!(
                "`{shown}` is not a broker URL ({e}); write mqtt://host:1883 or mqtts://host:8883"
            )
        })?;
        // The connection takes its credentials from `username` and
        // `password_file`/`password_env` only; ones in the URL would be
        // dropped without a word and the broker would refuse the agent.
        if !u.username().is_empty() || u.password().is_some() {
            return Err(format!(
                "`{shown}` holds credentials, which are not read from the url; write the url \
                 without them and put the user in `username`, the password in `password_file` \
                 or `password_env`"
            ));
        }
        let tls = match u.scheme() {
            "mqtt" | "tcp" => false,
            "mqtts" | "ssl" => true,
            other => {
                return Err(format!(
                    "scheme `{other}` is not supported; write mqtt://host:1883 or mqtts://host:8883"
                ));
            }
        };
        let host = u
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| format!("`{shown}` names no host"))?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        Ok(BrokerAddress {
            host,
            port: u.port().unwrap_or(if tls { 8883 } else { 1883 }),
            tls,
        })
    }
}

/// What the connection task is asked to publish besides the outbox.
#[derive(Default)]
struct Retained {
    /// Latest status per camera, re-published after every reconnect so a
    /// consumer that joins late sees the present state.
    cameras: std::collections::BTreeMap<String, Vec<u8>>,
    /// Why the agent is degraded, by what it concerns (one problem's end
    /// must not hide another's); empty when all is well.
    agent_problems: std::collections::BTreeMap<Problem, String>,
    /// Statuses to publish: camera topics, and [`AGENT`] for the agent's.
    /// Only these go, so that one camera's change (or one status the
    /// client could not take) does not send every status again.
    unsent: std::collections::BTreeSet<String>,
}

/// The agent's own status among [`Retained::unsent`].
const AGENT: &str = "";

/// What a problem in the agent's status concerns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Problem {
    /// The configured outbox folder is unusable: a temporary one is used.
    OutboxFolder,
    /// The outbox cannot be written: events wait in memory.
    OutboxWrite,
    /// The evidence quota forced out a package not yet released.
    EvidenceQuota,
    /// The broker refused the subscription to the acknowledgement topic.
    AckRefused,
    /// The broker refused events: they wait in the outbox.
    EventsRefused,
}

impl Retained {
    /// Sets (or clears) one problem; marks the status for re-publishing
    /// only when it changed.
    fn set_problem(&mut self, what: Problem, problem: Option<String>) {
        let changed = match problem {
            Some(p) => self.agent_problems.insert(what, p.clone()).as_ref() != Some(&p),
            None => self.agent_problems.remove(&what).is_some(),
        };
        if changed {
            self.unsent.insert(AGENT.into());
        }
    }

    /// Every status, as after a reconnect.
    fn all_unsent(&mut self) {
        self.unsent = self.cameras.keys().cloned().collect();
        self.unsent.insert(AGENT.into());
    }

    fn agent_status(&self) -> String {
        if self.agent_problems.is_empty() {
            return json!({"state": "online", "version": env!("CARGO_PKG_VERSION")}).to_string();
        }
        let reason = self
            .agent_problems
            .values()
            .cloned()
            .collect::<Vec<_>>()
            .join("; ");
        json!({"state": "degraded", "reason": reason, "version": env!("CARGO_PKG_VERSION")})
            .to_string()
    }
}

/// The MQTT publisher: events go through the durable [`Outbox`]; one task
/// owns the connection, publishes pending records in order (at most
/// [`WINDOW`] unacknowledged at a time), deletes them on PUBACK, and after
/// any connection loss starts again from the oldest unacknowledged record.
pub struct MqttSink {
    outbox: Arc<Mutex<Outbox>>,
    retained: Arc<Mutex<Retained>>,
    wake: Arc<Notify>,
    stop: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
    prefix: String,
    site: String,
    outbox_failing: bool,
    reconnects: Arc<AtomicU64>,
    latency: Arc<super::latency::Latency>,
}

/// Unacknowledged publishes in flight. Enough to fill a 4G link's
/// round-trip; small enough that a reconnect re-sends little.
pub const WINDOW: usize = 64;

fn qos(level: u8) -> QoS {
    match level {
        0 => QoS::AtMostOnce,
        2 => QoS::ExactlyOnce,
        _ => QoS::AtLeastOnce,
    }
}

impl MqttSink {
    /// `acks`, when given, receives the package ids the IOC acknowledges
    /// on `{prefix}/{site}/evidence/ack`.
    pub fn connect(
        config: &MqttOutput,
        site: &str,
        outbox: Outbox,
        acks: Option<crate::evidence::Acknowledger>,
    ) -> anyhow::Result<Self> {
        let addr = BrokerAddress::parse(&config.url)
            .map_err(|e| anyhow::anyhow!("outputs.mqtt.url: {e}"))?;
        let s = outbox.stats;
        if s.recovered > 0 || s.torn_bytes_discarded > 0 {
            tracing::info!(
                pending = s.recovered,
                torn_bytes = s.torn_bytes_discarded,
                "outbox recovered undelivered events; they are sent first"
            );
        }
        let outbox = Arc::new(Mutex::new(outbox));
        let retained = Arc::new(Mutex::new(Retained::default()));
        let (wake, stop) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
        let transport = transport(config, addr.tls)?;
        let credentials = credentials(config)?;
        let connection = Connection {
            transport,
            credentials,
            addr,
            client_id: config
                .client_id
                .clone()
                .unwrap_or_else(|| format!("matthan-{site}")),
            status_topic: format!("{}/{site}/status", config.topic_prefix),
            ack_topic: format!("{}/{site}/evidence/ack", config.topic_prefix),
            acks,
            qos: qos(config.qos),
            outbox: outbox.clone(),
            retained: retained.clone(),
            wake: wake.clone(),
            stop: stop.clone(),
            reconnects: Arc::default(),
            latency: Arc::default(),
        };
        let latency = connection.latency.clone();
        let reconnects = connection.reconnects.clone();
        let task = tokio::spawn(connection.run());
        Ok(Self {
            outbox,
            retained,
            wake,
            stop,
            task,
            prefix: config.topic_prefix.clone(),
            site: site.to_string(),
            outbox_failing: false,
            reconnects,
            latency,
        })
    }

    /// Connection losses so far, for metrics.
    pub fn reconnects(&self) -> Arc<AtomicU64> {
        self.reconnects.clone()
    }

    /// The outbox, for metrics.
    pub fn outbox(&self) -> Arc<Mutex<Outbox>> {
        self.outbox.clone()
    }

    /// Sets (or clears) the problem the agent's retained status reports.
    pub fn set_problem(&self, what: Problem, problem: Option<String>) {
        if let Ok(mut r) = self.retained.lock() {
            r.set_problem(what, problem);
        }
        self.wake.notify_one();
    }

    /// Frame-to-event latency of the events acknowledged so far.
    pub fn latency(&self) -> Arc<super::latency::Latency> {
        self.latency.clone()
    }

    /// Stores the event durably, then wakes the connection to send it.
    /// Returns false when the outbox could not store it. `decided_at`, the
    /// arrival of the frame that decided the event, starts its latency.
    pub fn publish_event(
        &mut self,
        topic_suffix: &str,
        payload: &[u8],
        decided_at: Option<SystemTime>,
    ) -> bool {
        let topic = format!("{}/{}/{}", self.prefix, self.site, topic_suffix);
        let result = self
            .outbox
            .lock()
            .map_err(|_| anyhow::anyhow!("outbox lock poisoned"))
            .and_then(|mut o| o.append(&topic, payload));
        match result {
            Ok(record) => {
                if let Some(at) = decided_at {
                    self.latency.stored(record, at);
                }
                if self.outbox_failing {
                    tracing::info!("outbox writable again");
                    self.outbox_failing = false;
                    self.set_problem(Problem::OutboxWrite, None);
                }
                self.wake.notify_one();
                true
            }
            Err(e) => {
                if !self.outbox_failing {
                    tracing::error!("{e:#}; events are kept in memory until it recovers");
                    self.outbox_failing = true;
                    self.set_problem(Problem::OutboxWrite, Some(format!("outbox: {e:#}")));
                }
                false
            }
        }
    }

    pub fn publish_camera_status(&self, report: &StatusReport) {
        let mut body = json!({
            "state": report.status.name(),
            "time": crate::event::rfc3339(report.at),
        });
        if let CameraStatus::Reconnecting { reason, retry_in } = &report.status {
            body["reason"] = json!(reason);
            body["retry_in_s"] = json!(retry_in.as_secs_f64());
        }
        let topic = format!("{}/{}/{}/status", self.prefix, self.site, report.camera);
        if let Ok(mut r) = self.retained.lock() {
            r.cameras
                .insert(topic.clone(), body.to_string().into_bytes());
            r.unsent.insert(topic);
        }
        self.wake.notify_one();
    }

    /// Waits (up to [`FLUSH_TIMEOUT`]) for the broker to acknowledge every
    /// stored event, says "offline", and disconnects. What is still
    /// unacknowledged stays in the outbox for the next start.
    pub async fn close(self) {
        self.stop.notify_one();
        let _ = tokio::time::timeout(FLUSH_TIMEOUT + Duration::from_secs(2), self.task).await;
        if let Ok(o) = self.outbox.lock()
            && !o.is_empty()
        {
            tracing::warn!(
                pending = o.len(),
                "events not yet acknowledged stay in the outbox and are sent at the next start"
            );
        }
    }
}

/// An acknowledgement is `{"id": "<package id>"}` or `{"ids": [...]}`.
fn parse_ack(payload: &[u8]) -> Result<Vec<String>, String> {
    const SHAPE: &str = r#"send {"id": "<package id>"} or {"ids": ["<package id>", …]}"#;
    let v: serde_json::Value = serde_json::from_slice(payload)
        .map_err(|e| format!("the payload is not JSON ({e}); {SHAPE}"))?;
    let ids: Vec<String> = match (v.get("id"), v.get("ids")) {
        (Some(id), None) => id.as_str().map(|s| vec![s.to_string()]).unwrap_or_default(),
        (None, Some(ids)) => ids
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|i| i.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default(),
        _ => Vec::new(),
    };
    // Package ids are UUIDs: anything else would be a path into the
    // evidence folder. Written as the folders are named, whatever the case.
    let ids: Option<Vec<String>> = ids
        .iter()
        .map(|id| Some(uuid::Uuid::parse_str(id).ok()?.hyphenated().to_string()))
        .collect();
    match ids {
        Some(ids) if !ids.is_empty() => Ok(ids),
        _ => Err(format!("no package id, or one that is not a UUID; {SHAPE}")),
    }
}

struct Connection {
    transport: Transport,
    /// Username and password; the password is never logged.
    credentials: Option<(String, String)>,
    addr: BrokerAddress,
    client_id: String,
    status_topic: String,
    /// Where the IOC acknowledges evidence packages it has taken.
    ack_topic: String,
    acks: Option<crate::evidence::Acknowledger>,
    qos: QoS,
    outbox: Arc<Mutex<Outbox>>,
    retained: Arc<Mutex<Retained>>,
    wake: Arc<Notify>,
    stop: Arc<Notify>,
    reconnects: Arc<AtomicU64>,
    latency: Arc<super::latency::Latency>,
}

/// A publish handed to rumqttc, waiting for its packet id, then its ack.
#[derive(Clone)]
enum Sent {
    Event {
        id: u64,
        topic: Arc<str>,
        bytes: usize,
    },
    Status {
        bytes: usize,
    },
}

/// What one connection has handed to rumqttc, and what it is to send next.
#[derive(Default)]
struct InFlight {
    /// Handed over, waiting for their packet ids, in order.
    order: VecDeque<Sent>,
    /// Waiting for the broker's answer.
    by_pkid: HashMap<u16, Sent>,
    /// The last outbox record read in order: sent, or passed over as refused.
    last_sent: u64,
    /// Refused events to offer again, before new ones.
    resend: VecDeque<u64>,
}

impl InFlight {
    fn room(&self) -> usize {
        WINDOW.saturating_sub(self.order.len() + self.by_pkid.len())
    }

    fn unanswered(&self) -> impl Iterator<Item = &Sent> {
        self.order.iter().chain(self.by_pkid.values())
    }

    fn events_unanswered(&self) -> bool {
        self.unanswered().any(|s| matches!(s, Sent::Event { .. }))
    }

    /// The largest event unanswered, unless a status is larger: then
    /// that may be what the broker refused, and no event is to blame.
    fn largest_unanswered(&self) -> Option<(u64, Arc<str>, usize)> {
        let bytes = |s: &&Sent| match s {
            Sent::Event { bytes, .. } | Sent::Status { bytes } => *bytes,
        };
        match self.unanswered().max_by_key(bytes)? {
            Sent::Event { id, topic, bytes } => Some((*id, topic.clone(), *bytes)),
            Sent::Status { .. } => None,
        }
    }
}

/// Every message the agent sends is JSON: said in MQTT 5's properties,
/// so a consumer (a rule engine, an IoT agent) need not guess.
const CONTENT_TYPE: &str = "application/json";
const UTF8: u8 = 1;

fn json_properties() -> PublishProperties {
    PublishProperties {
        payload_format_indicator: Some(UTF8),
        content_type: Some(CONTENT_TYPE.into()),
        ..Default::default()
    }
}

/// Hands one record to rumqttc; false when its queue is full.
fn publish(client: &AsyncClient, qos: QoS, flight: &mut InFlight, r: Record) -> bool {
    let topic: Arc<str> = r.topic.as_str().into();
    let bytes = r.payload.len();
    let sent =
        client.try_publish_with_properties(r.topic, qos, false, r.payload, json_properties());
    if sent.is_err() {
        return false;
    }
    flight.order.push_back(Sent::Event {
        id: r.id,
        topic,
        bytes,
    });
    true
}

/// Why the broker refused a publish, in words an installer can act on.
fn refusal(reason: PubAckReason, detail: Option<&str>) -> Option<String> {
    let words = match reason {
        PubAckReason::Success | PubAckReason::NoMatchingSubscribers => return None,
        PubAckReason::NotAuthorized => "not authorized",
        PubAckReason::TopicNameInvalid => "topic name invalid",
        PubAckReason::QuotaExceeded => "quota exceeded",
        PubAckReason::PayloadFormatInvalid => "payload format invalid",
        PubAckReason::PacketIdentifierInUse => "packet identifier in use",
        PubAckReason::ImplementationSpecificError => "implementation-specific error",
        PubAckReason::UnspecifiedError => "unspecified error",
    };
    Some(match detail {
        Some(d) => format!("{words}: {d}"),
        None => words.to_string(),
    })
}

impl Connection {
    async fn run(self) {
        let mut backoff = RECONNECT_MIN;
        let mut stopping: Option<tokio::time::Instant> = None;
        // Across connections: a refused event is not sent again with the
        // others at each reconnect, only offered again as `Refused` says.
        let mut refused = Refused::default();
        loop {
            refused.connection_lost();
            match self.session(&mut stopping, &mut refused).await {
                SessionEnd::Stopped => return,
                SessionEnd::Lost {
                    error: e,
                    was_connected,
                } => {
                    if stopping.is_some_and(|deadline| tokio::time::Instant::now() >= deadline) {
                        return;
                    }
                    if was_connected {
                        backoff = RECONNECT_MIN;
                    }
                    self.reconnects.fetch_add(1, Ordering::Relaxed);
                    // Jitter keeps a fleet of gateways from reconnecting in lockstep after a broker restart.
                    let jitter = Duration::from_millis(rand_jitter_ms(backoff));
                    tracing::warn!(broker = %format!("{}:{}", self.addr.host, self.addr.port), retry_in_ms = (backoff + jitter).as_millis() as u64, "MQTT connection lost: {e}");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff + jitter) => {}
                        // Stopping while the broker is away: what is pending stays in the outbox.
                        _ = self.stop.notified() => return,
                    }
                    backoff = (backoff * 2).min(RECONNECT_MAX);
                }
            }
        }
    }

    /// One connection: from connect to loss (or a clean stop).
    async fn session(
        &self,
        stopping: &mut Option<tokio::time::Instant>,
        refused: &mut Refused,
    ) -> SessionEnd {
        let mut options = MqttOptions::new(
            self.client_id.clone(),
            self.addr.host.clone(),
            self.addr.port,
        );
        options.set_keep_alive(KEEP_ALIVE);
        options.set_max_packet_size(Some(MAX_PACKET_BYTES));
        // A persistent session, when the IOC's acknowledgements are taken:
        // the broker keeps the subscription, and queues what the IOC sends,
        // while the gateway is away. It cannot bring back a publish of ours:
        // each connection has a fresh client, so only the outbox re-sends.
        let persistent = self.acks.is_some();
        options.set_clean_start(!persistent);
        if persistent {
            options.set_session_expiry_interval(Some(SESSION_NEVER_EXPIRES));
        }
        // An acknowledgement is acknowledged to the broker only once it is
        // recorded (evidence::Receipt): a crash before that leaves it with
        // the broker, which hands it over again at the next connection.
        options.set_manual_acks(persistent);
        options.set_last_will(LastWill::new(
            &self.status_topic,
            json!({"state": "offline", "reason": "connection lost"}).to_string(),
            QoS::AtLeastOnce,
            true,
            Some(LastWillProperties {
                delay_interval: None,
                payload_format_indicator: Some(UTF8),
                message_expiry_interval: None,
                content_type: Some(CONTENT_TYPE.into()),
                response_topic: None,
                correlation_data: None,
                user_properties: Vec::new(),
            }),
        ));
        options.set_transport(self.transport.clone());
        if let Some((user, password)) = &self.credentials {
            options.set_credentials(user, password);
        }
        // A fresh client per connection: rumqttc's own retransmission state
        // dies with it, and the outbox alone decides what is re-sent.
        let (client, mut eventloop) = AsyncClient::new(options, WINDOW * 2);
        // rumqttc's poll() must not be cancelled mid-read, and this loop
        // also waits for new events and for shutdown: the event loop runs
        // in its own task and hands its events over a channel.
        let (tx, mut events) = tokio::sync::mpsc::channel(WINDOW);
        let pump = tokio::spawn(async move {
            loop {
                let ev = eventloop.poll().await;
                let failed = ev.is_err();
                if tx.send(ev).await.is_err() || failed {
                    break;
                }
            }
        });
        let _pump = AbortOnDrop(pump);
        // The IOC's messages whose acknowledgements are recorded, to be
        // acknowledged to the broker on this connection (a receipt that
        // comes after it is gone finds no one: the broker sends it again).
        let (recorded_tx, mut recorded) = tokio::sync::mpsc::unbounded_channel::<Publish>();
        // Acknowledgements the evidence queue had no room for yet, and
        // PUBACKs the client's request queue had no room for yet.
        let mut to_record: VecDeque<(Vec<String>, Receipt)> = VecDeque::new();
        let mut to_puback: VecDeque<Publish> = VecDeque::new();
        let mut connected = false;
        let mut was_connected = false;
        let mut flight = InFlight::default();
        // The largest packet the broker takes, when it says.
        let mut broker_max: Option<u32> = None;
        let mut retry =
            tokio::time::interval_at(tokio::time::Instant::now() + RULES_RETRY, RULES_RETRY);
        retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut none_refused = refused.is_empty();
        loop {
            // The first refusal's retry comes a full period after it.
            if none_refused && !refused.is_empty() {
                retry.reset();
            }
            none_refused = refused.is_empty();
            if connected {
                if let Some(acks) = &self.acks {
                    while let Some((ids, receipt)) = to_record.pop_front() {
                        if let Some(back) = acks(ids, receipt) {
                            to_record.push_front(back);
                            break;
                        }
                    }
                }
                while to_puback.front().is_some_and(|p| client.try_ack(p).is_ok()) {
                    to_puback.pop_front();
                }
                self.send_statuses(&client, &mut flight.order);
                if !refused.is_empty() {
                    let oldest = self.outbox.lock().ok().and_then(|o| o.oldest_pending());
                    if refused.forget_before(oldest) {
                        self.set_problem(Problem::EventsRefused, refused.problem());
                    }
                }
                self.send_events(&client, &mut flight, refused, broker_max);
                if let Some(deadline) = *stopping {
                    // Refused events stay for the next start: not waited for.
                    let done = !flight.events_unanswered()
                        && flight.resend.is_empty()
                        && self.outbox.lock().map_or(true, |mut o| {
                            o.read_pending_except(flight.last_sent, 1, |id| refused.contains(id))
                                .is_ok_and(|r| r.is_empty())
                        });
                    if done || tokio::time::Instant::now() >= deadline {
                        let offline = json!({"state": "offline", "reason": "shutdown"}).to_string();
                        let _ = client.try_publish_with_properties(
                            &self.status_topic,
                            QoS::AtLeastOnce,
                            true,
                            offline,
                            json_properties(),
                        );
                        let _ = client.try_disconnect();
                        // Let the event loop flush the goodbye.
                        let _ = tokio::time::timeout(Duration::from_secs(1), async {
                            while let Some(Ok(ev)) = events.recv().await {
                                if matches!(ev, Event::Outgoing(rumqttc::Outgoing::Disconnect)) {
                                    break;
                                }
                            }
                        })
                        .await;
                        return SessionEnd::Stopped;
                    }
                }
            } else if stopping.is_some_and(|d| tokio::time::Instant::now() >= d) {
                return SessionEnd::Stopped;
            }
            let event = tokio::select! {
                ev = events.recv() => match ev {
                    Some(ev) => ev,
                    None => return SessionEnd::Lost { error: "MQTT event loop ended".into(), was_connected },
                },
                _ = self.wake.notified() => continue,
                Some(p) = recorded.recv() => {
                    to_puback.push_back(p);
                    continue;
                }
                _ = tokio::time::sleep(Duration::from_millis(200)), if !to_record.is_empty() || !to_puback.is_empty() => continue,
                _ = self.stop.notified() => {
                    stopping.get_or_insert(tokio::time::Instant::now() + FLUSH_TIMEOUT);
                    continue;
                }
                _ = tokio::time::sleep(Duration::from_millis(200)), if stopping.is_some() => continue,
                _ = retry.tick(), if !refused.is_empty() => {
                    flight.resend.extend(refused.due(std::time::Instant::now()));
                    continue;
                }
            };
            match event {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    broker_max = ack.properties.and_then(|p| p.max_packet_size);
                    tracing::info!(broker = %format!("{}:{}", self.addr.host, self.addr.port), "connected to MQTT broker");
                    connected = true;
                    was_connected = true;
                    // The agent's status as it is (degraded, perhaps), not a
                    // plain "online" that alerting would see flicker on every
                    // reconnect; the cameras' statuses follow.
                    if let Ok(mut r) = self.retained.lock() {
                        r.all_unsent();
                    }
                    self.send_statuses(&client, &mut flight.order);
                    if self.acks.is_some() {
                        let _ = client.try_subscribe(&self.ack_topic, QoS::AtLeastOnce);
                    }
                    // Events refused before are offered again a full period on.
                    retry.reset();
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let ids = match &self.acks {
                        Some(_) if p.topic == self.ack_topic.as_bytes() => parse_ack(&p.payload)
                            .inspect_err(|e| tracing::warn!(topic = %self.ack_topic, "evidence acknowledgement ignored: {e}"))
                            .ok(),
                        _ => None,
                    };
                    match ids {
                        // PUBACKed once every package it names is recorded.
                        Some(ids) => {
                            let tx = recorded_tx.clone();
                            let message = p.clone();
                            to_record.push_back((
                                ids,
                                Receipt::new(move || {
                                    let _ = tx.send(message);
                                }),
                            ));
                        }
                        // Nothing to record: taken as it is.
                        None if persistent => to_puback.push_back(p),
                        None => {}
                    }
                }
                Ok(Event::Outgoing(rumqttc::Outgoing::Publish(pkid))) => {
                    if let Some(sent) = flight.order.pop_front() {
                        if pkid == 0 {
                            // QoS 0: nothing more will come.
                            if let Sent::Event { id, .. } = sent {
                                self.acked(id);
                            }
                        } else {
                            flight.by_pkid.insert(pkid, sent);
                        }
                    }
                }
                Ok(Event::Incoming(Packet::PubAck(ack))) => {
                    let Some(sent) = flight.by_pkid.remove(&ack.pkid) else {
                        continue;
                    };
                    let detail = ack
                        .properties
                        .as_ref()
                        .and_then(|p| p.reason_string.as_deref());
                    match (refusal(ack.reason, detail), sent) {
                        (None, Sent::Event { id, topic, .. }) => {
                            let was_refused = refused.contains(id);
                            flight.resend.extend(refused.taken(&topic, id));
                            self.acked(id);
                            if was_refused {
                                self.set_problem(Problem::EventsRefused, refused.problem());
                            }
                        }
                        (None, Sent::Status { .. }) => {}
                        (Some(why), Sent::Event { id, topic, .. }) => {
                            self.refuse(refused, id, topic, Why::Rules(why));
                        }
                        // Statuses are sent again at the next change or connection.
                        (Some(why), Sent::Status { .. }) => {
                            tracing::warn!(
                                "the broker refused a status message ({why}): allow this client to publish under its status topics"
                            );
                        }
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(ack))) => {
                    // Only the acknowledgement topic is subscribed to.
                    let refused = ack
                        .return_codes
                        .iter()
                        .find(|c| !matches!(c, SubscribeReasonCode::Success(_)));
                    let problem = refused.map(|code| {
                        format!(
                            "the broker refused the subscription to {} ({code:?}): the IOC's evidence acknowledgements cannot arrive, and packages wait for export or the quota; allow this client to read that topic in the broker's access rules",
                            self.ack_topic
                        )
                    });
                    if let Some(p) = &problem {
                        tracing::error!("{p}");
                    }
                    self.set_problem(Problem::AckRefused, problem);
                }
                Ok(Event::Incoming(Packet::PubComp(comp))) => {
                    if let Some(Sent::Event { id, .. }) = flight.by_pkid.remove(&comp.pkid) {
                        self.acked(id);
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    if connected && too_large_ack(&e) {
                        // Which publish it answered is lost with the packet;
                        // the largest unanswered is at least as large.
                        if let Some((id, topic, bytes)) = flight.largest_unanswered() {
                            refused.limit_below(bytes);
                            let why = Why::TooLarge(bytes, "PUBACK 0x95, packet too large".into());
                            self.refuse(refused, id, topic, why);
                        }
                    }
                    return SessionEnd::Lost {
                        error: connection_error(&e, connected),
                        was_connected,
                    };
                }
            }
        }
    }

    /// Refused events due again first, then the outbox's records in
    /// order, passing over those refused or held, until the window is full.
    fn send_events(
        &self,
        client: &AsyncClient,
        flight: &mut InFlight,
        refused: &mut Refused,
        broker_max: Option<u32>,
    ) {
        while let Some(&id) = flight.resend.front() {
            if flight.room() == 0 {
                return;
            }
            let read = self
                .outbox
                .lock()
                .map_err(|_| anyhow::anyhow!("outbox lock poisoned"))
                .and_then(|mut o| o.read_pending(id.saturating_sub(1), 1));
            let record = match read {
                Ok(records) => records.into_iter().next().filter(|r| r.id == id),
                // Kept for the next turn, as a record read in order is.
                Err(e) => {
                    tracing::error!("cannot read the outbox: {e:#}");
                    return;
                }
            };
            match record {
                // Offered as too large, it probes the limit: not held for it.
                Some(r)
                    if self.held_too_large(&r, broker_max, refused, !refused.is_too_large(id)) => {}
                Some(r) => {
                    if !publish(client, self.qos, flight, r) {
                        return;
                    }
                }
                // The outbox's bounds dropped it meanwhile.
                None => {
                    refused.gone(id);
                    self.set_problem(Problem::EventsRefused, refused.problem());
                }
            }
            flight.resend.pop_front();
        }
        // Records passed over leave room: read on until it is used.
        while flight.room() > 0 {
            let records = self
                .outbox
                .lock()
                .map_err(|_| anyhow::anyhow!("outbox lock poisoned"))
                .and_then(|mut o| {
                    o.read_pending_except(flight.last_sent, flight.room(), |id| {
                        refused.contains(id)
                    })
                });
            let records = match records {
                Ok(records) if !records.is_empty() => records,
                Ok(_) => return,
                Err(e) => {
                    tracing::error!("cannot read the outbox: {e:#}");
                    return;
                }
            };
            for r in records {
                let id = r.id;
                let held = self.held_too_large(&r, broker_max, refused, true);
                if !held && !publish(client, self.qos, flight, r) {
                    return;
                }
                flight.last_sent = id;
            }
        }
    }

    fn send_statuses(&self, client: &AsyncClient, order: &mut VecDeque<Sent>) {
        let Ok(mut r) = self.retained.lock() else {
            return;
        };
        // A status the client could not take (its queue full on a slow
        // link) stays unsent, and goes on a later turn rather than being
        // left stale until the next change.
        for topic in std::mem::take(&mut r.unsent) {
            let (to, body) = if topic == AGENT {
                (self.status_topic.as_str(), r.agent_status().into_bytes())
            } else {
                match r.cameras.get(&topic) {
                    Some(body) => (topic.as_str(), body.clone()),
                    None => continue,
                }
            };
            let bytes = body.len();
            let sent = client.try_publish_with_properties(
                to,
                QoS::AtLeastOnce,
                true,
                body,
                json_properties(),
            );
            if sent.is_ok() {
                order.push_back(Sent::Status { bytes });
            } else {
                r.unsent.insert(topic);
            }
        }
    }

    fn set_problem(&self, what: Problem, problem: Option<String>) {
        if let Ok(mut r) = self.retained.lock() {
            r.set_problem(what, problem);
        }
    }

    /// Keeps a refused event in the outbox, and says so.
    fn refuse(&self, refused: &mut Refused, id: u64, topic: Arc<str>, why: Why) {
        if refused.add(id, topic.clone(), why.clone()) {
            tracing::error!(%topic, record = id, "the broker refused an event ({why:?}); it stays in the outbox and is offered again later: see the agent's status for what to change");
        }
        self.set_problem(Problem::EventsRefused, refused.problem());
    }

    /// A record larger than the broker says it takes is not sent (rumqttc
    /// would end the connection over it, at every connection).
    /// With `learned`, one as large as an event the broker refused as too
    /// large is held too: each such refusal costs a connection.
    fn held_too_large(
        &self,
        r: &Record,
        broker_max: Option<u32>,
        refused: &mut Refused,
        learned: bool,
    ) -> bool {
        // Fixed header, topic, packet id, properties: a bound, not the size.
        let size = 1 + 4 + 2 + r.topic.len() + 2 + 1 + r.payload.len();
        let why = match broker_max {
            Some(max) if size > max as usize => {
                format!("{size} bytes, over the broker's maximum packet size of {max}")
            }
            _ if learned && refused.beyond_known_limit(r.payload.len()) => format!(
                "{} bytes, as large as one the broker refused as too large (PUBACK 0x95)",
                r.payload.len()
            ),
            _ => return false,
        };
        let why = Why::TooLarge(r.payload.len(), why);
        self.refuse(refused, r.id, r.topic.as_str().into(), why);
        true
    }

    fn acked(&self, id: u64) {
        self.latency.acknowledged(id);
        if let Ok(mut o) = self.outbox.lock()
            && let Err(e) = o.ack(id)
        {
            tracing::error!("cannot record the acknowledgement of event record {id}: {e:#}");
        }
    }
}

enum SessionEnd {
    Stopped,
    Lost { error: String, was_connected: bool },
}

/// The agent needs MQTT 5 to tell an event the broker refused from one it
/// took. A broker that speaks only 3.1.1 answers its CONNECT with a
/// refusal that an MQTT 5 client reads as the connection closing before
/// it was accepted: that case says so.
fn connection_error(e: &ConnectionError, accepted: bool) -> String {
    const NEEDS_5: &str = "the agent speaks MQTT 5, which it needs to know an event was refused \
        rather than taken; use a broker that speaks it (Mosquitto 2.0 or later, EMQX, HiveMQ, \
        VerneMQ, RabbitMQ 3.13 or later)";
    match e {
        ConnectionError::ConnectionRefused(
            rumqttc::v5::mqttbytes::v5::ConnectReturnCode::UnsupportedProtocolVersion,
        ) => format!("{e}: {NEEDS_5}"),
        ConnectionError::MqttState(StateError::ConnectionAborted) if !accepted => format!(
            "{e}, before accepting the connection: a broker that speaks only MQTT 3.1.1 does \
             this, and {NEEDS_5}; otherwise the broker's log says why"
        ),
        _ if too_large_ack(e) => format!(
            "{e}: the broker refused a publish as too large (PUBACK 0x95, which the MQTT library \
             cannot read); that event waits in the outbox and the others go on"
        ),
        _ => e.to_string(),
    }
}

/// Mosquitto's `message_size_limit` refuses a publish with PUBACK reason
/// 0x95, which MQTT 5 does not list for PUBACK: rumqttc cannot read it,
/// and ends the connection.
fn too_large_ack(e: &ConnectionError) -> bool {
    use rumqttc::v5::mqttbytes::Error::InvalidConnectReturnCode;
    matches!(
        e,
        ConnectionError::MqttState(StateError::Deserialization(InvalidConnectReturnCode(0x95)))
    )
}

fn read_file(key: &str, path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path)
        .map_err(|e| anyhow::anyhow!("outputs.mqtt.{key}: cannot read {}: {e}", path.display()))
}

fn transport(config: &MqttOutput, tls: bool) -> anyhow::Result<Transport> {
    if !tls {
        return Ok(Transport::tcp());
    }
    let client_auth = match (&config.client_cert_file, &config.client_key_file) {
        (Some(cert), Some(key)) => Some((
            read_file("client_cert_file", cert)?,
            read_file("client_key_file", key)?,
        )),
        _ => None,
    };
    Ok(match &config.ca_file {
        Some(ca) => Transport::tls(read_file("ca_file", ca)?, client_auth, None),
        None if client_auth.is_some() => {
            anyhow::bail!("outputs.mqtt.ca_file: mutual TLS needs the broker's CA file as well")
        }
        None => Transport::tls_with_default_config(),
    })
}

fn credentials(config: &MqttOutput) -> anyhow::Result<Option<(String, String)>> {
    let Some(user) = &config.username else {
        return Ok(None);
    };
    let password = match (&config.password_file, &config.password_env) {
        (Some(file), _) => String::from_utf8(read_file("password_file", file)?)
            .map_err(|_| {
                anyhow::anyhow!("outputs.mqtt.password_file: {} is not text", file.display())
            })?
            .trim_end_matches(['\r', '\n'])
            .to_string(),
        (None, Some(var)) => std::env::var(var).map_err(|_| {
            anyhow::anyhow!("outputs.mqtt.password_env: the environment variable {var} is not set")
        })?,
        (None, None) => String::new(),
    };
    Ok(Some((user.clone(), password)))
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn rand_jitter_ms(base: Duration) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as u64);
    nanos % (base.as_millis() as u64 / 2 + 1)
}

#[cfg(test)]
mod tests {
    #[test]
    fn acknowledgements_name_packages_by_uuid() {
        let id = "01a21da8-78a7-742b-b798-982affa7fbe7";
        assert_eq!(
            parse_ack(format!(r#"{{"id":"{id}"}}"#).as_bytes()),
            Ok(vec![id.to_string()])
        );
        assert_eq!(
            parse_ack(format!(r#"{{"ids":["{id}","{id}"]}}"#).as_bytes())
                .unwrap()
                .len(),
            2
        );
        // Written in capitals, it still names the package's folder.
        assert_eq!(
            parse_ack(format!(r#"{{"id":"{}"}}"#, id.to_uppercase()).as_bytes()),
            Ok(vec![id.to_string()])
        );
        for bad in [
            &b"not json"[..],
            br#"{"id":"../../etc"}"#,
            br#"{"id":5}"#,
            br#"{}"#,
        ] {
            let e = parse_ack(bad).unwrap_err();
            assert!(e.contains(r#"{"id": "<package id>"}"#), "{e}");
        }
    }

    use super::*;

    #[test]
    fn one_problem_ending_does_not_hide_another() {
        let mut r = Retained::default();
        r.set_problem(Problem::OutboxFolder, Some("outbox in /tmp".into()));
        r.set_problem(Problem::OutboxWrite, Some("outbox: disk full".into()));
        r.set_problem(Problem::OutboxWrite, None);
        let status: serde_json::Value = serde_json::from_str(&r.agent_status()).unwrap();
        assert_eq!(status["state"], "degraded");
        assert_eq!(status["reason"], "outbox in /tmp");
        r.agent_problems.clear();
        let status: serde_json::Value = serde_json::from_str(&r.agent_status()).unwrap();
        assert_eq!(status["state"], "online");
    }

    #[test]
    fn only_the_statuses_that_changed_are_sent_again() {
        let mut r = Retained::default();
        r.cameras.insert("a".into(), b"streaming".to_vec());
        r.cameras.insert("b".into(), b"streaming".to_vec());
        r.all_unsent();
        assert_eq!(r.unsent.len(), 3, "after a reconnect, every status");
        r.unsent.clear();
        r.set_problem(Problem::OutboxWrite, Some("disk full".into()));
        r.set_problem(Problem::OutboxWrite, Some("disk full".into()));
        assert_eq!(r.unsent.iter().collect::<Vec<_>>(), [AGENT]);
    }

    #[test]
    fn a_publish_with_no_subscriber_is_taken_and_a_refusal_says_why() {
        assert_eq!(refusal(PubAckReason::Success, None), None);
        assert_eq!(refusal(PubAckReason::NoMatchingSubscribers, None), None);
        assert_eq!(
            refusal(PubAckReason::NotAuthorized, Some("acl")).as_deref(),
            Some("not authorized: acl")
        );
        let closed = ConnectionError::MqttState(rumqttc::v5::StateError::ConnectionAborted);
        assert!(connection_error(&closed, false).contains("MQTT 3.1.1"));
        assert!(!connection_error(&closed, true).contains("MQTT 3.1.1"));
    }

    #[test]
    fn broker_urls() {
        assert_eq!(
            BrokerAddress::parse("mqtt://127.0.0.1:1884").unwrap(),
            BrokerAddress {
                host: "127.0.0.1".into(),
                port: 1884,
                tls: false
            }
        );
        assert_eq!(
            BrokerAddress::parse("mqtts://ioc.example.vn").unwrap().port,
            8883
        );
        assert!(
            BrokerAddress::parse("http://x")
                .unwrap_err()
                .contains("mqtt://")
        );
        assert!(BrokerAddress::parse("nonsense").is_err());
    }
}
