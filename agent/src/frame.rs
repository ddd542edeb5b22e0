//! The plain image type that ingest hands to inference: packed 8-bit BGR,
//! row after row, no padding. BGR because OpenCV and YuNet want it; models
//! that want RGB swap channels while they fill their input tensor.

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
