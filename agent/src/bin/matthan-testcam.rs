//! A test camera: an RTSP server (gst-rtsp-server) that serves real clips
//! the way an IP camera would, for the end-to-end tests, the demo and the
//! benchmarks.
//!
//! H.264 MP4 files are served as they are (demux, parse, payload: no
//! re-encode, so the bytes on the wire are the file's own); anything else
//! is decoded and encoded to H.264 first.

use std::path::PathBuf;

use anyhow::{Context, anyhow};
use clap::Parser;
use gstreamer as gst;
use gstreamer::glib;
use gstreamer_rtsp_server as rtsp;
use gstreamer_rtsp_server::prelude::*;

#[derive(Parser)]
#[command(
    name = "matthan-testcam",
    version,
    about = "RTSP test camera serving video files"
)]
struct Args {
    /// Address to listen on. Keep it on loopback for tests.
    #[arg(long, default_value = "127.0.0.1")]
    address: String,
    #[arg(long, default_value_t = 8554)]
    port: u16,
    /// `/path=FILE`: serve FILE at rtsp://ADDRESS:PORT/path. Repeatable.
    #[arg(long = "mount", required = true, value_parser = parse_mount)]
    mounts: Vec<(String, PathBuf)>,
    /// Decode and re-encode to H.264 even when the file is H.264 already.
    #[arg(long)]
    reencode: bool,
    /// Also send an audio track (G.711 A-law test tone), listed before the
    /// video as many IP cameras with a microphone list it.
    #[arg(long)]
    with_audio: bool,
    /// `/path=SECONDS`: the stream at that mount starts this far into its
    /// MP4 file (from the keyframe there), so that cameras serving the same
    /// clip are not all in the same scene at once. Repeatable.
    #[arg(long = "start", value_parser = parse_start)]
    starts: Vec<(String, f64)>,
}

fn parse_start(s: &str) -> Result<(String, f64), String> {
    let (path, seconds) = mount_and(s, "SECONDS")?;
    match seconds.parse::<f64>() {
        Ok(v) if v >= 0.0 && v.is_finite() => Ok((path.to_string(), v)),
        _ => Err(format!("`{seconds}` is not a number of seconds")),
    }
}

/// Starts the stream `offset` into the file: the parsed video's buffers
/// before the first keyframe at or after it are dropped, and the rest
/// shifted back by that keyframe's decode time, so the server paces them
/// from the start at once (a seek would need the media prepared first).
fn start_at(media: &rtsp::RTSPMedia, offset: gst::ClockTime) {
    let Some(parse) = media
        .element()
        .downcast::<gst::Bin>()
        .ok()
        .and_then(|bin| bin.by_name("parse"))
    else {
        return;
    };
    let Some(pad) = parse.static_pad("src") else {
        return;
    };
    // The probe runs on the streaming thread only; the mutex is for the type.
    let shift = std::sync::Mutex::new(None::<gst::ClockTime>);
    pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
        let Some(buffer) = info.buffer_mut() else {
            return gst::PadProbeReturn::Ok;
        };
        let mut shift = shift.lock().unwrap_or_else(|e| e.into_inner());
        if shift.is_none() {
            let keyframe = !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT);
            match (buffer.pts(), buffer.dts()) {
                (Some(pts), dts) if keyframe && pts >= offset => *shift = Some(dts.unwrap_or(pts)),
                _ => return gst::PadProbeReturn::Drop,
            }
        }
        let by = shift.expect("set above");
        let buffer = buffer.make_mut();
        buffer.set_pts(buffer.pts().map(|t| t.saturating_sub(by)));
        buffer.set_dts(buffer.dts().map(|t| t.saturating_sub(by)));
        gst::PadProbeReturn::Ok
    });
}

fn parse_mount(s: &str) -> Result<(String, PathBuf), String> {
    let (path, file) = mount_and(s, "FILE")?;
    Ok((path, PathBuf::from(file)))
}

/// Splits `/path=VALUE`; `value` names VALUE in the error.
fn mount_and<'a>(s: &'a str, value: &str) -> Result<(String, &'a str), String> {
    let (path, rest) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}` is not /path={value}"))?;
    if !path.starts_with('/') {
        return Err(format!("mount path `{path}` must start with /"));
    }
    Ok((path.to_string(), rest))
}

fn launch_line(file: &std::path::Path, reencode: bool, with_audio: bool) -> String {
    let location = format!("\"{}\"", file.display().to_string().replace('"', "\\\""));
    let is_mp4 = file
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("mp4"));
    // Payloaders are numbered in the order the stream description lists them.
    let (audio, video_pay) = if with_audio {
        (
            "audiotestsrc is-live=true ! audio/x-raw,rate=8000,channels=1 ! alawenc ! rtppcmapay name=pay0 pt=8 ",
            "pay1",
        )
    } else {
        ("", "pay0")
    };
    if is_mp4 && !reencode {
        format!(
            "( {audio}filesrc location={location} ! qtdemux ! h264parse name=parse config-interval=-1 ! rtph264pay name={video_pay} pt=96 )"
        )
    } else {
        // x264enc would pick 4:4:4 10-bit for some inputs; I420 keeps it decodable everywhere.
        format!(
            "( {audio}filesrc location={location} ! decodebin ! videoconvert ! video/x-raw,format=I420 ! \
             x264enc tune=zerolatency speed-preset=ultrafast key-int-max=25 ! h264parse name=parse ! rtph264pay name={video_pay} pt=96 )"
        )
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    gst::init().context("cannot initialise GStreamer")?;
    let server = rtsp::RTSPServer::new();
    server.set_address(&args.address);
    server.set_service(&args.port.to_string());
    let mounts = server
        .mount_points()
        .ok_or_else(|| anyhow!("RTSP server has no mount points"))?;
    if let Some((path, _)) = args
        .starts
        .iter()
        .find(|(p, _)| !args.mounts.iter().any(|(m, _)| m == p))
    {
        return Err(anyhow!("--start {path}: no --mount serves {path}"));
    }
    for (path, file) in &args.mounts {
        if !file.is_file() {
            return Err(anyhow!("{} does not exist", file.display()));
        }
        let factory = rtsp::RTSPMediaFactory::new();
        factory.set_launch(&launch_line(file, args.reencode, args.with_audio));
        // Each client gets its own pipeline from the start of the file, as a
        // camera restarted by a reconnect would.
        factory.set_shared(false);
        if let Some((_, seconds)) = args.starts.iter().find(|(p, _)| p == path) {
            let offset = gst::ClockTime::from_nseconds((seconds * 1e9) as u64);
            factory.connect_media_configure(move |_, media| start_at(media, offset));
        }
        mounts.add_factory(path, factory);
        eprintln!(
            "serving {} at rtsp://{}:{}{}",
            file.display(),
            args.address,
            args.port,
            path
        );
    }
    let _source = server
        .attach(None)
        .with_context(|| format!("cannot listen on {}:{}", args.address, args.port))?;
    glib::MainLoop::new(None, false).run();
    Ok(())
}
