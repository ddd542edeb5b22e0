//! The crops a reviewing officer looks at first: the plate, upright, and
//! the vehicle around it.

use anyhow::bail;

use crate::frame::BgrImage;
use crate::infer::BBox;
use crate::infer::image_ops::warp_quad;

/// The plate rectified from its four corners at twice its size in the
/// frame, so the characters are large enough to read on a screen.
pub fn plate(frame: &BgrImage, corners: &[[f32; 2]; 4]) -> anyhow::Result<BgrImage> {
    let dist = |a: [f32; 2], b: [f32; 2]| ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2)).sqrt();
    let width = dist(corners[0], corners[1]).max(dist(corners[3], corners[2]));
    let height = dist(corners[0], corners[3]).max(dist(corners[1], corners[2]));
    let (w, h) = ((width * 2.0).round() as u32, (height * 2.0).round() as u32);
    if w < 2 || h < 2 {
        bail!("the plate's corners enclose no area");
    }
    warp_quad(frame, corners, w.min(2000), h.min(2000))
}

/// The region where the vehicle carrying the plate is: plates sit low and
/// central on cars and motorbikes, so the region reaches well above the
/// plate and to both sides. Returns the crop and its box in the frame.
pub fn vehicle(frame: &BgrImage, plate: &BBox) -> anyhow::Result<(BgrImage, [u32; 4])> {
    let (pw, ph) = (
        (plate[2] - plate[0]).max(1.0),
        (plate[3] - plate[1]).max(1.0),
    );
    // A motorbike plate is nearly square, a car plate long and thin; size
    // from the larger of the two so either vehicle fits.
    let unit = pw.max(ph * 2.0);
    let cx = (plate[0] + plate[2]) / 2.0;
    let clamp = |v: f32, max: u32| v.round().clamp(0.0, max as f32) as u32;
    let x1 = clamp(cx - unit * 2.0, frame.width);
    let x2 = clamp(cx + unit * 2.0, frame.width);
    let y1 = clamp(plate[1] - unit * 3.0, frame.height);
    let y2 = clamp(plate[3] + unit * 0.75, frame.height);
    if x2 <= x1 || y2 <= y1 {
        bail!("the plate lies outside the frame");
    }
    let (w, h) = (x2 - x1, y2 - y1);
    let mut data = Vec::with_capacity((w * h * 3) as usize);
    for y in y1..y2 {
        let row = (y * frame.width + x1) as usize * 3;
        data.extend_from_slice(&frame.data[row..row + w as usize * 3]);
    }
    Ok((BgrImage::new(w, h, data), [x1, y1, x2, y2]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vehicle_region_holds_the_plate_and_stays_in_the_frame() {
        let frame = BgrImage::new(640, 480, vec![7; 640 * 480 * 3]);
        let plate_box = [300.0, 400.0, 340.0, 430.0];
        let (crop, region) = vehicle(&frame, &plate_box).unwrap();
        assert!(region[0] <= 300 && region[2] >= 340 && region[1] < 400 && region[3] >= 430);
        assert!(region[3] <= 480);
        assert_eq!(
            (crop.width, crop.height),
            (region[2] - region[0], region[3] - region[1])
        );
    }

    #[test]
    fn the_plate_crop_is_upright_and_enlarged() {
        let frame = BgrImage::new(640, 480, vec![7; 640 * 480 * 3]);
        let crop = plate(
            &frame,
            &[
                [100.0, 100.0],
                [200.0, 100.0],
                [200.0, 150.0],
                [100.0, 150.0],
            ],
        )
        .unwrap();
        assert_eq!((crop.width, crop.height), (200, 100));
    }
}
