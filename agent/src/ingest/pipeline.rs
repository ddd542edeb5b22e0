//! The GStreamer pipeline text for a camera source.
//!
//! ```text
//! source ─► parsebin ─► tee ─► queue ─► decodebin ─► videoconvert ─► I420 appsink "frames"
//!                          └─► queue ─► appsink "encoded" (evidence only)
//! ```
//! `parsebin` depayloads or demuxes and parses the video into whole access
//! units; the `tee` after it gives the evidence buffer the camera's own
//! encoded video, so clips need no re-encoding. Decoding is left to
//! `decodebin`, which picks the best decoder the registry has (the
//! decoder presets rank them). The frame sink asks for I420, the software
//! decoder's native output, so `videoconvert` is a pass-through there
//! (hardware decoders give NV12, which it converts; Jetson's give NVIDIA
//! memory, which only its own `nvvidconv` reads, see
//! [`super::decoder::converter`]), and frames are only converted to BGR in
//! Rust when they are due for analysis.

use crate::config::{CameraConfig, RtspTransport, Source};

pub const APPSINK_NAME: &str = "frames";
pub const ENCODED_SINK_NAME: &str = "encoded";
const PARSER_NAME: &str = "parse";
/// The video codecs the agent takes: what traffic and security cameras send.
const VIDEO_CODECS: &str = "video/x-h264;video/x-h265;image/jpeg";
/// What MP4 can hold without re-encoding: length-prefixed H.264 and H.265
/// in whole access units, or JPEG frames.
const ENCODED_CAPS: &str = "video/x-h264,stream-format=avc,alignment=au;\
video/x-h265,stream-format=hvc1,alignment=au;image/jpeg";
/// Jitter buffer for RTSP, in milliseconds: enough to reorder UDP packets,
/// small enough to keep events close to real time.
pub const RTSP_LATENCY_MS: u32 = 200;
/// How long rtspsrc waits for a camera's answer: well inside the wait for
/// the first frame (20 s), so that a camera that never answers is reported
/// as such every time, not as "stalled" on some attempts and "timeout" on
/// others (which also defeats the one warning per reason).
pub const RTSP_TCP_TIMEOUT_US: u64 = 10_000_000;
/// Decoded frames a live camera's sink holds while the analysis is busy:
/// about 160 ms of 25 fps video, the time one frame's analysis takes on a
/// loaded gateway.
const FRAMES_HELD_LIVE: u32 = 4;

/// The pipeline for one camera; `encoded` adds the branch that hands the
/// still-encoded access units to the evidence buffer.
pub fn pipeline_description(camera: &CameraConfig, encoded: bool) -> String {
    let (source, live) = match &camera.source {
        Source::Rtsp(url) => {
            let protocols = match camera.rtsp_transport {
                // rtspsrc tries UDP first and moves to TCP when no UDP packet arrives.
                RtspTransport::Auto => "udp-mcast+udp+tcp",
                RtspTransport::Tcp => "tcp",
                RtspTransport::Udp => "udp",
            };
            // Only the video track: a camera that also sends its microphone
            // would otherwise have whichever track's packets come first linked.
            (
                format!(
                    "rtspsrc location={} latency={RTSP_LATENCY_MS} protocols={protocols} \
                     tcp-timeout={RTSP_TCP_TIMEOUT_US} ! application/x-rtp,media=video",
                    quote(url)
                ),
                true,
            )
        }
        Source::File(path) => (
            format!("filesrc location={}", quote(&path.display().to_string())),
            false,
        ),
    };
    // A live source or a real-time file must not block on analysis: keep
    // only the newest few frames, those that arrive while one is analysed.
    // Not just the newest: the decoder skips pictures on the assurance that
    // an earlier one in the same slot reaches the analysis (see `skip`).
    // A file played as fast as possible must not lose frames: let the sink
    // push back on the decoder instead.
    let drop = live || camera.realtime;
    let sync = !live && camera.realtime;
    let held = if drop { FRAMES_HELD_LIVE } else { 1 };
    let convert = super::decoder::chosen_converter();
    let frames = format!(
        "decodebin ! {convert} ! video/x-raw,format=I420 ! appsink name={APPSINK_NAME} \
         max-buffers={held} drop={drop} sync={sync} enable-last-sample=false"
    );
    if !encoded {
        return format!("{source} ! {frames}");
    }
    // Only the codecs MP4 holds without re-encoding reach the tee; the
    // encoded branch never blocks it (its callback only appends to a buffer).
    format!(
        "{source} ! parsebin name={PARSER_NAME} ! capsfilter caps=\"{VIDEO_CODECS}\" ! tee name=split \
         split. ! queue ! {frames} \
         split. ! queue ! capsfilter caps=\"{ENCODED_CAPS}\" ! appsink name={ENCODED_SINK_NAME} \
         sync=false emit-signals=false enable-last-sample=false"
    )
}

/// A camera sending another codec (MPEG-4 Part 2, H.263: older cameras and
/// encoders offer them) would fail with "not-linked" from its source, a
/// message that names neither the codec nor the fix; the parser's new
/// stream is checked instead, and refused with both.
pub fn refuse_other_codecs(pipeline: &gstreamer::Pipeline) {
    use gstreamer as gst;
    use gstreamer::prelude::*;
    let Some(parser) = pipeline.by_name(PARSER_NAME) else {
        return;
    };
    let wanted: gst::Caps = VIDEO_CODECS.parse().expect("valid caps");
    parser.connect_pad_added(move |parser, pad| {
        let caps = pad.current_caps().unwrap_or_else(|| pad.query_caps(None));
        let Some(stream) = caps.structure(0) else {
            return;
        };
        // A file's sound track is left unlinked, as it always was.
        let picture = stream.name().starts_with("video/") || stream.name().starts_with("image/");
        if !picture || caps.can_intersect(&wanted) {
            return;
        }
        let codec = stream.to_string();
        gst::element_error!(
            parser,
            gst::StreamError::CodecNotFound,
            ("the camera sends {codec}, which the agent cannot keep as evidence: set the \
                 camera's encoder to H.264, H.265 or MJPEG (or turn evidence.enabled off)")
        );
    });
}

/// Quotes a value for `gst_parse_launch`.
pub(super) fn quote(s: &str) -> String {
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
        let d = pipeline_description(&camera("rtsp://10.0.0.5/stream1", true), false);
        assert!(
            d.starts_with("rtspsrc location=\"rtsp://10.0.0.5/stream1\""),
            "{d}"
        );
        assert!(d.contains("max-buffers=4 drop=true sync=false"), "{d}");
        assert!(d.contains("! application/x-rtp,media=video !"), "{d}");
    }

    #[test]
    fn fast_file_playback_loses_no_frame() {
        let d = pipeline_description(&camera("file:///clips/a b.mp4", false), false);
        assert!(d.starts_with("filesrc location=\"/clips/a b.mp4\""), "{d}");
        assert!(d.contains("max-buffers=1 drop=false sync=false"), "{d}");
    }

    #[test]
    fn pipelines_parse_in_gstreamer() {
        crate::ingest::init_gstreamer().unwrap();
        for (src, rt) in [
            ("rtsp://127.0.0.1:1/x", true),
            ("file:///nonexistent.mp4", true),
        ] {
            for encoded in [false, true] {
                let d = pipeline_description(&camera(src, rt), encoded);
                gstreamer::parse::launch(&d).unwrap_or_else(|e| panic!("{d}: {e}"));
            }
        }
    }
}
