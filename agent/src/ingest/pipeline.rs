//! The GStreamer pipeline text for a camera source.
//!
//! Decoding is left to `decodebin`, which picks the best decoder the
//! registry has (hardware presets come later through the same place).
//! The sink asks for I420, the decoders' native output, so `videoconvert`
//! is a pass-through for almost every camera and frames are only converted
//! to BGR in Rust when they are due for analysis.

use crate::config::{CameraConfig, RtspTransport, Source};

pub const APPSINK_NAME: &str = "frames";
/// Jitter buffer for RTSP, in milliseconds: enough to reorder UDP packets,
/// small enough to keep events close to real time.
pub const RTSP_LATENCY_MS: u32 = 200;

pub fn pipeline_description(camera: &CameraConfig) -> String {
    let (source, live) = match &camera.source {
        Source::Rtsp(url) => {
            let protocols = match camera.rtsp_transport {
                // rtspsrc tries UDP first and moves to TCP when no UDP packet arrives.
                RtspTransport::Auto => "udp-mcast+udp+tcp",
                RtspTransport::Tcp => "tcp",
                RtspTransport::Udp => "udp",
            };
            (
                format!(
                    "rtspsrc location={} latency={RTSP_LATENCY_MS} protocols={protocols} ! decodebin",
                    quote(url)
                ),
                true,
            )
        }
        Source::File(path) => (
            format!(
                "filesrc location={} ! decodebin",
                quote(&path.display().to_string())
            ),
            false,
        ),
    };
    // A live source or a real-time file must not block on analysis: keep
    // only the newest frame. A file played as fast as possible must not
    // lose frames: let the sink push back on the decoder instead.
    let drop = live || camera.realtime;
    let sync = !live && camera.realtime;
    format!(
        "{source} ! videoconvert ! video/x-raw,format=I420 ! appsink name={APPSINK_NAME} \
         max-buffers=1 drop={drop} sync={sync} enable-last-sample=false"
    )
}

/// Quotes a value for `gst_parse_launch`.
fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn camera(source: &str, realtime: bool) -> CameraConfig {
        toml::from_str(&format!(
            "id = \"c\"\nsource = \"{source}\"\nrealtime = {realtime}"
        ))
        .unwrap()
    }

    #[test]
    fn rtsp_keeps_only_the_newest_frame() {
        let d = pipeline_description(&camera("rtsp://10.0.0.5/stream1", true));
        assert!(
            d.starts_with("rtspsrc location=\"rtsp://10.0.0.5/stream1\""),
            "{d}"
        );
        assert!(d.contains("drop=true sync=false"), "{d}");
    }

    #[test]
    fn fast_file_playback_loses_no_frame() {
        let d = pipeline_description(&camera("file:///clips/a b.mp4", false));
        assert!(d.starts_with("filesrc location=\"/clips/a b.mp4\""), "{d}");
        assert!(d.contains("drop=false sync=false"), "{d}");
    }

    #[test]
    fn pipelines_parse_in_gstreamer() {
        crate::ingest::init_gstreamer().unwrap();
        for (src, rt) in [
            ("rtsp://127.0.0.1:1/x", true),
            ("file:///nonexistent.mp4", true),
        ] {
            let d = pipeline_description(&camera(src, rt));
            gstreamer::parse::launch(&d).unwrap_or_else(|e| panic!("{d}: {e}"));
        }
    }
}
