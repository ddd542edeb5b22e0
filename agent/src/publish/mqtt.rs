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

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rumqttc::{AsyncClient, LastWill, MqttOptions, QoS, Transport};
use serde_json::json;

use crate::config::MqttOutput;
use crate::ingest::{CameraStatus, StatusReport};

pub const KEEP_ALIVE: Duration = Duration::from_secs(15);
pub const RECONNECT_MIN: Duration = Duration::from_millis(500);
pub const RECONNECT_MAX: Duration = Duration::from_secs(30);
/// How long shutdown waits for the broker to acknowledge what was sent.
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, PartialEq)]
pub struct BrokerAddress {
    pub host: String,
    pub port: u16,
    pub tls: bool,
}

impl BrokerAddress {
    pub fn parse(url: &str) -> Result<BrokerAddress, String> {
        let u = url::Url::parse(url).map_err(|e| {
            format!(
                "`{url}` is not a broker URL ({e}); write mqtt://host:1883 or mqtts://host:8883"
            )
        })?;
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
            .ok_or_else(|| format!("`{url}` names no host"))?;
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

pub struct MqttSink {
    client: AsyncClient,
    prefix: String,
    site: String,
    qos: QoS,
    sent: Arc<AtomicU64>,
    acked: Arc<AtomicU64>,
    eventloop: tokio::task::JoinHandle<()>,
}

fn qos(level: u8) -> QoS {
    match level {
        0 => QoS::AtMostOnce,
        2 => QoS::ExactlyOnce,
        _ => QoS::AtLeastOnce,
    }
}

impl MqttSink {
    pub fn connect(config: &MqttOutput, site: &str) -> anyhow::Result<Self> {
        let addr = BrokerAddress::parse(&config.url)
            .map_err(|e| anyhow::anyhow!("outputs.mqtt.url: {e}"))?;
        let client_id = config
            .client_id
            .clone()
            .unwrap_or_else(|| format!("matthan-{site}"));
        let prefix = config.topic_prefix.clone();
        let status_topic = format!("{prefix}/{site}/status");
        let mut options = MqttOptions::new(client_id, addr.host.clone(), addr.port);
        options.set_keep_alive(KEEP_ALIVE);
        options.set_last_will(LastWill::new(
            &status_topic,
            json!({"state": "offline", "reason": "connection lost"}).to_string(),
            QoS::AtLeastOnce,
            true,
        ));
        if addr.tls {
            options.set_transport(Transport::tls_with_default_config());
        }
        let (client, mut eventloop) = AsyncClient::new(options, 256);
        let acked = Arc::new(AtomicU64::new(0));
        let online_client = client.clone();
        let acked_by_loop = acked.clone();
        let sent = Arc::new(AtomicU64::new(0));
        let sent_by_loop = sent.clone();
        let broker = format!("{}:{}", addr.host, addr.port);
        let eventloop = tokio::spawn(async move {
            let mut backoff = RECONNECT_MIN;
            loop {
                match eventloop.poll().await {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => {
                        tracing::info!(broker = %broker, "connected to MQTT broker");
                        backoff = RECONNECT_MIN;
                        let online =
                            json!({"state": "online", "version": env!("CARGO_PKG_VERSION")})
                                .to_string();
                        if online_client
                            .try_publish(&status_topic, QoS::AtLeastOnce, true, online)
                            .is_ok()
                        {
                            sent_by_loop.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Ok(rumqttc::Event::Incoming(
                        rumqttc::Packet::PubAck(_) | rumqttc::Packet::PubComp(_),
                    )) => {
                        acked_by_loop.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(rumqttc::Event::Outgoing(rumqttc::Outgoing::Disconnect)) => break,
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(broker = %broker, retry_in_ms = backoff.as_millis() as u64, "MQTT connection failed: {e}");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(RECONNECT_MAX);
                    }
                }
            }
        });
        Ok(Self {
            client,
            prefix,
            site: site.to_string(),
            qos: qos(config.qos),
            sent,
            acked,
            eventloop,
        })
    }

    pub async fn publish_event(&self, topic_suffix: &str, payload: Vec<u8>) {
        let topic = format!("{}/{}/{}", self.prefix, self.site, topic_suffix);
        self.publish(topic, self.qos, false, payload).await;
    }

    pub async fn publish_camera_status(&self, report: &StatusReport) {
        let mut body = json!({
            "state": report.status.name(),
            "time": crate::event::utc_millis(report.at).format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
        });
        if let CameraStatus::Reconnecting { reason, retry_in } = &report.status {
            body["reason"] = json!(reason);
            body["retry_in_s"] = json!(retry_in.as_secs_f64());
        }
        let topic = format!("{}/{}/{}/status", self.prefix, self.site, report.camera);
        self.publish(topic, QoS::AtLeastOnce, true, body.to_string().into_bytes())
            .await;
    }

    async fn publish(&self, topic: String, qos: QoS, retain: bool, payload: Vec<u8>) {
        match self.client.publish(&topic, qos, retain, payload).await {
            Ok(()) if qos != QoS::AtMostOnce => {
                self.sent.fetch_add(1, Ordering::Relaxed);
            }
            Ok(()) => {}
            Err(e) => tracing::error!(topic = %topic, "cannot queue MQTT publish: {e}"),
        }
    }

    /// Says goodbye properly: a retained "offline" (the last will only
    /// fires on an unclean exit), then waits for outstanding acknowledgements.
    pub async fn close(self) {
        let status = format!("{}/{}/status", self.prefix, self.site);
        let offline = json!({"state": "offline", "reason": "shutdown"}).to_string();
        self.publish(status, QoS::AtLeastOnce, true, offline.into_bytes())
            .await;
        let deadline = tokio::time::Instant::now() + FLUSH_TIMEOUT;
        loop {
            let (sent, acked) = (
                self.sent.load(Ordering::Relaxed),
                self.acked.load(Ordering::Relaxed),
            );
            if acked >= sent {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                tracing::warn!(
                    unacknowledged = sent - acked,
                    "broker did not acknowledge every message before shutdown"
                );
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = self.client.disconnect().await;
        let _ = tokio::time::timeout(Duration::from_secs(1), self.eventloop).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
