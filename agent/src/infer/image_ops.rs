//! Geometry on images through OpenCV: resizing, letterboxing and the
//! perspective warp that turns a tilted plate into an upright crop.
//!
//! A camera's frame arrives as I420 and is never converted whole: each
//! model's input is shrunk plane by plane and converted at its own size
//! (a third of the work of converting 1080p and shrinking three channels),
//! and a plate is rectified from the frame's region around it.

use anyhow::Context;
use opencv::core::{Mat, Point2f, Scalar, Size, Vec3b, Vector};
use opencv::prelude::*;

use crate::frame::{BgrImage, I420Image};

fn as_mat(img: &BgrImage) -> anyhow::Result<opencv::boxed_ref::BoxedRef<'_, Mat>> {
    Mat::new_rows_cols_with_bytes::<Vec3b>(img.height as i32, img.width as i32, &img.data)
        .context("cannot wrap the image for OpenCV")
}

fn from_mat(m: &Mat) -> anyhow::Result<BgrImage> {
    Ok(BgrImage::new(
        m.cols() as u32,
        m.rows() as u32,
        m.data_bytes()?.to_vec(),
    ))
}

pub fn resize(img: &BgrImage, width: u32, height: u32) -> anyhow::Result<BgrImage> {
    if img.width == width && img.height == height {
        return Ok(img.clone());
    }
    from_mat(&resize_mat(
        &as_mat(img)?,
        width,
        height,
        width < img.width,
    )?)
}

/// OpenCV's resize: area-averaged when shrinking, which keeps small text
/// free of aliasing; linear when growing.
fn resize_mat(
    src: &impl opencv::core::ToInputArray,
    width: u32,
    height: u32,
    shrinking: bool,
) -> anyhow::Result<Mat> {
    let mut dst = Mat::default();
    opencv::imgproc::resize(
        src,
        &mut dst,
        Size::new(width as i32, height as i32),
        0.0,
        0.0,
        if shrinking {
            opencv::imgproc::INTER_AREA
        } else {
            opencv::imgproc::INTER_LINEAR
        },
    )?;
    Ok(dst)
}

/// Resizes an I420 frame to a `width`×`height` BGR image: each plane is
/// resized on its own (area-averaged when shrinking, as [`resize`] does),
/// then the small result is converted.
pub fn resize_i420(img: &I420Image, width: u32, height: u32) -> anyhow::Result<BgrImage> {
    // I420 wants even sizes: an odd last column or row is cut after
    // converting. The luma is scaled to the size asked and its edge
    // repeated into that column or row, not scaled one pixel larger:
    // callers map points back by width / frame width, and an 1520-row
    // frame letterboxed to 181 rows, scaled to 182, put plates 8 pixels low.
    let (ew, eh) = (width.div_ceil(2) * 2, height.div_ceil(2) * 2);
    let shrinking = ew < img.width;
    let mut data = Vec::with_capacity((ew * eh * 3 / 2) as usize);
    let luma =
        Mat::new_rows_cols_with_bytes::<u8>(img.height as i32, img.width as i32, img.planes()[0])
            .context("cannot wrap the frame for OpenCV")?;
    let luma = resize_mat(&luma, width, height, shrinking)?;
    let luma = luma.data_bytes()?;
    for y in 0..eh as usize {
        let row = &luma[y.min(height as usize - 1) * width as usize..][..width as usize];
        data.extend_from_slice(row);
        if ew > width {
            data.push(row[row.len() - 1]);
        }
    }
    for plane in [1, 2] {
        let src = Mat::new_rows_cols_with_bytes::<u8>(
            (img.height / 2) as i32,
            (img.width / 2) as i32,
            img.planes()[plane],
        )
        .context("cannot wrap the frame for OpenCV")?;
        data.extend_from_slice(resize_mat(&src, ew / 2, eh / 2, shrinking)?.data_bytes()?);
    }
    let bgr = I420Image::new(ew, eh, data).to_bgr()?;
    if (ew, eh) == (width, height) {
        return Ok(bgr);
    }
    let mut cut = Vec::with_capacity((width * height * 3) as usize);
    crate::ingest::append_rows(
        &mut cut,
        &bgr.data,
        (ew * 3) as usize,
        (width * 3) as usize,
        height as usize,
    );
    Ok(BgrImage::new(width, height, cut))
}

/// The part of an I420 frame inside `[x1, y1, x2, y2]` (clamped to the
/// frame, widened to even pixels) as BGR, with the position of its top-left
/// corner in the frame.
pub fn region_i420(img: &I420Image, rect: [f32; 4]) -> anyhow::Result<(BgrImage, [u32; 2])> {
    let clamp = |v: f32, max: u32| (v.max(0.0) as u32).min(max);
    let (x1, y1) = (
        clamp(rect[0], img.width) & !1,
        clamp(rect[1], img.height) & !1,
    );
    let x2 = clamp(rect[2].ceil(), img.width).div_ceil(2) * 2;
    let y2 = clamp(rect[3].ceil(), img.height).div_ceil(2) * 2;
    if x2 <= x1 || y2 <= y1 {
        return Err(anyhow::anyhow!(
            "region {rect:?} lies outside the {}x{} frame",
            img.width,
            img.height
        ));
    }
    let (w, h) = ((x2 - x1) as usize, (y2 - y1) as usize);
    let mut data = Vec::with_capacity(w * h * 3 / 2);
    for (plane, scale) in [(0, 1), (1, 2), (2, 2)] {
        let stride = img.width as usize / scale;
        let (x, y) = (x1 as usize / scale, y1 as usize / scale);
        crate::ingest::append_rows(
            &mut data,
            &img.planes()[plane][y * stride + x..],
            stride,
            w / scale,
            h / scale,
        );
    }
    Ok((I420Image::new(w as u32, h as u32, data).to_bgr()?, [x1, y1]))
}

/// Where the image landed inside a letterboxed square. The scale is
/// each axis's own: sizes are whole pixels, so the two differ slightly
/// from the aspect-keeping one (188 rows for 1520 is not 320 / 2592).
#[derive(Debug, Clone, Copy)]
pub struct Letterbox {
    pub scale_x: f32,
    pub scale_y: f32,
    pub pad_x: f32,
    pub pad_y: f32,
}

impl Letterbox {
    /// Maps a point of the letterboxed input back to the original image.
    pub fn unmap(&self, x: f32, y: f32) -> [f32; 2] {
        [
            (x - self.pad_x) / self.scale_x,
            (y - self.pad_y) / self.scale_y,
        ]
    }
}

/// Scales the frame to fit a `size`×`size` square, keeping its aspect
/// ratio, centred on a black background.
pub fn letterbox(img: &I420Image, size: u32) -> anyhow::Result<(BgrImage, Letterbox)> {
    let scale = (size as f32 / img.width as f32).min(size as f32 / img.height as f32);
    let w = ((img.width as f32 * scale).round() as u32).clamp(1, size);
    let h = ((img.height as f32 * scale).round() as u32).clamp(1, size);
    let resized = resize_i420(img, w, h)?;
    let pad_x = (size - w) / 2;
    let pad_y = (size - h) / 2;
    let mut data = vec![0u8; (size * size * 3) as usize];
    let row = (w * 3) as usize;
    for y in 0..h as usize {
        let dst = ((y + pad_y as usize) * size as usize + pad_x as usize) * 3;
        data[dst..dst + row].copy_from_slice(&resized.data[y * row..(y + 1) * row]);
    }
    Ok((
        BgrImage::new(size, size, data),
        Letterbox {
            scale_x: w as f32 / img.width as f32,
            scale_y: h as f32 / img.height as f32,
            pad_x: pad_x as f32,
            pad_y: pad_y as f32,
        },
    ))
}

/// Warps the quadrilateral `corners` (top-left, top-right, bottom-right,
/// bottom-left) to an upright `width`×`height` image.
pub fn warp_quad(
    img: &BgrImage,
    corners: &[[f32; 2]; 4],
    width: u32,
    height: u32,
) -> anyhow::Result<BgrImage> {
    let src = as_mat(img)?;
    let from: Vector<Point2f> = corners.iter().map(|p| Point2f::new(p[0], p[1])).collect();
    let (w, h) = (width as f32, height as f32);
    let to: Vector<Point2f> = [[0.0, 0.0], [w, 0.0], [w, h], [0.0, h]]
        .iter()
        .map(|p: &[f32; 2]| Point2f::new(p[0], p[1]))
        .collect();
    let m = opencv::imgproc::get_perspective_transform(&from, &to, opencv::core::DECOMP_LU)?;
    let mut dst = Mat::default();
    opencv::imgproc::warp_perspective(
        &src,
        &mut dst,
        &m,
        Size::new(width as i32, height as i32),
        opencv::imgproc::INTER_LINEAR,
        opencv::core::BORDER_REPLICATE,
        Scalar::default(),
    )?;
    from_mat(&dst)
}

/// Focus measure: the variance of the Laplacian of the grey image. A sharp
/// plate crop scores in the hundreds, a motion-blurred one in the tens, so
/// votes from sharp frames can count for more.
pub fn sharpness(img: &BgrImage) -> anyhow::Result<f32> {
    let src = as_mat(img)?;
    let mut grey = Mat::default();
    opencv::imgproc::cvt_color_def(&src, &mut grey, opencv::imgproc::COLOR_BGR2GRAY)?;
    let mut lap = Mat::default();
    opencv::imgproc::laplacian_def(&grey, &mut lap, opencv::core::CV_32F)?;
    let mut mean = Mat::default();
    let mut std = Mat::default();
    opencv::core::mean_std_dev_def(&lap, &mut mean, &mut std)?;
    let s = *std.at_2d::<f64>(0, 0)?;
    Ok((s * s) as f32)
}

/// Fills an NCHW float tensor (batch of one) from a BGR image, as
/// `value * scale` per channel, in RGB or BGR order.
pub fn to_nchw(img: &BgrImage, rgb: bool, scale: f32) -> ndarray::Array4<f32> {
    let (w, h) = (img.width as usize, img.height as usize);
    let mut t = ndarray::Array4::<f32>::zeros((1, 3, h, w));
    let order = if rgb { [2, 1, 0] } else { [0, 1, 2] };
    {
        let slice = t.as_slice_mut().expect("fresh array is contiguous");
        let plane = w * h;
        for (i, px) in img.data.chunks_exact(3).enumerate() {
            for (c, &src) in order.iter().enumerate() {
                slice[c * plane + i] = px[src] as f32 * scale;
            }
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gradient(w: u32, h: u32) -> BgrImage {
        let mut data = Vec::new();
        for y in 0..h {
            for x in 0..w {
                data.extend_from_slice(&[x as u8, y as u8, 128]);
            }
        }
        BgrImage::new(w, h, data)
    }

    #[test]
    fn letterbox_centres_and_unmaps() {
        let frame = I420Image::from_bgr(&gradient(200, 100)).unwrap();
        let (out, lb) = letterbox(&frame, 100).unwrap();
        assert_eq!((out.width, out.height), (100, 100));
        assert_eq!(
            (lb.scale_x, lb.scale_y, lb.pad_x, lb.pad_y),
            (0.5, 0.5, 0.0, 25.0)
        );
        assert_eq!(out.pixel(50, 10), [0, 0, 0], "padding is black");
        let [x, y] = lb.unmap(50.0, 75.0);
        assert_eq!((x, y), (100.0, 100.0));
    }

    /// Frame sizes whose letterboxed height comes out odd (4 MP sensors,
    /// 1088-row encodes): a bright band must map back to where it is.
    #[test]
    fn letterbox_unmaps_exactly_at_odd_heights() {
        for (fw, fh) in [(2688u32, 1520u32), (2592, 1520), (1920, 1088)] {
            let mut bgr = vec![40u8; (fw * fh * 3) as usize];
            for y in fh - 120..fh - 80 {
                bgr[(y * fw * 3) as usize..((y + 1) * fw * 3) as usize].fill(230);
            }
            let frame = I420Image::from_bgr(&BgrImage::new(fw, fh, bgr)).unwrap();
            let (out, lb) = letterbox(&frame, 320).unwrap();
            let (mut mass, mut moment) = (0.0f32, 0.0f32);
            for y in 0..320 {
                let v = (out.pixel(160, y)[0] as f32 - 40.0).max(0.0);
                mass += v;
                moment += v * (y as f32 + 0.5);
            }
            let centre = lb.unmap(160.0, moment / mass)[1];
            assert!(
                (centre - (fh - 100) as f32).abs() < 1.5,
                "{fw}x{fh}: the band's centre maps to {centre}, not {}",
                fh - 100
            );
        }
    }

    #[test]
    fn warp_of_axis_aligned_quad_is_a_crop() {
        let img = gradient(100, 100);
        let out = warp_quad(
            &img,
            &[[10.0, 20.0], [50.0, 20.0], [50.0, 40.0], [10.0, 40.0]],
            40,
            20,
        )
        .unwrap();
        assert_eq!((out.width, out.height), (40, 20));
        assert_eq!(out.pixel(0, 0), [10, 20, 128]);
        assert_eq!(out.pixel(39, 19), [49, 39, 128]);
    }

    /// A frame converted whole and then shrunk, and one shrunk plane by
    /// plane, differ by rounding and chroma siting only; a region cut from
    /// the frame has exactly the whole frame's pixels.
    #[test]
    fn i420_shrinks_and_regions_match_the_whole_frame() {
        let mut data = Vec::new();
        for y in 0..120u32 {
            for x in 0..200u32 {
                data.extend_from_slice(&[((x + y) / 2) as u8, (2 * y) as u8, 200 - (x / 2) as u8]);
            }
        }
        let frame = I420Image::from_bgr(&BgrImage::new(200, 120, data)).unwrap();
        let whole = frame.to_bgr().unwrap();
        let close = |a: &BgrImage, b: &BgrImage| {
            assert_eq!((a.width, a.height), (b.width, b.height));
            let worst = a
                .data
                .iter()
                .zip(&b.data)
                .map(|(p, q)| p.abs_diff(*q))
                .max();
            assert!(worst.unwrap() <= 10, "differ by {worst:?}");
        };
        close(
            &resize_i420(&frame, 67, 41).unwrap(),
            &resize(&whole, 67, 41).unwrap(),
        );
        close(
            &resize_i420(&frame, 100, 60).unwrap(),
            &resize(&whole, 100, 60).unwrap(),
        );
        let (region, [x, y]) = region_i420(&frame, [31.5, 11.2, 80.3, 50.0]).unwrap();
        assert_eq!([x, y, region.width, region.height], [30, 10, 52, 40]);
        for (rx, ry) in [(0, 0), (51, 39), (20, 17)] {
            assert_eq!(region.pixel(rx, ry), whole.pixel(x + rx, y + ry));
        }
        let (edge, at) = region_i420(&frame, [-5.0, 100.0, 20.0, 500.0]).unwrap();
        assert_eq!((at, edge.width, edge.height), ([0, 100], 20, 20));
        assert!(region_i420(&frame, [300.0, 0.0, 400.0, 10.0]).is_err());
    }

    #[test]
    fn blur_lowers_sharpness() {
        let mut data = Vec::new();
        for y in 0..64u32 {
            for x in 0..128u32 {
                let v = if (x / 8 + y / 8) % 2 == 0 { 255 } else { 0 };
                data.extend_from_slice(&[v, v, v]);
            }
        }
        let sharp = BgrImage::new(128, 64, data);
        let blurred = resize(&resize(&sharp, 32, 16).unwrap(), 128, 64).unwrap();
        assert!(sharpness(&sharp).unwrap() > 4.0 * sharpness(&blurred).unwrap());
    }

    #[test]
    fn nchw_swaps_to_rgb() {
        let img = BgrImage::new(1, 1, vec![1, 2, 3]);
        let t = to_nchw(&img, true, 1.0);
        assert_eq!(t.as_slice().unwrap(), &[3.0, 2.0, 1.0]);
    }
}
