//! The background colour of a plate, which says who owns the vehicle
//! (Circular 79/2024/TT-BCA): white with black characters for private
//! vehicles, yellow with black characters for commercial transport (xe
//! kinh doanh vận tải), blue with white characters for state agencies,
//! red with white characters for the army.
//!
//! The background is the colour that covers most of the plate: the
//! characters take at most about a third of a plate's area. Pixels are
//! sorted into the four plate colours by hue, saturation and value; dark
//! pixels (black characters, shadows, the frame) count for nothing, so
//! the black characters of a white plate never outvote its background,
//! and the white characters of a blue or red plate are outnumbered by it.
//! A border of the crop is ignored because detector boxes are loose and
//! take in the bumper or the road around the plate.

use crate::frame::{BgrImage, I420Image};
use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PlateColour {
    White,
    Yellow,
    Blue,
    Red,
    Unknown,
}

/// The share of each side left out as probable surroundings.
const MARGIN: f32 = 0.12;
/// The least share of the inner pixels that the winning colour must
/// cover; below it the crop is too dark, too small or not a plate.
const MIN_SHARE: f32 = 0.25;

/// Hue in degrees [0, 360), saturation and value in [0, 1].
fn hsv([b, g, r]: [u8; 3]) -> (f32, f32, f32) {
    let (r, g, b) = (f32::from(r), f32::from(g), f32::from(b));
    let max = r.max(g).max(b);
    let min = r.min(g).min(b);
    let delta = max - min;
    let v = max / 255.0;
    let s = if max > 0.0 { delta / max } else { 0.0 };
    let h = if delta == 0.0 {
        0.0
    } else if max == r {
        60.0 * ((g - b) / delta).rem_euclid(6.0)
    } else if max == g {
        60.0 * ((b - r) / delta + 2.0)
    } else {
        60.0 * ((r - g) / delta + 4.0)
    };
    (h, s, v)
}

/// Which plate colour one pixel could be background of, if any. Grey
/// pixels count as white from `white_v` up.
fn classify((h, s, v): (f32, f32, f32), white_v: f32) -> Option<PlateColour> {
    if v < 0.25 {
        return None; // characters, shadow, frame
    }
    if s < 0.25 {
        return (v >= white_v).then_some(PlateColour::White);
    }
    if s < 0.35 {
        return None; // washed-out colour: neither white nor coloured
    }
    match h {
        h if !(15.0..345.0).contains(&h) => Some(PlateColour::Red),
        h if (35.0..75.0).contains(&h) && v >= 0.4 => Some(PlateColour::Yellow),
        h if (190.0..260.0).contains(&h) => Some(PlateColour::Blue),
        _ => None,
    }
}

/// The value from which a grey pixel is white. A white plate at night or
/// under infrared light is mid grey with darker characters, so the
/// threshold follows the brightest pixels of the crop; it never rises
/// above 0.5 (a bright white plate) and never falls below 0.3.
fn white_threshold(values: &mut [f32]) -> f32 {
    if values.is_empty() {
        return 0.5;
    }
    let i = values.len() * 9 / 10;
    let (_, p90, _) = values.select_nth_unstable_by(i.min(values.len() - 1), f32::total_cmp);
    (*p90 * 0.75).clamp(0.3, 0.5)
}

/// Whether a frame carries no colour: a camera in night mode (infrared
/// light, its filter out) sends grey pictures, in which a yellow, blue or
/// red plate looks white. Its chroma then sits at 128 almost everywhere,
/// within what compression leaves; a camera's coloured on-screen text
/// (the time, the site) covers far less than the share allowed here. A
/// colour picture of a real scene strays from grey well beyond it.
pub fn is_monochrome(frame: &I420Image) -> bool {
    const GREY_WITHIN: u8 = 4;
    const COLOURED_AT_MOST: usize = 100; // one sample in 100
    let [_, u, v] = frame.planes();
    let samples = u.len().div_ceil(7);
    let allowed = samples / COLOURED_AT_MOST;
    u.iter()
        .zip(v)
        .step_by(7)
        .filter(|&(&u, &v)| u.abs_diff(128) > GREY_WITHIN || v.abs_diff(128) > GREY_WITHIN)
        .nth(allowed)
        .is_none()
}

/// The background colour of an upright plate crop; [`PlateColour::Unknown`]
/// when no plate colour covers enough of it.
pub fn plate_colour(crop: &BgrImage) -> PlateColour {
    let (w, h) = (crop.width, crop.height);
    if w == 0 || h == 0 {
        return PlateColour::Unknown;
    }
    let inner = |n: u32| {
        let m = (n as f32 * MARGIN) as u32;
        if n > 2 * m + 2 { m..n - m } else { 0..n }
    };
    let (xs, ys) = (inner(w), inner(h));
    let pixels: Vec<(f32, f32, f32)> = ys
        .flat_map(|y| xs.clone().map(move |x| (x, y)))
        .map(|(x, y)| hsv(crop.pixel(x, y)))
        .collect();
    let white_v = white_threshold(&mut pixels.iter().map(|p| p.2).collect::<Vec<_>>());
    // White, yellow, blue, red.
    let mut counts = [0u32; 4];
    for &px in &pixels {
        if let Some(c) = classify(px, white_v) {
            counts[c as usize] += 1;
        }
    }
    let total = pixels.len();
    let (best, &n) = counts
        .iter()
        .enumerate()
        .max_by_key(|&(_, n)| n)
        .expect("four counts");
    if n == 0 || (n as f32) < MIN_SHARE * total as f32 {
        return PlateColour::Unknown;
    }
    [
        PlateColour::White,
        PlateColour::Yellow,
        PlateColour::Blue,
        PlateColour::Red,
    ][best]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grey_frame_is_monochrome_and_a_coloured_one_is_not() {
        let (w, h) = (640usize, 360usize);
        let mut data = vec![100u8; w * h];
        data.extend(vec![129u8; w * h / 2]);
        let grey = I420Image::new(w as u32, h as u32, data.clone());
        assert!(is_monochrome(&grey));
        // A coloured line of on-screen text stays grey enough.
        data[w * h..w * h + 160].fill(60);
        assert!(is_monochrome(&I420Image::new(
            w as u32,
            h as u32,
            data.clone()
        )));
        // A coloured patch (a yellow sign) in an otherwise grey scene.
        data[w * h + 10_000..w * h + 12_000].fill(60);
        assert!(!is_monochrome(&I420Image::new(w as u32, h as u32, data)));
    }

    /// A `w`×`h` plate of background `bg` (BGR) with vertical character
    /// strokes of colour `ink` covering about `ink_share` of the inside,
    /// inside a dark frame and a strip of grey road on each side.
    fn synthetic(bg: [u8; 3], ink: [u8; 3], ink_share: f32) -> BgrImage {
        let (w, h) = (120u32, 40u32);
        let mut data = Vec::with_capacity((w * h * 3) as usize);
        let period = 10u32;
        let stroke = (period as f32 * ink_share).round() as u32;
        for y in 0..h {
            for x in 0..w {
                let px = if x < 6 || x >= w - 6 {
                    [90, 90, 90] // road
                } else if x < 8 || x >= w - 8 || y < 2 || y >= h - 2 {
                    [20, 20, 20] // frame
                } else if (8..h - 8).contains(&y) && x % period < stroke {
                    ink
                } else {
                    bg
                };
                data.extend_from_slice(&px);
            }
        }
        BgrImage::new(w, h, data)
    }

    const BLACK: [u8; 3] = [25, 25, 25];
    const WHITE_INK: [u8; 3] = [235, 235, 235];

    #[test]
    fn synthetic_plates() {
        for (name, bg, ink, expected) in [
            ("white", [235, 235, 235], BLACK, PlateColour::White),
            ("dim white", [150, 155, 160], BLACK, PlateColour::White),
            ("warm white", [200, 225, 235], BLACK, PlateColour::White),
            ("yellow", [30, 200, 240], BLACK, PlateColour::Yellow),
            ("dark yellow", [20, 150, 180], BLACK, PlateColour::Yellow),
            ("blue", [160, 70, 20], WHITE_INK, PlateColour::Blue),
            ("bright blue", [230, 120, 40], WHITE_INK, PlateColour::Blue),
            ("red", [30, 30, 200], WHITE_INK, PlateColour::Red),
            ("dark red", [40, 30, 140], WHITE_INK, PlateColour::Red),
            ("black", [10, 10, 10], BLACK, PlateColour::Unknown),
            ("green", [40, 160, 40], BLACK, PlateColour::Unknown),
            ("white at night", [100, 100, 100], BLACK, PlateColour::White),
            (
                "night, black ink",
                [100, 100, 100],
                [60, 60, 60],
                PlateColour::White,
            ),
            ("too dark", [55, 55, 55], BLACK, PlateColour::Unknown),
        ] {
            for share in [0.2, 0.4] {
                let got = plate_colour(&synthetic(bg, ink, share));
                assert_eq!(got, expected, "{name} {share}");
            }
        }
    }

    #[test]
    fn degenerate_crops() {
        assert_eq!(
            plate_colour(&BgrImage::new(0, 0, vec![])),
            PlateColour::Unknown
        );
        assert_eq!(
            plate_colour(&BgrImage::new(1, 1, vec![30, 200, 240])),
            PlateColour::Yellow
        );
        assert_eq!(
            plate_colour(&BgrImage::new(2, 1, vec![0; 6])),
            PlateColour::Unknown
        );
    }

    #[test]
    fn serialises_lowercase() {
        assert_eq!(
            serde_json::to_string(&PlateColour::Yellow).unwrap(),
            "\"yellow\""
        );
    }

    #[test]
    fn hsv_of_primaries() {
        for (bgr, hue) in [
            ([0, 0, 255], 0.0),
            ([0, 255, 255], 60.0),
            ([0, 255, 0], 120.0),
            ([255, 0, 0], 240.0),
            ([255, 0, 255], 300.0),
        ] {
            let (h, s, v) = hsv(bgr);
            assert_eq!((h, s, v), (hue, 1.0, 1.0), "{bgr:?}");
        }
    }

    /// Real crops from the shared data set: CCTV motorbike and car plates
    /// (all white) and two yellow commercial plates from web photos.
    /// Skipped where the data set is absent.
    #[test]
    fn shared_crops() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/data/vn_plate_crops_ocr/images");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            eprintln!("skipped: no {}", dir.display());
            return;
        };
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        names.sort();
        let white = names
            .iter()
            .filter(|n| n.contains("xemay"))
            .take(20)
            .chain(names.iter().filter(|n| n.contains("CarLongPlate")).take(20));
        let yellow = ["ndata41.jpg", "ndata148.jpg"];
        for (name, expected) in white
            .map(|n| (n.as_str(), PlateColour::White))
            .chain(yellow.map(|n| (n, PlateColour::Yellow)))
        {
            let crop = BgrImage::open(&dir.join(name)).unwrap();
            assert_eq!(plate_colour(&crop), expected, "{name}");
        }
    }
}
