//! Publishing: events and status leave the agent here, to MQTT and/or a
//! JSON-lines file or standard output.
//!
//! Camera threads hand messages over with [`Outbound::send`], which never
//! blocks: frame processing must not wait for the network. The channel is
//! bounded; when it is full the message is counted and logged as dropped.
//! Events for MQTT are then stored in the durable [`outbox::Outbox`]
//! before any attempt to send them.

pub mod jsonl;
pub mod latency;
pub mod mqtt;
pub mod outbox;
mod refused;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::mpsc;

use crate::event::Event;
use crate::evidence::EvidenceNotice;
use crate::ingest::StatusReport;

/// Messages waiting for the publisher; at 2 events a second per camera
/// this is minutes of backlog, far beyond a broker hiccup.
pub const CHANNEL_CAPACITY: usize = 4096;

#[derive(Debug, Clone)]
pub enum Message {
    Event(Box<Event>),
    /// A package sealed, failed or deleted; durable like events.
    Evidence(Box<EvidenceNotice>),
    CameraStatus(StatusReport),
}

#[derive(Clone)]
pub struct Outbound {
    tx: mpsc::Sender<Message>,
    dropped: Arc<AtomicU64>,
}

impl Outbound {
    pub fn channel() -> (Outbound, mpsc::Receiver<Message>) {
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        (
            Outbound {
                tx,
                dropped: Arc::default(),
            },
            rx,
        )
    }

    pub fn send(&self, message: Message) {
        if let Err(e) = self.tx.try_send(message) {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            let what = match e.into_inner() {
                Message::Event(ev) => {
                    format!("event {} seq {} of camera {}", ev.id, ev.seq, ev.camera.id)
                }
                // Its promise stays: the next start announces the package again.
                Message::Evidence(n) if n.status != "deleted" => format!(
                    "evidence notice for event {} (announced again at the next start)",
                    n.event_id
                ),
                Message::Evidence(n) => format!("evidence notice for event {}", n.event_id),
                Message::CameraStatus(s) => format!("status of camera {}", s.camera),
            };
            tracing::error!(
                dropped_total = n,
                "publisher queue full or closed; dropped {what}"
            );
        }
    }

    /// Messages dropped so far, for metrics.
    pub fn dropped_counter(&self) -> Arc<AtomicU64> {
        self.dropped.clone()
    }
}
