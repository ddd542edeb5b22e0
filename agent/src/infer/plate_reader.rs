//! Plate reader in the fast-plate-ocr layout: one pass over a rectified
//! crop, one-line and two-line plates alike. Input uint8 `[N, H, W, 3]`
//! RGB (64×128 for cct_xs_v1_global; normalisation is inside the graph);
//! output `[N, slots, alphabet]`, a softmax per character slot, `_` pads.
//! The alphabet is told by the number of classes: fast-plate-ocr's 37, or
//! the same with `Đ` appended (38), which the project's reader uses.

use std::sync::Mutex;

use anyhow::{Context, anyhow};
use ort::session::Session;
use ort::value::TensorElementType::{Float32, Uint8};
use ort::value::TensorRef;

use super::image_ops::{region_i420, warp_quad};
use super::runtime::first_tensor;
use crate::frame::{BgrImage, I420Image};

/// The alphabets a reader may have, known by their length. `Đ` comes
/// after the pad so that a reader widened from fast-plate-ocr's keeps
/// every old class where it was.
const ALPHABETS: [&str; 2] = [
    "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_",
    "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_Đ",
];
const PAD: char = '_';
/// How far the plate's corners are pushed out before rectifying.
pub const CROP_MARGIN: f32 = 0.06;

#[derive(Debug, Clone, PartialEq)]
pub struct TextRead {
    /// Uppercase letters and digits only.
    pub chars: String,
    /// Probability of each character in `chars`.
    pub char_confidences: Vec<f32>,
    /// Mean of the best probability of every slot, pads included: a read
    /// whose padding is uncertain is uncertain about its length.
    pub confidence: f32,
}

pub struct PlateReader {
    session: Mutex<Session>,
    width: u32,
    height: u32,
    alphabet: Vec<char>,
}

impl PlateReader {
    pub fn new(session: Session) -> anyhow::Result<Self> {
        const LAYOUT: &str = "a plate reader of fast-plate-ocr's layout takes uint8 [N,H,W,3] \
                              and gives float32 [N,slots,classes]";
        let shape = first_tensor(session.inputs(), "input", Uint8, LAYOUT)?;
        if !matches!(shape[..], [_, h, w, 3] if h > 0 && w > 0) {
            return Err(anyhow!("its input is {shape:?}; {LAYOUT}"));
        }
        let output = first_tensor(session.outputs(), "output", Float32, LAYOUT)?;
        let classes = match output[..] {
            [_, slots, classes] if slots > 0 => classes,
            _ => return Err(anyhow!("its output is {output:?}; {LAYOUT}")),
        };
        let alphabet = alphabet_of(classes)?;
        Ok(Self {
            session: Mutex::new(session),
            width: shape[2] as u32,
            height: shape[1] as u32,
            alphabet,
        })
    }

    /// The plate given by its corners, rectified to the reader's input
    /// size. The corners are first pushed out from their centre by
    /// [`CROP_MARGIN`]: detected corners sit on the plate's edge, and a
    /// glyph cut by a pixel reads worse than one with a little border
    /// around it (the reader was trained so).
    pub fn rectify(&self, img: &I420Image, corners: &[[f32; 2]; 4]) -> anyhow::Result<BgrImage> {
        let cx = corners.iter().map(|c| c[0]).sum::<f32>() / 4.0;
        let cy = corners.iter().map(|c| c[1]).sum::<f32>() / 4.0;
        let grown = corners.map(|[x, y]| {
            [
                cx + (x - cx) * (1.0 + CROP_MARGIN),
                cy + (y - cy) * (1.0 + CROP_MARGIN),
            ]
        });
        // Only the region around the plate is converted; two pixels more
        // on each side hold every pixel the bilinear warp reads.
        let (xs, ys) = (grown.map(|c| c[0]), grown.map(|c| c[1]));
        let (region, [ox, oy]) = region_i420(
            img,
            [
                xs.into_iter().fold(f32::INFINITY, f32::min) - 2.0,
                ys.into_iter().fold(f32::INFINITY, f32::min) - 2.0,
                xs.into_iter().fold(f32::NEG_INFINITY, f32::max) + 2.0,
                ys.into_iter().fold(f32::NEG_INFINITY, f32::max) + 2.0,
            ],
        )?;
        let local = grown.map(|[x, y]| [x - ox as f32, y - oy as f32]);
        warp_quad(&region, &local, self.width, self.height)
    }

    /// Reads an upright plate crop of any size.
    pub fn read_crop(&self, crop: &BgrImage) -> anyhow::Result<TextRead> {
        let crop = super::image_ops::resize(crop, self.width, self.height)?;
        let mut input =
            ndarray::Array4::<u8>::zeros((1, self.height as usize, self.width as usize, 3));
        for (dst, src) in input
            .as_slice_mut()
            .expect("contiguous")
            .chunks_exact_mut(3)
            .zip(crop.data.chunks_exact(3))
        {
            dst.copy_from_slice(&[src[2], src[1], src[0]]);
        }
        let mut session = super::runtime::lock(&self.session);
        let outputs = session
            .run(ort::inputs![TensorRef::from_array_view(&input)?])
            .context("plate reader inference failed")?;
        let (shape, data) = outputs[0].try_extract_tensor::<f32>()?;
        let classes = *shape.last().unwrap_or(&0) as usize;
        if classes != self.alphabet.len() {
            return Err(anyhow!(
                "plate reader gave {classes} classes per slot where its model declares {}",
                self.alphabet.len()
            ));
        }
        Ok(decode(data, &self.alphabet))
    }
}

fn alphabet_of(classes: i64) -> anyhow::Result<Vec<char>> {
    ALPHABETS
        .iter()
        .map(|a| a.chars().collect::<Vec<char>>())
        .find(|a| a.len() as i64 == classes)
        .ok_or_else(|| {
            anyhow!(
                "plate reader model gives {classes} classes per character slot; matthan reads \
                 37 (0-9, A-Z, _ as in fast-plate-ocr) or 38 (the same and Đ): use such a model"
            )
        })
}

fn decode(data: &[f32], alphabet: &[char]) -> TextRead {
    let classes = alphabet.len();
    let mut chars = String::new();
    let mut char_confidences = Vec::new();
    let mut total = 0.0;
    let slots = data.len() / classes;
    // A NaN would outrank every probability and become the read's
    // confidence: a broken output counts as no evidence for its class.
    let finite = |p: f32| if p.is_finite() { p } else { 0.0 };
    for slot in data.chunks_exact(classes) {
        let (best, p) = slot
            .iter()
            .map(|&p| finite(p))
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(i, p)| (alphabet[i], p))
            .unwrap_or((PAD, 0.0));
        total += p;
        if best != PAD {
            chars.push(best);
            char_confidences.push(p);
        }
    }
    TextRead {
        chars,
        char_confidences,
        confidence: if slots == 0 {
            0.0
        } else {
            total / slots as f32
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_drops_padding_and_averages_all_slots() {
        let alphabet = alphabet_of(37).unwrap();
        let mut data = vec![0.0; 3 * 37];
        data[5] = 0.9; // '5'
        data[37 + 10] = 0.8; // 'A'
        data[2 * 37 + 36] = 0.7; // '_'
        let r = decode(&data, &alphabet);
        assert_eq!(r.chars, "5A");
        assert_eq!(r.char_confidences, vec![0.9, 0.8]);
        assert!((r.confidence - 0.8).abs() < 1e-6);
    }

    #[test]
    fn a_nan_in_the_output_is_no_class_and_no_confidence() {
        let alphabet = alphabet_of(37).unwrap();
        let mut data = vec![0.0; 37];
        data[0] = f32::NAN;
        data[1] = 0.9;
        let r = decode(&data, &alphabet);
        assert_eq!(r.chars, "1");
        assert!((r.confidence - 0.9).abs() < 1e-6, "{}", r.confidence);
    }

    #[test]
    fn a_widened_reader_reads_dj_with_one_confidence_per_character() {
        let alphabet = alphabet_of(38).unwrap();
        let mut data = vec![0.0; 4 * 38];
        for (slot, class) in [22, 37, 1, 36].into_iter().enumerate() {
            data[slot * 38 + class] = 0.9; // M Đ 1 _
        }
        let r = decode(&data, &alphabet);
        assert_eq!(r.chars, "MĐ1");
        assert_eq!(r.char_confidences.len(), r.chars.chars().count());
    }

    #[test]
    fn an_unknown_alphabet_is_refused_with_what_is_read() {
        let err = alphabet_of(36).unwrap_err().to_string();
        assert!(err.contains("36 classes") && err.contains("38"), "{err}");
    }
}
