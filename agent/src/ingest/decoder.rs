//! Which video decoder the gateway uses: the board's hardware decoder when
//! it has one, software otherwise.
//!
//! Pipelines keep `decodebin`, which finds the right depayloader, parser
//! and decoder for whatever codec a camera sends. The choice of decoder is
//! made the GStreamer way, by element rank: the chosen preset's elements
//! are raised above every other decoder in the registry, once, at start-up.
//! A preset whose elements this machine lacks, or whose decoder cannot open
//! its device, falls back to software with a warning; it never fails a
//! camera.

use std::sync::Mutex;

use gstreamer as gst;
use gstreamer::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DecoderPreset {
    /// The first preset, in the order below, whose H.264 decoder exists.
    #[default]
    Auto,
    /// NVIDIA Jetson (nvv4l2decoder).
    Jetson,
    /// Rockchip RK3588 and kin (mppvideodec).
    Rockchip,
    /// Intel/AMD through VA-API (vah264dec, vah265dec).
    Vaapi,
    /// Raspberry Pi 4 (v4l2h264dec; the Pi 5 has no H.264 block and uses software).
    Raspberrypi,
    /// FFmpeg's decoders (avdec_h264, avdec_h265).
    Software,
}

/// Decoder elements per preset: H.264 first, then H.265.
pub fn elements(preset: DecoderPreset) -> &'static [&'static str] {
    match preset {
        DecoderPreset::Jetson => &["nvv4l2decoder"],
        DecoderPreset::Rockchip => &["mppvideodec"],
        DecoderPreset::Vaapi => &["vah264dec", "vah265dec"],
        DecoderPreset::Raspberrypi => &["v4l2h264dec", "v4l2h265dec"],
        DecoderPreset::Software | DecoderPreset::Auto => &["avdec_h264", "avdec_h265"],
    }
}

/// The element that turns the preset's decoded pictures into I420 in
/// system memory. Jetson's decoder outputs only NVIDIA (NVMM) memory,
/// which `videoconvert` cannot read; `nvvidconv` reads both that and
/// system memory (a camera that a software decoder took).
pub fn converter(preset: DecoderPreset) -> &'static str {
    match preset {
        DecoderPreset::Jetson => "nvvidconv",
        _ => "videoconvert",
    }
}

/// The converter of the preset [`apply`] chose, read by every pipeline
/// built after it.
static CONVERTER: Mutex<&str> = Mutex::new("videoconvert");

/// The converter the pipelines use under the preset [`apply`] chose.
pub fn chosen_converter() -> &'static str {
    *CONVERTER.lock().unwrap_or_else(|e| e.into_inner())
}

const AUTO_ORDER: [DecoderPreset; 5] = [
    DecoderPreset::Jetson,
    DecoderPreset::Rockchip,
    DecoderPreset::Vaapi,
    DecoderPreset::Raspberrypi,
    DecoderPreset::Software,
];

fn available(name: &str) -> bool {
    gst::ElementFactory::find(name).is_some()
}

/// Why this machine cannot use the preset, if it cannot: an element
/// missing, or a decoder that cannot open its device. Some hardware
/// decoders register whether or not the device is there (a Rockchip
/// image on another board, a container without /dev passed in); taken at
/// their word, every camera would fail at its stream's start instead.
fn unusable(preset: DecoderPreset) -> Option<String> {
    let missing = [elements(preset)[0], converter(preset)]
        .into_iter()
        .filter(|e| !available(e))
        .collect::<Vec<_>>();
    if !missing.is_empty() {
        return Some(format!(
            "needs the GStreamer element {}, which this machine does not have",
            missing.join(" and ")
        ));
    }
    let decoder = elements(preset)[0];
    gst::ElementFactory::make(decoder)
        .build()
        .map_err(|e| e.to_string())
        .and_then(|element| opens(&element))
        .err()
        .map(|why| format!("cannot open its decoder {decoder} here ({why})"))
}

/// Whether `element` gets to PAUSED: V4L2 and VA elements open their
/// device on the way to READY, Rockchip's MPP decoder only when it starts,
/// on the way to PAUSED. It is left in NULL either way.
fn opens(element: &gst::Element) -> Result<(), String> {
    // Outside a pipeline an element has no bus for its error message.
    let bus = element.bus().unwrap_or_else(|| {
        let bus = gst::Bus::new();
        element.set_bus(Some(&bus));
        bus
    });
    let result = element.set_state(gst::State::Paused);
    let _ = element.set_state(gst::State::Null);
    result.map(|_| ()).map_err(|_| {
        // Described as a camera's errors are: the debug text's last line
        // names the device or file.
        super::error_within(&bus, gst::ClockTime::ZERO)
            .unwrap_or_else(|| "it refused to start".into())
    })
}

/// Resolves a preset against this machine: `Auto` becomes the first
/// preset this machine can use; a preset it cannot use becomes `Software`.
/// Returns the preset used and, when it is not the one asked for, why.
pub fn resolve(wanted: DecoderPreset) -> (DecoderPreset, Option<String>) {
    match wanted {
        DecoderPreset::Auto => {
            let chosen = AUTO_ORDER
                .into_iter()
                .find(|p| unusable(*p).is_none())
                .unwrap_or(DecoderPreset::Software);
            (chosen, None)
        }
        p => match unusable(p) {
            None => (p, None),
            Some(why) => (
                DecoderPreset::Software,
                Some(format!(
                    "decoder preset {p:?} {why}; using software decoding"
                )),
            ),
        },
    }
}

/// Gives a software decoder one thread. Cameras decode in parallel with
/// each other, and libav's frame threads would each hold their own set of
/// 1080p frames (about 20 MB apiece) for no gain in throughput.
pub fn one_thread(element: &gst::Element) {
    if element
        .factory()
        .is_some_and(|f| f.name().starts_with("avdec_"))
        && element.has_property("max-threads")
    {
        element.set_property("max-threads", 1i32);
    }
}

/// Applies the preset: its decoders outrank every other decoder, so
/// `decodebin` picks them for the codecs they handle. Call once, after
/// GStreamer is initialised and before pipelines are built.
pub fn apply(wanted: DecoderPreset) -> DecoderPreset {
    let (chosen, warning) = resolve(wanted);
    if let Some(w) = warning {
        tracing::warn!("{w}");
    }
    *CONVERTER.lock().unwrap_or_else(|e| e.into_inner()) = converter(chosen);
    let top = gst::Rank::PRIMARY + 100;
    for name in elements(chosen).iter().filter(|n| available(n)) {
        if let Some(f) = gst::ElementFactory::find(name) {
            f.set_rank(top);
        }
    }
    tracing::info!(preset = ?chosen, elements = ?elements(chosen), "video decoder chosen");
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selection_against_this_machines_registry() {
        crate::ingest::init_gstreamer().unwrap();
        // Software decoding is always there (gstreamer1.0-libav).
        assert_eq!(
            resolve(DecoderPreset::Software),
            (DecoderPreset::Software, None)
        );
        // Auto picks a preset whose decoder exists here.
        let (auto, warning) = resolve(DecoderPreset::Auto);
        assert!(warning.is_none());
        assert!(available(elements(auto)[0]), "{auto:?}");
        // Every hardware preset either exists here or falls back to software, with a reason.
        for p in [
            DecoderPreset::Jetson,
            DecoderPreset::Rockchip,
            DecoderPreset::Vaapi,
            DecoderPreset::Raspberrypi,
        ] {
            match resolve(p) {
                (chosen, None) => assert_eq!(chosen, p),
                (chosen, Some(why)) => {
                    assert_eq!(chosen, DecoderPreset::Software);
                    assert!(unusable(p).is_some(), "{p:?}");
                    assert!(why.contains(elements(p)[0]), "{why}");
                }
            }
        }
    }

    #[test]
    fn an_element_that_cannot_open_its_device_or_start_is_not_taken_at_its_word() {
        crate::ingest::init_gstreamer().unwrap();
        // v4l2src opens its device at READY, as the V4L2 and VA decoders do.
        let absent = gst::ElementFactory::make("v4l2src")
            .property("device", "/dev/video-matthan-absent")
            .build()
            .unwrap();
        let why = opens(&absent).unwrap_err();
        assert!(why.contains("video-matthan-absent"), "{why}");
        assert_eq!(absent.current_state(), gst::State::Null);
        // filesrc, as the MPP decoder does, opens only when it starts.
        let starts_late = gst::ElementFactory::make("filesrc")
            .property("location", "/nonexistent/matthan-absent.h264")
            .build()
            .unwrap();
        let why = opens(&starts_late).unwrap_err();
        assert!(why.contains("matthan-absent.h264"), "{why}");
        let software = gst::ElementFactory::make("avdec_h264").build().unwrap();
        assert_eq!(opens(&software), Ok(()));
        assert_eq!(unusable(DecoderPreset::Software), None);
    }

    #[test]
    fn the_chosen_decoder_outranks_every_other_video_decoder() {
        crate::ingest::init_gstreamer().unwrap();
        let chosen = apply(DecoderPreset::Software);
        assert_eq!(chosen, DecoderPreset::Software);
        let rank = gst::ElementFactory::find("avdec_h264").unwrap().rank();
        for f in gst::ElementFactory::factories_with_type(
            gst::ElementFactoryType::DECODER | gst::ElementFactoryType::MEDIA_VIDEO,
            gst::Rank::NONE,
        ) {
            if f.name() != "avdec_h264" && f.name() != "avdec_h265" {
                assert!(f.rank() < rank, "{} outranks the chosen decoder", f.name());
            }
        }
    }
}
