//! Plate detector with four corners, in the HyperLPR3 `y5fu` layout (a
//! YOLOv5-face head): input RGB / 255, letterboxed to S×S; output
//! `[1, N, 15]` per anchor: cx, cy, w, h, objectness, four corners
//! (top-left, top-right, bottom-right, bottom-left), and two class scores
//! (one-line plate, two-line plate). Confidence = objectness × best class.

use std::sync::Mutex;

use anyhow::{Context, anyhow};
use ort::session::Session;
use ort::value::TensorElementType::Float32;
use ort::value::TensorRef;

use super::geometry::{BBox, box_corners, nms, plausible_quad};
use super::image_ops::{letterbox, to_nchw};
use super::runtime::first_tensor;
use crate::frame::I420Image;

pub const NMS_IOU: f32 = 0.5;

#[derive(Debug, Clone, PartialEq)]
pub struct PlateBox {
    pub bbox: BBox,
    pub corners: [[f32; 2]; 4],
    pub score: f32,
    /// 1 for a one-line plate, 2 for a two-line (square) plate.
    pub lines: u8,
}

pub struct PlateDetector {
    session: Mutex<Session>,
    size: u32,
}

impl PlateDetector {
    pub fn new(session: Session) -> anyhow::Result<Self> {
        const LAYOUT: &str = "a plate detector of HyperLPR3's y5fu layout takes float32 [1,3,S,S] \
                              and gives float32 [1,N,15]";
        // The input size is part of the model; read it rather than assume it.
        let input = first_tensor(session.inputs(), "input", Float32, LAYOUT)?;
        let size = match input[..] {
            [1, 3, h, w] if h == w && w > 0 => w,
            _ => return Err(anyhow!("its input is {input:?}; {LAYOUT}")),
        };
        let output = first_tensor(session.outputs(), "output", Float32, LAYOUT)?;
        if output.len() != 3 || output[2] != 15 {
            return Err(anyhow!("its output is {output:?}; {LAYOUT}"));
        }
        Ok(Self {
            session: Mutex::new(session),
            size: size as u32,
        })
    }

    pub fn detect(&self, img: &I420Image, threshold: f32) -> anyhow::Result<Vec<PlateBox>> {
        let (boxed, lb) = letterbox(img, self.size)?;
        let input = to_nchw(&boxed, true, 1.0 / 255.0);
        let mut session = super::runtime::lock(&self.session);
        let outputs = session
            .run(ort::inputs![TensorRef::from_array_view(&input)?])
            .context("plate detector inference failed")?;
        let (shape, data) = outputs[0].try_extract_tensor::<f32>()?;
        let width = *shape.last().unwrap_or(&0) as usize;
        if width != 15 {
            return Err(anyhow!(
                "plate detector output rows have {width} values, expected 15 (HyperLPR3 y5fu layout)"
            ));
        }
        let mut plates = Vec::new();
        for row in data.chunks_exact(15) {
            let obj = row[4];
            if obj < threshold {
                continue;
            }
            let (one, two) = (row[13] * obj, row[14] * obj);
            let score = one.max(two);
            // A broken model's NaN or infinite values make no plate (a NaN
            // passes the comparisons above, which are false for it, and stops here).
            if score < threshold || !row.iter().all(|v| v.is_finite()) {
                continue;
            }
            let (cx, cy, w, h) = (row[0], row[1], row[2], row[3]);
            let [x1, y1] = lb.unmap(cx - w / 2.0, cy - h / 2.0);
            let [x2, y2] = lb.unmap(cx + w / 2.0, cy + h / 2.0);
            let corners = std::array::from_fn(|k| lb.unmap(row[5 + 2 * k], row[6 + 2 * k]));
            plates.push(PlateBox {
                bbox: [x1, y1, x2, y2],
                corners,
                score,
                lines: if two > one { 2 } else { 1 },
            });
        }
        drop(outputs);
        drop(session);
        let (w, h) = (img.width as f32, img.height as f32);
        Ok(nms(plates, NMS_IOU, |p| p.bbox, |p| p.score)
            .into_iter()
            .map(|mut p| {
                let unclamped = p.bbox;
                p.bbox = [
                    p.bbox[0].clamp(0.0, w),
                    p.bbox[1].clamp(0.0, h),
                    p.bbox[2].clamp(0.0, w),
                    p.bbox[3].clamp(0.0, h),
                ];
                // Corners the reader cannot use: read the box instead.
                if !plausible_quad(&p.corners, &unclamped) {
                    p.corners = box_corners(&p.bbox);
                }
                p
            })
            // Wholly in the letterbox's padding: nothing of the picture to read.
            .filter(|p| p.bbox[2] > p.bbox[0] && p.bbox[3] > p.bbox[1])
            .collect())
    }
}
