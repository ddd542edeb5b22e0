"""Synthetic Vietnamese licence plates: renderer + compositor.

Used by train_det.py (plates pasted on real frames, exact 4 corners) and
train_ocr.py (warped, blurred, down-scaled crops that look like CCTV crops).

Layouts (Circular 58/2020 style, simplified):
  * motorbike 2-line white square (190x140 mm): "59-KA" / "191.66", "59-X3" / "123.45"
  * car 1-line long (520x110 mm): "51G-123.45" (white, yellow or blue background)
  * car 2-line (330x165 mm): "51G" / "123.45"
Font: DejaVu Sans Condensed Bold (Debian fonts-dejavu-core), squeezed horizontally.
Label strings are written without separators: 59KA19166.

Run `python synth.py --demo OUT_DIR` to write a few samples for a look.
"""
import os
import random
import sys

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

FONT_CANDIDATES = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSansCondensed-Bold.ttf",
    "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",
]
FONT_PATH = next((p for p in FONT_CANDIDATES if os.path.exists(p)), None)
FONT_REGULAR = "/usr/share/fonts/truetype/dejavu/DejaVuSansCondensed.ttf"  # thinner strokes, like real plates
if not os.path.exists(FONT_REGULAR):
    FONT_REGULAR = FONT_PATH
_font_cache = {}

LETTERS = "ABCDEFGHKLMNPRSTUVXYZ"  # letters used in VN series (no I, J, O, Q, R, W)
DIGITS = "0123456789"


def font(size, path=None):
    path = path or FONT_PATH
    if (size, path) not in _font_cache:
        _font_cache[(size, path)] = ImageFont.truetype(path, size)
    return _font_cache[(size, path)]


def rand_province():
    return "%02d" % random.choice(list(range(11, 100)))


def rand_plate_text(kind):
    """Returns (lines, label). kind in moto, car1, car2."""
    prov = rand_province()
    if kind == "moto":
        r = random.random()
        if r < 0.8:
            series = random.choice(LETTERS) + random.choice(DIGITS[1:])  # X3
        elif r < 0.9:
            series = random.choice(LETTERS) + random.choice(LETTERS.replace("Z", ""))  # KA
        else:
            series = random.choice(LETTERS) + random.choice(DIGITS)
        if random.random() < 0.8:
            num = "".join(random.choice(DIGITS) for _ in range(5))
            bottom = num[:3] + "." + num[3:]
        else:
            num = "".join(random.choice(DIGITS) for _ in range(4))
            bottom = num
        top = prov + "-" + series
        return [top, bottom], prov + series + num
    series = random.choice(LETTERS)
    if random.random() < 0.05:
        series += random.choice(LETTERS.replace("Z", ""))
    if random.random() < 0.75:
        num = "".join(random.choice(DIGITS) for _ in range(5))
        numtxt = num[:3] + "." + num[3:]
    else:
        num = "".join(random.choice(DIGITS) for _ in range(4))
        numtxt = num
    if kind == "car1":
        return [prov + series + "-" + numtxt], prov + series + num
    return [prov + series + random.choice(["", "-"]), numtxt], prov + series + num


def _colors(kind):
    if kind == "moto":
        bg = random.choice([(235, 235, 230), (250, 250, 250), (215, 215, 205), (240, 238, 225)])
        return bg, (15, 15, 15)
    r = random.random()
    if r < 0.6:
        return random.choice([(238, 238, 235), (250, 250, 250), (220, 222, 220)]), (15, 15, 15)
    if r < 0.85:
        return random.choice([(245, 200, 40), (235, 190, 30), (250, 210, 60)]), (15, 15, 15)
    return random.choice([(30, 60, 160), (20, 50, 140)]), (240, 240, 240)


def _draw_line(text, height, width, fpath=None):
    """Renders one text line, squeezed to fit width x height. Returns L image (255 = ink)."""
    size = int(height * 1.15)
    f = font(size, fpath)
    bbox = f.getbbox(text)
    tw, th = bbox[2] - bbox[0], bbox[3] - bbox[1]
    im = Image.new("L", (tw + 4, th + 4), 0)
    ImageDraw.Draw(im).text((2 - bbox[0], 2 - bbox[1]), text, font=f, fill=255)
    # squeeze/stretch to target
    tw2 = min(width, int(tw * height / max(th, 1) * random.uniform(0.8, 1.05)))
    return im.resize((max(tw2, 4), height), Image.BILINEAR)


def render_plate(kind=None, scale=1.0):
    """Renders a flat plate. Returns (rgb uint8 HxWx3, label, layout) where layout 1 = 1-line, 2 = 2-line."""
    if kind is None:
        kind = random.choices(["moto", "car1", "car2"], [0.55, 0.3, 0.15])[0]
    lines, label = rand_plate_text(kind)
    bg, fg = _colors(kind)
    if kind == "moto":
        W, H = 190, 140
    elif kind == "car1":
        W, H = 470, 110
    else:
        W, H = 280, 165
    W, H = int(W * scale), int(H * scale)
    fpath = FONT_REGULAR if random.random() < 0.4 else FONT_PATH
    im = Image.new("RGB", (W, H), bg)
    d = ImageDraw.Draw(im)
    bw = max(2, int(min(W, H) * random.uniform(0.025, 0.045)))
    d.rectangle([bw // 2, bw // 2, W - 1 - bw // 2, H - 1 - bw // 2], outline=fg, width=bw)
    margin = bw + int(0.04 * H)
    if len(lines) == 1:
        lh = int(H * random.uniform(0.62, 0.72))
        ln = _draw_line(lines[0], lh, W - 2 * margin, fpath)
        x = (W - ln.width) // 2
        y = (H - lh) // 2
        im.paste(Image.new("RGB", ln.size, fg), (x, y), ln)
    else:
        gap = int(H * random.uniform(0.04, 0.08))
        lh = (H - 2 * margin - gap) // 2
        lh = int(lh * random.uniform(0.88, 0.98))
        y0 = (H - 2 * lh - gap) // 2
        for i, t in enumerate(lines):
            ln = _draw_line(t, lh, W - 2 * margin, fpath)
            x = (W - ln.width) // 2
            im.paste(Image.new("RGB", ln.size, fg), (x, y0 + i * (lh + gap)), ln)
    arr = np.asarray(im).copy()
    # subtle dirt / shading
    if random.random() < 0.5:
        g = np.linspace(random.uniform(0.7, 1.0), random.uniform(0.85, 1.1), W)[None, :, None]
        arr = np.clip(arr * g, 0, 255).astype(np.uint8)
    return arr, label, (1 if len(lines) == 1 else 2)


def random_quad(w, h, max_skew=0.15):
    """Random near-frontal quadrilateral for a w x h plate, in its own coordinates (TL, TR, BR, BL)."""
    src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    j = max_skew
    dst = src.copy()
    dst[:, 0] += np.random.uniform(-j, j, 4) * w * 0.5
    dst[:, 1] += np.random.uniform(-j, j, 4) * h * 0.5
    # rotation
    a = np.deg2rad(np.random.uniform(-12, 12))
    c, s = np.cos(a), np.sin(a)
    ctr = dst.mean(0)
    dst = (dst - ctr) @ np.float32([[c, s], [-s, c]]) + ctr
    dst -= dst.min(0)
    return src, dst.astype(np.float32)


def degrade(img, strength=1.0):
    """Photometric degradations: blur, noise, darkening (night), JPEG."""
    img = img.astype(np.float32)
    if random.random() < 0.35 * strength:  # night
        img = img * random.uniform(0.25, 0.6) + random.uniform(0, 15)
    else:
        img = img * random.uniform(0.7, 1.2) + random.uniform(-25, 25)
    if random.random() < 0.3:  # colour cast
        img = img * np.random.uniform(0.85, 1.15, 3)[None, None, :]
    if random.random() < 0.6 * strength:
        img = img + np.random.normal(0, random.uniform(2, 12), img.shape)
    img = np.clip(img, 0, 255).astype(np.uint8)
    if random.random() < 0.5 * strength:
        k = random.choice([3, 3, 5])
        img = cv2.GaussianBlur(img, (k, k), random.uniform(0.3, 1.5))
    if random.random() < 0.3 * strength:  # motion blur
        k = random.randint(3, 7)
        ker = np.zeros((k, k), np.float32)
        ker[k // 2, :] = 1.0 / k
        M = cv2.getRotationMatrix2D((k / 2 - 0.5, k / 2 - 0.5), random.uniform(0, 180), 1.0)
        ker = cv2.warpAffine(ker, M, (k, k))
        ker /= max(ker.sum(), 1e-6)
        img = cv2.filter2D(img, -1, ker)
    if random.random() < 0.6:
        q = random.randint(25, 90)
        _, enc = cv2.imencode(".jpg", img[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, q])
        img = cv2.imdecode(enc, cv2.IMREAD_COLOR)[:, :, ::-1]
    return np.ascontiguousarray(img)


def ocr_sample(bg_pool=None, kind=None):
    """A synthetic OCR crop as uint8 RGB 64x128 and its label (mimics detector crops from CCTV)."""
    plate, label, layout = render_plate(kind, scale=random.uniform(0.6, 1.2))
    h, w = plate.shape[:2]
    src, dst = random_quad(w, h, max_skew=random.uniform(0.0, 0.18))
    # crop = quad bbox plus a margin of background
    mx = random.uniform(-0.03, 0.12) * w
    my = random.uniform(-0.03, 0.15) * h
    dst = dst + np.float32([mx, my])
    cw = int(dst[:, 0].max() + mx + random.uniform(-0.03, 0.12) * w)
    ch = int(dst[:, 1].max() + my + random.uniform(-0.03, 0.15) * h)
    if bg_pool is not None and len(bg_pool) and random.random() < 0.8:
        bg = random.choice(bg_pool)
        bh, bw_ = bg.shape[:2]
        sx, sy = random.randint(0, max(0, bw_ - 64)), random.randint(0, max(0, bh - 64))
        bg = cv2.resize(bg[sy:sy + 64, sx:sx + 64], (cw, ch))
    else:
        bg = np.full((ch, cw, 3), random.randint(0, 200), np.uint8)
    M = cv2.getPerspectiveTransform(src, dst)
    warped = cv2.warpPerspective(plate, M, (cw, ch), flags=cv2.INTER_LINEAR)
    mask = cv2.warpPerspective(np.full((h, w), 255, np.uint8), M, (cw, ch))
    out = np.where(mask[:, :, None] > 127, warped, bg)
    # tiny-crop simulation: down to 16-45 px high then back up
    r = random.random()
    if r < 0.75:
        th = random.randint(18, 45)
        tw = max(8, int(th * cw / ch * random.uniform(0.85, 1.15)))
        out = cv2.resize(out, (tw, th), interpolation=cv2.INTER_AREA)
        out = degrade(out, 0.6 if th < 26 else 1.0)
    else:
        out = degrade(out, 1.0)
    out = cv2.resize(out, (128, 64), interpolation=cv2.INTER_LINEAR)
    return out, label


def paste_plate(frame, plate, layout, target_w):
    """Pastes a warped plate on frame (RGB, modified in place). Returns (quad 4x2 in frame px, layout) or None."""
    H, W = frame.shape[:2]
    h, w = plate.shape[:2]
    s = target_w / w
    src, dst = random_quad(w * s, h * s, max_skew=random.uniform(0.0, 0.2))
    src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    bw, bh = dst[:, 0].max(), dst[:, 1].max()
    if bw >= W - 2 or bh >= H - 2:
        return None
    ox, oy = random.uniform(0, W - bw - 1), random.uniform(0, H - bh - 1)
    dst = dst + np.float32([ox, oy])
    x0, y0 = int(dst[:, 0].min()), int(dst[:, 1].min())
    x1, y1 = int(np.ceil(dst[:, 0].max())) + 1, int(np.ceil(dst[:, 1].max())) + 1
    M = cv2.getPerspectiveTransform(src, dst - np.float32([x0, y0]))
    pw, ph = x1 - x0, y1 - y0
    warped = cv2.warpPerspective(plate, M, (pw, ph), flags=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    mask = cv2.warpPerspective(np.full((h, w), 255, np.uint8), M, (pw, ph)).astype(np.float32)[:, :, None] / 255
    roi = frame[y0:y1, x0:x1].astype(np.float32)
    pw, ph = roi.shape[1], roi.shape[0]
    # match plate brightness to local scene a little
    lum = roi.mean() / 128.0
    pl = warped[:ph, :pw].astype(np.float32) * np.clip(random.uniform(0.6, 1.1) * (0.5 + 0.5 * lum), 0.3, 1.2)
    frame[y0:y1, x0:x1] = np.clip(roi * (1 - mask[:ph, :pw]) + pl * mask[:ph, :pw], 0, 255).astype(np.uint8)
    return dst, layout


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "--demo":
        out = sys.argv[2]
        os.makedirs(out, exist_ok=True)
        random.seed(1)
        np.random.seed(1)
        for i in range(12):
            p, lab, lay = render_plate()
            cv2.imwrite(os.path.join(out, "plate_%02d_%s.png" % (i, lab)), p[:, :, ::-1])
            c, lab = ocr_sample()
            cv2.imwrite(os.path.join(out, "ocr_%02d_%s.png" % (i, lab)), c[:, :, ::-1])
    else:
        print(__doc__)
