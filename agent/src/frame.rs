//! The plain image types between the stages. A camera's decoded picture
//! stays in the decoder's own I420 while it is passed on and held (by a
//! track, by a pending evidence package): half the bytes of BGR. It
//! becomes packed 8-bit BGR only while it is analysed or written out; BGR
//! because OpenCV and YuNet want it, and models that want RGB swap channels
//! while they fill their input tensor.

use anyhow::anyhow;

#[derive(Clone)]
pub struct BgrImage {
    pub width: u32,
    pub height: u32,
    /// `width * height * 3` bytes.
    pub data: Vec<u8>,
}

impl std::fmt::Debug for BgrImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BgrImage({}x{})", self.width, self.height)
    }
}

impl BgrImage {
    pub fn new(width: u32, height: u32, data: Vec<u8>) -> Self {
        assert_eq!(
            data.len(),
            width as usize * height as usize * 3,
            "BGR buffer size"
        );
        Self {
            width,
            height,
            data,
        }
    }

    /// Decodes a JPEG or PNG file. The error names the file.
    pub fn open(path: &std::path::Path) -> anyhow::Result<Self> {
        use anyhow::Context;
        let img = image::ImageReader::open(path)
            .with_context(|| format!("cannot open image {}", path.display()))?
            .with_guessed_format()
            .with_context(|| format!("cannot read image {}", path.display()))?
            .decode()
            .with_context(|| format!("{} is not a readable JPEG or PNG image", path.display()))?
            .to_rgb8();
        let (width, height) = img.dimensions();
        let mut data = img.into_raw();
        swap_red_blue(&mut data);
        Ok(Self::new(width, height, data))
    }

    pub fn pixel(&self, x: u32, y: u32) -> [u8; 3] {
        let i = (y as usize * self.width as usize + x as usize) * 3;
        [self.data[i], self.data[i + 1], self.data[i + 2]]
    }
}

/// BGR to RGB and back: the same swap either way.
fn swap_red_blue(pixels: &mut [u8]) {
    for px in pixels.chunks_exact_mut(3) {
        px.swap(0, 2);
    }
}

/// A decoded picture in I420: the luma plane, then the two quarter-size
/// chroma planes, each packed without row padding. Width and height are
/// even (a decoder's odd last column or row carries no colour of its own).
#[derive(Clone)]
pub struct I420Image {
    pub width: u32,
    pub height: u32,
    /// `width * height * 3 / 2` bytes.
    pub data: Vec<u8>,
}

impl std::fmt::Debug for I420Image {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "I420Image({}x{})", self.width, self.height)
    }
}

impl I420Image {
    pub fn new(width: u32, height: u32, data: Vec<u8>) -> Self {
        assert!(
            width.is_multiple_of(2) && height.is_multiple_of(2),
            "I420 size must be even"
        );
        assert_eq!(
            data.len(),
            width as usize * height as usize * 3 / 2,
            "I420 buffer size"
        );
        Self {
            width,
            height,
            data,
        }
    }

    /// Converts a BGR image (a JPEG or PNG file given to `matthan detect` or
    /// `eval`) to the form a camera's frames have, so that files and cameras
    /// are analysed alike. An odd last column or row is dropped.
    pub fn from_bgr(img: &BgrImage) -> anyhow::Result<Self> {
        use opencv::core::{Mat, Rect, Vec3b};
        use opencv::prelude::*;

        let (w, h) = (img.width & !1, img.height & !1);
        if w == 0 || h == 0 {
            return Err(anyhow!(
                "image of {}x{} is too small",
                img.width,
                img.height
            ));
        }
        let src =
            Mat::new_rows_cols_with_bytes::<Vec3b>(img.height as i32, img.width as i32, &img.data)?;
        let even = Mat::roi(&src, Rect::new(0, 0, w as i32, h as i32))?;
        let mut yuv = Mat::default();
        opencv::imgproc::cvt_color_def(&even, &mut yuv, opencv::imgproc::COLOR_BGR2YUV_I420)?;
        Ok(Self::new(w, h, yuv.data_bytes()?.to_vec()))
    }

    /// The luma plane and the two chroma planes.
    pub fn planes(&self) -> [&[u8]; 3] {
        let luma = self.width as usize * self.height as usize;
        let (y, chroma) = self.data.split_at(luma);
        let (u, v) = chroma.split_at(luma / 4);
        [y, u, v]
    }

    /// Converts to packed BGR (BT.601, as decoders output), written straight
    /// into the image's own buffer.
    pub fn to_bgr(&self) -> anyhow::Result<BgrImage> {
        use opencv::core::{Mat, Vec3b};
        use opencv::prelude::*;

        let (w, h) = (self.width as usize, self.height as usize);
        if w == 0 || h == 0 {
            return Err(anyhow!("frame of {w}x{h} is empty"));
        }
        let yuv = Mat::new_rows_cols_with_bytes::<u8>((h * 3 / 2) as i32, w as i32, &self.data)?;
        let mut bgr = vec![0u8; w * h * 3];
        let target = bgr.as_ptr();
        {
            let mut out = Mat::new_rows_cols_with_bytes_mut::<Vec3b>(h as i32, w as i32, &mut bgr)?;
            opencv::imgproc::cvt_color_def(&yuv, &mut out, opencv::imgproc::COLOR_YUV2BGR_I420)?;
            // OpenCV writes into a destination of the right size and type in
            // place; if it ever allocated its own, the image would stay black.
            if out.data() != target {
                return Err(anyhow!("colour conversion did not write in place"));
            }
        }
        Ok(BgrImage::new(self.width, self.height, bgr))
    }
}
