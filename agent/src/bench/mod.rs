//! `matthan bench`: what this machine can do, measured, never asserted.
//!
//! - `--limits`: the two unavoidable costs on one core, decoding and the
//!   models ([`limits`]).
//! - `--streams N`: N real-time RTSP cameras through the real agent to a
//!   real broker ([`streams`]).
//! - `--max-streams`: the largest N that holds the analysis rate with
//!   p99 frame-to-event latency under 300 ms, against the limit the two
//!   costs allow: `cores / (25 / decode_fps + F / infer_fps)`.

pub mod limits;
pub mod streams;

pub use limits::on_one_core;

use serde_json::json;

/// Input frame rate the limit formula assumes (the benchmark clip's).
pub const INPUT_FPS: f64 = 25.0;

/// A figure as printed: to `decimals` places, what the measurement can tell.
pub fn round_to(v: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (v * scale).round() / scale
}

pub fn limit_streams(l: &limits::Limits, analysis_fps: f64) -> f64 {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    cores / (INPUT_FPS / l.decode_fps_1core + analysis_fps / l.infer_fps_1core)
}

/// Searches the largest stream count that holds, starting from the limit.
pub fn max_streams(
    setup: &streams::Setup,
    limits: &limits::Limits,
) -> anyhow::Result<serde_json::Value> {
    let limit = limit_streams(limits, setup.analysis_fps);
    let mut runs = Vec::new();
    let mut try_n = |n: usize| -> anyhow::Result<bool> {
        let r = streams::run(&streams::Setup {
            streams: n,
            ..setup.clone()
        })?;
        let holds = r.holds();
        eprintln!(
            "bench: {n} streams: {} of {} analysed fps, p99 {:?} ms, {} cores, {} MB: {}",
            r.analysed_fps_achieved,
            r.analysed_fps_target,
            r.frame_to_event_ms.p99,
            r.cpu_cores_used,
            r.rss_mb_peak,
            if holds { "holds" } else { "does not hold" }
        );
        runs.push(r);
        Ok(holds)
    };
    let mut n = (limit.floor() as usize).max(1);
    let best = if try_n(n)? {
        while try_n(n + 1)? {
            n += 1;
        }
        n
    } else {
        loop {
            n -= 1;
            if n == 0 || try_n(n)? {
                break n;
            }
        }
    };
    Ok(json!({
        "limits": limits,
        "analysis_fps": setup.analysis_fps,
        "motion_gate": setup.motion_gate,
        "spread_s": setup.spread,
        "limit_streams": round_to(limit, 2),
        "max_streams": best,
        "ratio": round_to(best as f64 / limit, 2),
        "runs": runs,
    }))
}

#[cfg(test)]
mod tests {
    #[test]
    fn figures_round_to_their_places() {
        assert_eq!(super::round_to(0.689_999_997_615_814_2, 2), 0.69);
        assert_eq!(super::round_to(341.44, 1), 341.4);
        assert_eq!(super::round_to(2.0 / 3.0, 4), 0.6667);
    }
}
