//! A constant-velocity Kalman filter over a box, in the (cx, cy, aspect,
//! height) parametrisation of SORT/ByteTrack: the aspect ratio of a plate
//! or face changes slowly, its size and position change with motion.
//!
//! The matrices are tiny (8×8) and fixed, so they are written out with
//! plain arrays rather than pulling in a linear algebra crate.

// Matrix arithmetic reads best with explicit indices.
#![allow(clippy::needless_range_loop)]

use crate::infer::BBox;

const N: usize = 8;
type Vector = [f32; N];
type Matrix = [[f32; N]; N];

/// Process and measurement noise relative to the box height, as in
/// ByteTrack: bigger boxes move more pixels per frame.
const STD_POSITION: f32 = 1.0 / 20.0;
const STD_VELOCITY: f32 = 1.0 / 160.0;

#[derive(Debug, Clone)]
pub struct KalmanBox {
    x: Vector,
    p: Matrix,
}

fn to_xyah(b: &BBox) -> [f32; 4] {
    let w = (b[2] - b[0]).max(1e-3);
    let h = (b[3] - b[1]).max(1e-3);
    [(b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0, w / h, h]
}

fn identity() -> Matrix {
    let mut m = [[0.0; N]; N];
    for (i, row) in m.iter_mut().enumerate() {
        row[i] = 1.0;
    }
    m
}

impl KalmanBox {
    pub fn new(b: &BBox) -> Self {
        let z = to_xyah(b);
        let h = z[3];
        let mut x = [0.0; N];
        x[..4].copy_from_slice(&z);
        let std = [
            2.0 * STD_POSITION * h,
            2.0 * STD_POSITION * h,
            1e-2,
            2.0 * STD_POSITION * h,
            10.0 * STD_VELOCITY * h,
            10.0 * STD_VELOCITY * h,
            1e-5,
            10.0 * STD_VELOCITY * h,
        ];
        let mut p = [[0.0; N]; N];
        for i in 0..N {
            p[i][i] = std[i] * std[i];
        }
        Self { x, p }
    }

    /// Advances one step: position += velocity.
    pub fn predict(&mut self) {
        let h = self.x[3];
        for i in 0..4 {
            self.x[i] += self.x[i + 4];
        }
        // P = F P Fᵀ + Q, with F = [[I, I], [0, I]].
        let mut fp = self.p;
        for i in 0..4 {
            for j in 0..N {
                fp[i][j] += self.p[i + 4][j];
            }
        }
        let mut fpf = fp;
        for row in fpf.iter_mut() {
            for j in 0..4 {
                row[j] += row[j + 4];
            }
        }
        let q = [
            STD_POSITION * h,
            STD_POSITION * h,
            1e-2,
            STD_POSITION * h,
            STD_VELOCITY * h,
            STD_VELOCITY * h,
            1e-5,
            STD_VELOCITY * h,
        ];
        for i in 0..N {
            fpf[i][i] += q[i] * q[i];
        }
        self.p = fpf;
    }

    /// Corrects with the second box measured, `frames` frames after the
    /// first (where the filter, with no speed yet, still is): the speed is
    /// the step between them. A few frames a second are far too few for
    /// the filter to learn a speed of several box heights a frame from its
    /// prior of none.
    ///
    /// Only the centre's speed: two boxes' sizes differ by jitter (a clipped
    /// box at the frame's edge) as much as by motion, and a size speed the
    /// filter barely corrects would grow or squash the box frame after
    /// frame. The speed is uncertain by half itself, so that a vehicle
    /// that stops is followed as its measurements show.
    pub fn second(&mut self, b: &BBox, frames: f32) {
        let z = to_xyah(b);
        let mut restarted = Self::new(b);
        for i in 0..2 {
            let v = (z[i] - self.x[i]) / frames.max(1.0);
            restarted.x[i + 4] = v;
            let std = (0.5 * v.abs()).max(restarted.p[i + 4][i + 4].sqrt());
            restarted.p[i + 4][i + 4] = std * std;
        }
        *self = restarted;
    }

    /// Corrects with a measured box.
    pub fn update(&mut self, b: &BBox) {
        let z = to_xyah(b);
        let h = self.x[3];
        let r = [STD_POSITION * h, STD_POSITION * h, 1e-1, STD_POSITION * h];
        // S = H P Hᵀ + R (the top-left 4×4 of P), K = P Hᵀ S⁻¹.
        let mut s = [[0.0f32; 4]; 4];
        for i in 0..4 {
            for j in 0..4 {
                s[i][j] = self.p[i][j];
            }
            s[i][i] += r[i] * r[i];
        }
        let Some(s_inv) = invert4(&s) else { return };
        let mut k = [[0.0f32; 4]; N];
        for i in 0..N {
            for j in 0..4 {
                k[i][j] = (0..4).map(|m| self.p[i][m] * s_inv[m][j]).sum();
            }
        }
        let y: [f32; 4] = std::array::from_fn(|i| z[i] - self.x[i]);
        for i in 0..N {
            self.x[i] += (0..4).map(|j| k[i][j] * y[j]).sum::<f32>();
        }
        // P = (I - K H) P
        let mut ikh = identity();
        for i in 0..N {
            for j in 0..4 {
                ikh[i][j] -= k[i][j];
            }
        }
        let mut p = [[0.0; N]; N];
        for i in 0..N {
            for j in 0..N {
                p[i][j] = (0..N).map(|m| ikh[i][m] * self.p[m][j]).sum();
            }
        }
        self.p = p;
    }

    pub fn bbox(&self) -> BBox {
        let [cx, cy, a, h] = [self.x[0], self.x[1], self.x[2], self.x[3].max(1e-3)];
        let w = a * h;
        [cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0]
    }
}

/// Gauss-Jordan inverse of a 4×4 matrix; None when singular.
fn invert4(m: &[[f32; 4]; 4]) -> Option<[[f32; 4]; 4]> {
    let mut a = [[0.0f64; 8]; 4];
    for i in 0..4 {
        for j in 0..4 {
            a[i][j] = m[i][j] as f64;
        }
        a[i][4 + i] = 1.0;
    }
    for col in 0..4 {
        let pivot = (col..4).max_by(|&x, &y| a[x][col].abs().total_cmp(&a[y][col].abs()))?;
        if a[pivot][col].abs() < 1e-12 {
            return None;
        }
        a.swap(col, pivot);
        let d = a[col][col];
        for v in a[col].iter_mut() {
            *v /= d;
        }
        for row in 0..4 {
            if row != col {
                let f = a[row][col];
                let pivot_row = a[col];
                for (v, p) in a[row].iter_mut().zip(pivot_row) {
                    *v -= f * p;
                }
            }
        }
    }
    Some(std::array::from_fn(|i| {
        std::array::from_fn(|j| a[i][4 + j] as f32)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learns_constant_velocity() {
        let mut k = KalmanBox::new(&[0.0, 0.0, 40.0, 20.0]);
        for step in 1..=10 {
            k.predict();
            let dx = 10.0 * step as f32;
            k.update(&[dx, 0.0, dx + 40.0, 20.0]);
        }
        k.predict();
        let b = k.bbox();
        assert!((b[0] - 110.0).abs() < 3.0, "predicted {b:?}");
        assert!(
            (b[2] - b[0] - 40.0).abs() < 2.0 && (b[3] - b[1] - 20.0).abs() < 2.0,
            "size kept: {b:?}"
        );
    }

    #[test]
    fn the_second_box_gives_the_speed_at_once() {
        // 90 px a frame, four and a half heights: a vehicle at 2 frames a second.
        let mut k = KalmanBox::new(&[0.0, 0.0, 40.0, 20.0]);
        k.predict();
        k.predict();
        k.second(&[0.0, 180.0, 40.0, 200.0], 2.0);
        k.predict();
        let b = k.bbox();
        assert!((b[1] - 270.0).abs() < 1.0, "predicted {b:?}");
        // A plate that then stops is followed within a few frames.
        let mut k = KalmanBox::new(&[0.0, 0.0, 40.0, 20.0]);
        k.predict();
        k.second(&[0.0, 90.0, 40.0, 110.0], 1.0);
        for _ in 0..4 {
            k.predict();
            k.update(&[0.0, 90.0, 40.0, 110.0]);
        }
        k.predict();
        assert!((k.bbox()[1] - 90.0).abs() < 30.0, "{:?}", k.bbox());
        // Sizes that differ by jitter give no size speed.
        let mut k = KalmanBox::new(&[0.0, 0.0, 40.0, 20.0]);
        k.predict();
        k.second(&[0.0, 0.0, 36.0, 20.0], 1.0);
        for _ in 0..20 {
            k.predict();
            k.update(&[0.0, 0.0, 40.0, 20.0]);
        }
        let b = k.bbox();
        assert!((b[2] - b[0] - 40.0).abs() < 3.0, "{b:?}");
        // The filter's own update barely moves from no speed.
        let mut k = KalmanBox::new(&[0.0, 0.0, 40.0, 20.0]);
        k.predict();
        k.update(&[0.0, 90.0, 40.0, 110.0]);
        k.predict();
        assert!(k.bbox()[1] < 135.0, "{:?}", k.bbox());
    }

    #[test]
    fn inverse_of_diagonal() {
        let m = [
            [2.0, 0.0, 0.0, 0.0],
            [0.0, 4.0, 0.0, 0.0],
            [0.0, 0.0, 1.0, 0.0],
            [0.0, 0.0, 0.0, 0.5],
        ];
        let inv = invert4(&m).unwrap();
        assert_eq!(inv[0][0], 0.5);
        assert_eq!(inv[3][3], 2.0);
        assert!(invert4(&[[0.0; 4]; 4]).is_none());
    }
}
