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

#[cfg(test)]
mod tests {
    use super::*;

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
