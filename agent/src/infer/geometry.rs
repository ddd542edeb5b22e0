//! Boxes, overlap and non-maximum suppression, shared by every detector.

/// `[x1, y1, x2, y2]` in pixels.
pub type BBox = [f32; 4];

pub fn iou(a: &BBox, b: &BBox) -> f32 {
    let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = w * h;
    let area = |r: &BBox| (r[2] - r[0]).max(0.0) * (r[3] - r[1]).max(0.0);
    let union = area(a) + area(b) - inter;
    if union <= 0.0 { 0.0 } else { inter / union }
}

/// Keeps the highest-scoring item of every group that overlaps by more
/// than `threshold`, in descending score order.
pub fn nms<T>(
    mut items: Vec<T>,
    threshold: f32,
    bbox: impl Fn(&T) -> BBox,
    score: impl Fn(&T) -> f32,
) -> Vec<T> {
    items.sort_by(|a, b| score(b).total_cmp(&score(a)));
    let mut kept: Vec<T> = Vec::with_capacity(items.len().min(16));
    for item in items {
        let b = bbox(&item);
        if kept.iter().all(|k| iou(&bbox(k), &b) <= threshold) {
            kept.push(item);
        }
    }
    kept
}

/// Whether four corners (top-left, top-right, bottom-right, bottom-left)
/// make a plate the reader can be given: a convex quadrilateral in that
/// order (a crossed or mirrored one would hand the reader a mirrored
/// crop), of some area, centred within `bbox` grown by its own size (a
/// model's corners far from its own box are noise).
pub fn plausible_quad(corners: &[[f32; 2]; 4], bbox: &BBox) -> bool {
    const MIN_AREA: f32 = 4.0;
    // Every turn the same way (clockwise, with y down).
    let convex = (0..4).all(|i| {
        let [a, b, c] = [corners[i], corners[(i + 1) % 4], corners[(i + 2) % 4]];
        (b[0] - a[0]) * (c[1] - b[1]) - (b[1] - a[1]) * (c[0] - b[0]) > 0.0
    });
    // Shoelace: twice the area.
    let area = (0..4)
        .map(|i| {
            let (a, b) = (corners[i], corners[(i + 1) % 4]);
            a[0] * b[1] - b[0] * a[1]
        })
        .sum::<f32>()
        / 2.0;
    let (cx, cy) = (
        corners.iter().map(|c| c[0]).sum::<f32>() / 4.0,
        corners.iter().map(|c| c[1]).sum::<f32>() / 4.0,
    );
    let (w, h) = (bbox[2] - bbox[0], bbox[3] - bbox[1]);
    let near =
        (bbox[0] - w..=bbox[2] + w).contains(&cx) && (bbox[1] - h..=bbox[3] + h).contains(&cy);
    convex && area >= MIN_AREA && near
}

/// Width over height of a plate from its corners: the mean of its top and
/// bottom edges over the mean of its sides.
pub fn quad_aspect(c: &[[f32; 2]; 4]) -> f32 {
    let len = |a: [f32; 2], b: [f32; 2]| (a[0] - b[0]).hypot(a[1] - b[1]);
    let width = (len(c[0], c[1]) + len(c[3], c[2])) / 2.0;
    let height = (len(c[0], c[3]) + len(c[1], c[2])) / 2.0;
    if height > 0.0 { width / height } else { 0.0 }
}

/// The corners of a box, in the order of [`plausible_quad`].
pub fn box_corners(b: &BBox) -> [[f32; 2]; 4] {
    [[b[0], b[1]], [b[2], b[1]], [b[2], b[3]], [b[0], b[3]]]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_upright_convex_quad_near_its_box_is_plausible() {
        let b = [100.0, 100.0, 180.0, 130.0];
        let tilted = [
            [100.0, 105.0],
            [180.0, 100.0],
            [178.0, 128.0],
            [102.0, 130.0],
        ];
        assert!(plausible_quad(&box_corners(&b), &b));
        assert!(plausible_quad(&tilted, &b));
        let mirrored = [tilted[1], tilted[0], tilted[3], tilted[2]];
        let crossed = [tilted[0], tilted[2], tilted[1], tilted[3]];
        let point = [[140.0, 115.0]; 4];
        let far = box_corners(&[-500.0, 100.0, -420.0, 130.0]);
        for bad in [mirrored, crossed, point, far] {
            assert!(!plausible_quad(&bad, &b), "{bad:?}");
        }
    }

    #[test]
    fn iou_of_known_boxes() {
        assert_eq!(iou(&[0.0, 0.0, 10.0, 10.0], &[0.0, 0.0, 10.0, 10.0]), 1.0);
        assert_eq!(iou(&[0.0, 0.0, 10.0, 10.0], &[20.0, 20.0, 30.0, 30.0]), 0.0);
        assert!((iou(&[0.0, 0.0, 10.0, 10.0], &[5.0, 0.0, 15.0, 10.0]) - 1.0 / 3.0).abs() < 1e-6);
    }

    #[test]
    fn nms_keeps_best_of_overlapping_and_all_separate() {
        let boxes = vec![
            ([0.0, 0.0, 10.0, 10.0], 0.8),
            ([1.0, 0.0, 11.0, 10.0], 0.9),
            ([50.0, 50.0, 60.0, 60.0], 0.5),
        ];
        let kept = nms(boxes, 0.5, |b| b.0, |b| b.1);
        assert_eq!(kept.len(), 2);
        assert_eq!(kept[0].1, 0.9);
        assert_eq!(kept[1].1, 0.5);
    }
}
