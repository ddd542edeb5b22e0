//! Motion gating: a frame that shows the same scene as the last analysed
//! one need not be analysed again (a junction at a red light, an empty
//! street at night). The test is cheap: the luma plane averaged into a
//! small grid of cells, compared cell by cell with the last analysed frame.

/// Grid cells across and down.
const COLS: usize = 64;
const ROWS: usize = 36;
/// A cell whose mean luma moved by more than this has changed; sensor
/// noise and compression flicker stay well below it once averaged.
const CELL_DELTA: u8 = 12;
/// This many changed cells make a moving scene: a motorbike far from a
/// 1080p camera covers a few cells.
const CHANGED_CELLS: usize = 2;

#[derive(Default)]
pub struct MotionGate {
    last: Option<Vec<u8>>,
}

impl MotionGate {
    /// Whether the frame differs from the last one this gate let through;
    /// when it does, it becomes the new reference.
    pub fn moved(&mut self, luma: &[u8], stride: usize, width: usize, height: usize) -> bool {
        let grid = grid(luma, stride, width, height);
        let moved = self.last.as_ref().is_none_or(|last| {
            last.iter()
                .zip(&grid)
                .filter(|(a, b)| a.abs_diff(**b) > CELL_DELTA)
                .count()
                >= CHANGED_CELLS
        });
        if moved {
            self.last = Some(grid);
        }
        moved
    }
}

/// Mean luma per cell, from every fourth pixel of every fourth row.
fn grid(luma: &[u8], stride: usize, width: usize, height: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(COLS * ROWS);
    for r in 0..ROWS {
        let (y0, y1) = (
            r * height / ROWS,
            ((r + 1) * height / ROWS).max(r * height / ROWS + 1),
        );
        for c in 0..COLS {
            let (x0, x1) = (
                c * width / COLS,
                ((c + 1) * width / COLS).max(c * width / COLS + 1),
            );
            let (mut sum, mut n) = (0u32, 0u32);
            for y in (y0..y1.min(height)).step_by(4) {
                let row = &luma[y * stride..];
                for x in (x0..x1.min(width)).step_by(4) {
                    sum += u32::from(row[x]);
                    n += 1;
                }
            }
            out.push((sum / n.max(1)) as u8);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(w: usize, h: usize, f: impl Fn(usize, usize) -> u8) -> Vec<u8> {
        (0..h)
            .flat_map(|y| (0..w).map(move |x| (x, y)))
            .map(|(x, y)| f(x, y))
            .collect()
    }

    #[test]
    fn a_still_scene_with_noise_is_static_a_small_vehicle_is_not() {
        let (w, h) = (1920, 1080);
        let scene = |x: usize, y: usize| ((x / 7 + y / 5) % 200) as u8;
        let mut gate = MotionGate::default();
        assert!(gate.moved(&frame(w, h, scene), w, w, h), "first frame");
        // Sensor noise of a few levels: still the same scene.
        let noisy = frame(w, h, |x, y| {
            scene(x, y).saturating_add(((x * 31 + y * 17) % 5) as u8)
        });
        assert!(!gate.moved(&noisy, w, w, h));
        // A 90×90 motorbike-sized dark block appears.
        let bike = frame(w, h, |x, y| {
            if (900..990).contains(&x) && (500..590).contains(&y) {
                0
            } else {
                scene(x, y)
            }
        });
        assert!(gate.moved(&bike, w, w, h));
        assert!(!gate.moved(&bike, w, w, h), "it stopped: static again");
    }
}
