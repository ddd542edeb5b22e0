//! Checks that serde cannot express. Each failure returns the dotted key
//! (`camera[2].location.lat`) and a sentence saying what is wrong and what
//! to write instead.

use std::collections::HashSet;

use super::*;

type Failure = (String, String);

pub(super) fn validate(c: &Config) -> Result<(), Failure> {
    check_id("site.id", &c.site.id)?;
    check_fps("analysis.fps", c.analysis.fps)?;
    check_detection_threshold("analysis.plate_threshold", c.analysis.plate_threshold)?;
    check_unit(
        "analysis.plate_read_threshold",
        c.analysis.plate_read_threshold,
    )?;
    check_unit(
        "analysis.plate_unreadable_threshold",
        c.analysis.plate_unreadable_threshold,
    )?;
    check_detection_threshold("analysis.face_threshold", c.analysis.face_threshold)?;
    // A track reported at its first readable frame is never read again:
    // the vote across frames, which makes reads right, would be off.
    if c.events.max_delay_seconds < 1.0 {
        return fail(
            "events.max_delay_seconds",
            format!(
                "{} would report each plate from its first frame, without the vote across frames; \
                 use at least 1 (seconds; default {})",
                c.events.max_delay_seconds, DEFAULT_MAX_DELAY_SECONDS
            ),
        );
    }
    for (key, v, max) in [
        (
            "events.max_delay_seconds",
            c.events.max_delay_seconds,
            3600.0,
        ),
        ("events.dedup_seconds", c.events.dedup_seconds, 86400.0),
        ("evidence.pre_seconds", c.evidence.pre_seconds, 60.0),
        ("evidence.post_seconds", c.evidence.post_seconds, 60.0),
        ("evidence.max_age_days", c.evidence.max_age_days, 36500.0),
    ] {
        if !(v.is_finite() && v >= 0.0 && v <= max) {
            return fail(
                key,
                format!("{v} is not a duration; use seconds between 0 and {max}"),
            );
        }
    }
    if c.evidence.max_mb == 0 {
        return fail(
            "evidence.max_mb",
            "0 would keep no evidence; use at least 1 (MiB), or `enabled = false`".into(),
        );
    }
    if c.storage.outbox_max_mb == 0 {
        return fail(
            "storage.outbox_max_mb",
            "0 would keep no undelivered event; use at least 1 (MiB)".into(),
        );
    }
    // Sizes become bytes: a number of MiB past a pebibyte would wrap.
    for (key, mb) in [
        ("evidence.max_mb", c.evidence.max_mb),
        ("storage.outbox_max_mb", c.storage.outbox_max_mb),
    ] {
        if mb > MAX_MB {
            return fail(
                key,
                format!("{mb} MiB is more than any disk; use at most {MAX_MB} (1 PiB)"),
            );
        }
    }
    let hours = c.storage.outbox_max_age_hours;
    if !(hours.is_finite() && hours > 0.0 && hours <= MAX_OUTBOX_HOURS) {
        return fail(
            "storage.outbox_max_age_hours",
            format!(
                "{hours} is not a duration; use hours above 0 and at most {MAX_OUTBOX_HOURS} (ten years)"
            ),
        );
    }
    if !c.health.metrics_listen.is_empty()
        && c.health
            .metrics_listen
            .parse::<std::net::SocketAddr>()
            .is_err()
    {
        return fail(
            "health.metrics_listen",
            format!(
                "`{}` is not an address; write 127.0.0.1:9464, or \"\" to turn metrics off",
                c.health.metrics_listen
            ),
        );
    }
    if c.models.threads == 0 || c.models.threads > 64 {
        return fail(
            "models.threads",
            format!("{} is not a thread count; use 1 to 64", c.models.threads),
        );
    }
    for (key, file) in [
        ("models.face_detector", &c.models.face_detector),
        ("models.plate_detector", &c.models.plate_detector),
        ("models.plate_reader", &c.models.plate_reader),
    ] {
        if !file.ends_with(".onnx") {
            return fail(
                key,
                format!("`{file}` is not an ONNX file name (it must end in .onnx)"),
            );
        }
    }

    if c.cameras.is_empty() {
        return fail(
            "camera",
            "no camera is configured; add a [[camera]] table with id and source".into(),
        );
    }
    let mut ids = HashSet::new();
    for (i, cam) in c.cameras.iter().enumerate() {
        // Keys count tables from 0; an installer counts them from 1 and
        // knows cameras by id, so both are named.
        let mut check = || -> Result<(), Failure> {
            let key = |k: &str| format!("camera[{i}].{k}");
            check_id(&key("id"), &cam.id)?;
            if !ids.insert(cam.id.as_str()) {
                return fail(
                    &key("id"),
                    format!(
                        "`{}` is used by an earlier camera; camera ids must be unique",
                        cam.id
                    ),
                );
            }
            if let Some(fps) = cam.analysis_fps {
                check_fps(&key("analysis_fps"), fps)?;
            }
            if let Some(s) = cam.stall_seconds
                && !(s.is_finite() && (1.0..=600.0).contains(&s))
            {
                return fail(
                    &key("stall_seconds"),
                    format!("{s} is not a stall timeout; use 1 to 600 seconds"),
                );
            }
            if let Some(loc) = &cam.location {
                if !(-90.0..=90.0).contains(&loc.lat) {
                    return fail(
                        &key("location.lat"),
                        format!(
                            "{} is not a latitude; it must be between -90 and 90",
                            loc.lat
                        ),
                    );
                }
                if !(-180.0..=180.0).contains(&loc.lon) {
                    return fail(
                        &key("location.lon"),
                        format!(
                            "{} is not a longitude; it must be between -180 and 180",
                            loc.lon
                        ),
                    );
                }
            }
            if cam.detect.is_empty() {
                return fail(&key("detect"), "is empty, so the camera would analyse nothing; use [\"plates\"], [\"faces\"] or both".into());
            }
            if matches!(cam.source, Source::Rtsp(_)) && cam.loop_file {
                return fail(
                    &key("loop"),
                    "applies to file:// sources only; remove it for an RTSP camera".into(),
                );
            }
            Ok(())
        };
        check().map_err(|(key, message)| {
            (
                key,
                format!(
                    "{message} (camera `{}`, the [[camera]] table number {})",
                    cam.id,
                    i + 1
                ),
            )
        })?;
    }

    if c.outputs.mqtt.is_none() && c.outputs.jsonl.is_none() {
        return fail("outputs", "no output is configured; add [outputs.mqtt] with a url, or [outputs.jsonl] with path = \"-\"".into());
    }
    if let Some(m) = &c.outputs.mqtt {
        crate::publish::mqtt::BrokerAddress::parse(&m.url)
            .map_err(|e| ("outputs.mqtt.url".to_string(), e))?;
        let tls = crate::publish::mqtt::BrokerAddress::parse(&m.url).is_ok_and(|a| a.tls);
        for (key, set) in [
            ("outputs.mqtt.ca_file", m.ca_file.is_some()),
            (
                "outputs.mqtt.client_cert_file",
                m.client_cert_file.is_some(),
            ),
        ] {
            if set && !tls {
                return fail(
                    key,
                    "TLS settings need an mqtts:// url; the connection would be plain TCP".into(),
                );
            }
        }
        if m.client_cert_file.is_some() != m.client_key_file.is_some() {
            return fail(
                "outputs.mqtt.client_key_file",
                "mutual TLS needs both client_cert_file and client_key_file".into(),
            );
        }
        if m.client_cert_file.is_some() && m.ca_file.is_none() {
            return fail(
                "outputs.mqtt.ca_file",
                "mutual TLS needs the CA file that signed the broker's certificate as well".into(),
            );
        }
        if let Some(id) = &m.client_id {
            check_client_id(id)?;
        }
        if m.password_file.is_some() && m.password_env.is_some() {
            return fail(
                "outputs.mqtt.password_env",
                "give the password in one place: password_file or password_env, not both".into(),
            );
        }
        if (m.password_file.is_some() || m.password_env.is_some()) && m.username.is_none() {
            return fail(
                "outputs.mqtt.username",
                "a password is configured but no username".into(),
            );
        }
        // Delivery rests on the broker's PUBACK: at QoS 0 a record would
        // leave the outbox unacknowledged, lost with the connection; at
        // QoS 2 a broker may still hold a packet id of the connection
        // before and drop the new message that reuses it.
        if m.qos != 1 {
            return fail(
                "outputs.mqtt.qos",
                format!(
                    "{} is not supported: events are delivered at least once, which needs the broker's \
                     acknowledgement of each; write qos = 1 (events carry ids, so a consumer can drop a repeat)",
                    m.qos
                ),
            );
        }
        // Brokers keep `$` topics for themselves, and a leading `/` is a
        // topic tree of its own that the IOC's subscriptions would miss.
        if m.topic_prefix.is_empty()
            || m.topic_prefix.contains(['+', '#'])
            || m.topic_prefix.starts_with(['$', '/'])
            || m.topic_prefix.ends_with('/')
        {
            return fail(
                "outputs.mqtt.topic_prefix",
                format!(
                    "`{}` is not a topic prefix: it must be non-empty, without + or #, and start and end \
                     with neither / nor $ (default `matthan/v1`)",
                    m.topic_prefix
                ),
            );
        }
    }
    if let Some(JsonLinesOutput {
        path: JsonLinesTarget::File(file),
    }) = &c.outputs.jsonl
        && (file.as_os_str().is_empty() || file.as_os_str().to_string_lossy().ends_with('/'))
    {
        return fail(
            "outputs.jsonl.path",
            format!(
                "`{}` names no file; write a file's path, or \"-\" for standard output",
                file.display()
            ),
        );
    }
    Ok(())
}

/// The broker tells clients apart by this id: an empty one cannot keep
/// the session that carries the evidence acknowledgements, and a second
/// gateway with the same id would throw this one off the broker.
fn check_client_id(id: &str) -> Result<(), Failure> {
    const MAX: usize = 128;
    if id.is_empty() || id.len() > MAX || id.trim() != id || id.chars().any(char::is_control) {
        return fail(
            "outputs.mqtt.client_id",
            format!(
                "`{id}` is not a client id: it must be 1 to {MAX} characters, without spaces at \
                 either end; leave it out for matthan-<site id>"
            ),
        );
    }
    Ok(())
}

fn fail(key: &str, message: String) -> Result<(), Failure> {
    Err((key.to_string(), message))
}

/// Ids become MQTT topic levels and file names, so they are kept to a
/// safe alphabet.
fn check_id(key: &str, id: &str) -> Result<(), Failure> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        fail(
            key,
            format!("`{id}` is not a valid id: use 1 to 64 ASCII letters, digits, - or _"),
        )
    }
}

const MAX_MB: u64 = 1 << 30;
const MAX_OUTBOX_HOURS: f64 = 87_600.0;

/// The slowest analysis rate: one frame every 100 seconds.
const MIN_FPS: f64 = 0.01;

fn check_fps(key: &str, fps: f64) -> Result<(), Failure> {
    if fps.is_finite() && (MIN_FPS..=60.0).contains(&fps) {
        Ok(())
    } else {
        fail(
            key,
            format!(
                "{fps} is not an analysis rate; use frames per second between {MIN_FPS} and 60, e.g. 2"
            ),
        )
    }
}

/// Below this a detector's score says nothing: every patch of noise
/// becomes a detection, and one frame takes seconds to analyse.
const MIN_DETECTION_THRESHOLD: f32 = 0.05;

fn check_detection_threshold(key: &str, v: f32) -> Result<(), Failure> {
    check_unit(key, v)?;
    if v < MIN_DETECTION_THRESHOLD {
        return fail(
            key,
            format!(
                "{v} would report every patch of noise as a detection and slow analysis to seconds a frame; use at least {MIN_DETECTION_THRESHOLD} (the default is right for most cameras)"
            ),
        );
    }
    Ok(())
}

fn check_unit(key: &str, v: f32) -> Result<(), Failure> {
    if (0.0..=1.0).contains(&v) {
        Ok(())
    } else {
        fail(
            key,
            format!("{v} is not a threshold; it must be between 0 and 1"),
        )
    }
}
