"""Synthetic Vietnamese licence plates: renderer + compositor.

Used by train_det.py (plates pasted on real frames, exact 4 corners) and
train_ocr.py (warped, blurred, down-scaled crops that look like CCTV crops).

Layouts (Circular 58/2020 style, simplified):
  * motorbike 2-line white square (190x140 mm): "59-KA" / "191.66", "59-X3" / "123.45"
  * car 1-line long (520x110 mm): "51G-123.45" (white, yellow or blue background)
  * car 2-line (330x165 mm): "51G" / "123.45"
  * special series (session 3): electric motorbike "29-MĐ1" / "234.56" (label 29MĐ123456, 10 chars),
    ~6 % of OCR samples; car "30TĐ-123.45" and "60LD-005.84", ~2 % each
Font: DejaVu Sans Condensed Bold / Mono Bold / Condensed (Debian fonts-dejavu-core). Plates are
drawn glyph by glyph in fixed-width cells, each glyph squeezed to height:width ~2:1 like the real
(condensed, tall) VN plate font, with a random stroke weight (`render_plate`). The previous
whole-line renderer is kept as `render_plate(..., style="line")`.
OCR crops (`ocr_sample`) mostly follow the street-CCTV path: warp, shrink to 22-48 px wide with
area interpolation, mild blur/noise, JPEG 25-70, then the agent's straight bilinear resize to 128x64.
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
# Province codes in use (Circular 58/2020 annex): 11-99 minus the unassigned 13, 42, 44, 45, 46, 87,
# 91, 96 (80 = central agencies, kept). Drawn uniformly, so codes with a 7 (17, 27, ..., 70-79, 97)
# are common; the old 11-99 draw was also uniform but the real training crops are mostly 5x/6x.
PROVINCES = ["%02d" % p for p in range(11, 100) if p not in (13, 42, 44, 45, 46, 87, 91, 96)]
# Series letter weights: Z is rare on real plates (and the model must not learn "Z" as a common
# series letter, CCTV crops made it read L2 as LZ); every other letter equally likely.
LETTER_W = [0.15 if c == "Z" else 1.0 for c in LETTERS]


def font(size, path=None):
    path = path or FONT_PATH
    if (size, path) not in _font_cache:
        _font_cache[(size, path)] = ImageFont.truetype(path, size)
    return _font_cache[(size, path)]


def rand_province():
    return random.choice(PROVINCES)


def rand_letter():
    return random.choices(LETTERS, LETTER_W)[0]


# Share of each layout's plates drawn with a special series: ocr_sample draws ~2/3 motorbike plates,
# so 9 % of them = ~6 % of OCR samples are electric motorbikes (MĐ); 6 % of car plates = ~2 % TĐ and
# ~2 % LD. FORCE_SPECIAL (None or True) makes every plate special (held-out synthetic Đ test set).
P_MD, P_TD, P_LD = 0.09, 0.06, 0.06
FORCE_SPECIAL = None


def _serial(p5):
    """4 or 5 digits: (label digits, as printed); a 5-digit serial prints as 123.45."""
    if random.random() < p5:
        num = "".join(random.choice(DIGITS) for _ in range(5))
        return num, num[:3] + "." + num[3:]
    num = "".join(random.choice(DIGITS) for _ in range(4))
    return num, num


def _car_text(kind, prov, series, num, numtxt):
    """(lines, label) of a 1-line (car1) or 2-line (car2) car plate."""
    if kind == "car1":
        return [prov + series + "-" + numtxt], prov + series + num
    return [prov + series + random.choice(["", "-"]), numtxt], prov + series + num


def _special_text(kind, prov):
    """MĐ (moto) / TĐ or LD (car) plates: (lines, label) or None."""
    force = FORCE_SPECIAL
    if kind == "moto":
        if not (force or random.random() < P_MD):
            return None
        d = random.choice(DIGITS[1:])
        num, bottom = _serial(0.8)
        return [prov + "-MĐ" + d, bottom], prov + "MĐ" + d + num
    r = random.random()
    if force:
        series = "TĐ" if r < 0.5 else "LD"
    elif r < P_TD:
        series = "TĐ"
    elif r < P_TD + P_LD:
        series = "LD"
    else:
        return None
    return _car_text(kind, prov, series, *_serial(0.75))


def rand_plate_text(kind):
    """Returns (lines, label). kind in moto, car1, car2."""
    prov = rand_province()
    sp = _special_text(kind, prov)
    if sp is not None:
        return sp
    if kind == "moto":
        r = random.random()
        if r < 0.85:
            series = rand_letter() + random.choice(DIGITS[1:])  # X3 (the usual moto series)
        elif r < 0.95:
            series = rand_letter() + random.choice(LETTERS.replace("Z", ""))  # KA
        else:
            series = rand_letter() + random.choice(DIGITS)
        num, bottom = _serial(0.8)
        top = prov + "-" + series
        return [top, bottom], prov + series + num
    series = rand_letter()
    if random.random() < 0.05:
        series += random.choice(LETTERS.replace("Z", ""))
    return _car_text(kind, prov, series, *_serial(0.75))


def _colors(kind):
    if kind == "moto":
        if random.random() < 0.08:
            return random.choice([(245, 200, 40), (235, 190, 30)]), (15, 15, 15)
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


GLYPH_FONTS = [  # (path, weight): condensed bold is closest to the plate font; mono bold has squarer digits
    ("/usr/share/fonts/truetype/dejavu/DejaVuSansCondensed-Bold.ttf", 0.55),
    ("/usr/share/fonts/truetype/dejavu/DejaVuSansMono-Bold.ttf", 0.3),
    ("/usr/share/fonts/truetype/dejavu/DejaVuSansCondensed.ttf", 0.15),
]
GLYPH_FONTS = [(p, w) for p, w in GLYPH_FONTS if os.path.exists(p)] or [(FONT_PATH, 1.0)]
# Glyphs cut from the real training crops (`real_glyphs.py harvest`): the real plate font, worn and
# printed as it is. Off unless asked for (`train_ocr.py train --real-glyphs 0.5`): tried in session 6
# and not kept (models/vn/README.md).
REAL = "real"
REAL_GLYPHS_NPZ = os.path.join(os.path.dirname(os.path.abspath(__file__)), "work", "real_glyphs.npz")
_glyph_cache = {}
_real = {}


def use_real_glyphs(share):
    """Draw `share` of the glyph-by-glyph plates from the harvested real glyphs."""
    global GLYPH_FONTS
    if share > 0:
        GLYPH_FONTS = [(p, w * (1 - share)) for p, w in GLYPH_FONTS if p != REAL] + [(REAL, share)]


def _real_glyph(ch):
    """A random real bitmap of `ch` and the median real '0' box, or None for characters never cut
    (letters outside motorbike series, Đ)."""
    if not _real:
        z = np.load(REAL_GLYPHS_NPZ, allow_pickle=True)
        for c, g in zip(z["chars"], z["glyphs"]):
            _real.setdefault(str(c), []).append(g)
        zeros = _real["0"]
        _real["ref"] = (int(np.median([g.shape[1] for g in zeros])), int(np.median([g.shape[0] for g in zeros])))
    if ch not in _real:
        return None
    return (random.choice(_real[ch]),) + _real["ref"]


def _glyph(ch, fpath):
    """Ink-tight bitmap (L, 255 = ink) of one character at ~100 px cap height, plus the font's
    reference digit box (w, h of '0') so that all glyphs of a font are squeezed by the same factor."""
    if fpath == REAL:
        return _real_glyph(ch) or _glyph(ch, FONT_PATH)
    key = (ch, fpath)
    if key not in _glyph_cache:
        f = font(128, fpath)
        out = []
        for c in (ch, "0"):
            # DejaVu Sans Mono's zero is dotted: at CCTV size it looks like an 8 and taught the model
            # to read real 8s as 0, so zeros always come from the plain condensed font
            fc = font(128, FONT_PATH) if (c == "0" and "Mono" in fpath) else f
            im = Image.new("L", (200, 200), 0)
            ImageDraw.Draw(im).text((30, 10), c, font=fc, fill=255)
            a = np.asarray(im)
            ys, xs = np.nonzero(a > 40)
            out.append(a[ys.min():ys.max() + 1, xs.min():xs.max() + 1])
        _glyph_cache[key] = (out[0], out[1].shape[1], out[1].shape[0])
    return _glyph_cache[key]


def _angular_two(rw, rh, fpath):
    """A '2' with a flat top and straight diagonal, as in the real plate font: at 4 px wide it looks
    like a Z, and DejaVu's round 2 never shows the model that shape labelled '2'."""
    key = ("2sq", fpath)
    if key not in _glyph_cache:
        t = max(3, int(rw * (0.2 if "Bold" in fpath else 0.14)))
        g = np.zeros((rh, rw), np.uint8)
        p = lambda x, y: (int(x * (rw - 1)), int(y * (rh - 1)))
        pts = np.array([p(0.08, 0.22), p(0.25, 0.04), p(0.75, 0.04), p(0.93, 0.2), p(0.93, 0.36), p(0.08, 0.93)], np.int32)
        cv2.polylines(g, [pts], False, 255, t, cv2.LINE_AA)
        g[rh - t:, :] = 255
        _glyph_cache[key] = g
    return _glyph_cache[key]


def _draw_line_cells(text, lh, max_w, fpath, aspect, morph, square_two=False, subst=None):
    """One text line drawn glyph by glyph into fixed-width cells (real VN plates are near monospaced).
    lh: cap height in px; aspect: glyph width / height (real font ~0.5); morph: stroke change in px
    at glyph-bitmap scale (+ = bolder, applied horizontally because squeezing thins vertical strokes).
    subst: {index: char} glyphs drawn as another character (label unchanged).
    Returns an L image (255 = ink) of height lh."""
    gw = max(2, int(round(lh * aspect)))
    gap = max(1, int(round(gw * random.uniform(0.15, 0.42))))  # real plates are spaced out
    widths = [gw if c.isalnum() else max(2, int(gw * (0.55 if c == "-" else 0.4))) for c in text]
    total = sum(widths) + gap * (len(text) - 1)
    if total > max_w:  # too long for the plate: squeeze cells, like a narrower font would
        f = max_w / total
        widths = [max(2, int(w * f)) for w in widths]
        gw, gap = max(2, int(gw * f)), max(1, int(gap * f))
        total = sum(widths) + gap * (len(text) - 1)
    line = np.zeros((lh, total), np.uint8)
    x = 0
    for i, (c, w) in enumerate(zip(text, widths)):
        if subst and i in subst:
            c = subst[i]
        if c == "-":
            t = max(1, int(lh * 0.09))
            y = lh // 2 - t // 2
            line[y:y + t, x + w // 6:x + w - w // 6] = 255
        elif c == ".":
            t = max(1, int(lh * 0.11))
            cx = x + w // 2
            line[lh - t:lh, max(0, cx - t // 2):cx - t // 2 + t] = 255
        else:
            g, rw, rh = _glyph(c, fpath)
            if c == "2" and square_two and fpath != REAL:
                g = _angular_two(rw, rh, fpath)
            if morph and fpath != REAL:  # real glyphs come in their own weights
                k = np.ones((1, abs(morph) + 1), np.uint8)
                g = cv2.dilate(g, k) if morph > 0 else cv2.erode(g, k)
            # same squeeze for every glyph: the reference '0' maps to gw x lh, narrower glyphs stay narrower
            sx, sy = gw / rw, lh / rh
            nw = max(1, min(w, int(round(g.shape[1] * sx))))
            nh = max(1, min(lh, int(round(g.shape[0] * sy))))
            gi = cv2.resize(g, (nw, nh), interpolation=cv2.INTER_AREA)
            ox = x + (w - nw) // 2
            line[lh - nh:lh, ox:ox + nw] = np.maximum(line[lh - nh:lh, ox:ox + nw], gi)
        x += w + gap
    return Image.fromarray(line)


def render_plate(kind=None, scale=1.0, style="cells"):
    """Renders a flat plate. Returns (rgb uint8 HxWx3, label, layout) where layout 1 = 1-line, 2 = 2-line.
    style "cells": condensed fixed-width glyphs (default); "line": the older whole-line DejaVu render."""
    if kind is None:
        kind = random.choices(["moto", "car1", "car2"], [0.55, 0.3, 0.15])[0]
    if style == "line":
        return _render_plate_line(kind, scale)
    lines, label = rand_plate_text(kind)
    bg, fg = _colors(kind)
    W, H = {"moto": (190, 140), "car1": (520, 110), "car2": (330, 165)}[kind]
    W, H = int(W * scale), int(H * scale)
    fpath = random.choices([p for p, _ in GLYPH_FONTS], [w for _, w in GLYPH_FONTS])[0]
    aspect = random.uniform(0.42, 0.56)  # glyph width/height; real plates ~0.5
    morph = random.choice([0, 0, 4, 8, 12, -4])
    sq2 = random.random() < 0.5
    im, bw = _plate_canvas(W, H, bg, fg, 0.02, min_border=1)
    margin_x = bw + int(0.05 * W)
    if len(lines) == 1:
        lh = int(H * random.uniform(0.6, 0.72))
        ln = _draw_line_cells(lines[0], lh, W - 2 * margin_x, fpath, aspect, morph, sq2)
        im.paste(Image.new("RGB", ln.size, fg), ((W - ln.width) // 2, (H - lh) // 2), ln)
    else:
        # two rows of nearly equal cap height (~37-41 % of the plate height each), small gap
        lh = int(H * random.uniform(0.35, 0.41))
        gap = int(H * random.uniform(0.06, 0.11))
        y0 = (H - 2 * lh - gap) // 2 + random.randint(-1, 1) * int(0.01 * H)
        for i, t in enumerate(lines):
            h_i = lh if i == 1 else int(lh * random.uniform(0.95, 1.0))
            # moto series digit "2" (77-L2) is sometimes drawn as a Z: on tiny CCTV crops the plate
            # font's 2 is indistinguishable from Z, and Z never occurs in that position on VN plates,
            # so the model should read that shape there as 2
            subst = {len(t) - 1: "Z"} if (kind == "moto" and i == 0 and t.endswith("2")
                                          and random.random() < 0.3) else None
            ln = _draw_line_cells(t, h_i, W - 2 * margin_x, fpath, aspect, morph, sq2, subst)
            yy = y0 + i * (lh + gap) + (lh - h_i)
            im.paste(Image.new("RGB", ln.size, fg), ((W - ln.width) // 2, yy), ln)
    arr = np.asarray(im).copy()
    if random.random() < 0.5:  # uneven lighting across the plate
        g = np.linspace(random.uniform(0.75, 1.0), random.uniform(0.85, 1.1), W)[None, :, None]
        arr = np.clip(arr * g, 0, 255).astype(np.uint8)
    return arr, label, (1 if len(lines) == 1 else 2)


def _plate_canvas(W, H, bg, fg, min_frac, min_border):
    """A blank plate with its printed border (2-4.5 % of the short side); returns it and the border width."""
    im = Image.new("RGB", (W, H), bg)
    bw = max(min_border, int(min(W, H) * random.uniform(min_frac, 0.045)))
    ImageDraw.Draw(im).rectangle([bw // 2, bw // 2, W - 1 - bw // 2, H - 1 - bw // 2], outline=fg, width=bw)
    return im, bw


def _render_plate_line(kind, scale):
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
    im, bw = _plate_canvas(W, H, bg, fg, 0.025, min_border=2)
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
        img = jpeg_roundtrip(img, random.randint(25, 90))
    return np.ascontiguousarray(img)


def jpeg_roundtrip(img, quality):
    """The RGB image as it comes back from a JPEG of that quality (camera and crop-store compression)."""
    _, enc = cv2.imencode(".jpg", img[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    return cv2.imdecode(enc, cv2.IMREAD_COLOR)[:, :, ::-1]


def degrade_cctv(img):
    """Mild degradations of a street-CCTV crop at its native (tiny) size: these cameras are mostly
    daylight and sharp-ish, the damage comes from resolution and JPEG, not from heavy blur."""
    img = img.astype(np.float32)
    if random.random() < 0.15:  # dusk / shade
        img = img * random.uniform(0.4, 0.7) + random.uniform(0, 15)
    else:
        img = img * random.uniform(0.75, 1.15) + random.uniform(-20, 20)
    if random.random() < 0.3:  # colour cast
        img = img * np.random.uniform(0.9, 1.1, 3)[None, None, :]
    if random.random() < 0.5:
        img = img + np.random.normal(0, random.uniform(1, 6), img.shape)
    img = np.clip(img, 0, 255).astype(np.uint8)
    if random.random() < 0.4:  # slight optical blur (sigma < 0.8 px at crop size)
        img = cv2.GaussianBlur(img, (3, 3), random.uniform(0.3, 0.8))
    if random.random() < 0.9:
        img = jpeg_roundtrip(img, random.randint(25, 70))
    return np.ascontiguousarray(img)


def cctv_size(layout):
    """Target (w, h) of a CCTV crop: 2-line plates 22-48 px wide (test median 34x27), 1-line wider."""
    if layout == 2:
        tw = random.randint(22, 48)
        return tw, max(12, int(round(tw / random.uniform(1.05, 1.5))))
    tw = random.randint(36, 90)
    return tw, max(10, int(round(tw / random.uniform(2.4, 4.5))))


def ocr_sample(bg_pool=None, kind=None, cctv_p=0.8):
    """A synthetic OCR crop as uint8 RGB 64x128 and its label.
    With probability cctv_p: the street-CCTV path (condensed glyphs, tight crop, shrink to 20-48 px
    wide with INTER_AREA, degrade_cctv incl. JPEG 25-70, straight bilinear resize to 128x64 as the
    agent does). Otherwise the older, larger and more varied path (18-45 px high, strong degrade)."""
    cctv = random.random() < cctv_p
    if kind is None:
        kind = random.choices(["moto", "car1", "car2"], [0.7, 0.15, 0.15] if cctv else [0.55, 0.3, 0.15])[0]
    plate, label, layout = render_plate(kind, scale=random.uniform(0.8, 1.3),
                                        style="cells" if (cctv or random.random() < 0.5) else "line")
    h, w = plate.shape[:2]
    src, dst = random_quad(w, h, max_skew=random.uniform(0.0, 0.15 if cctv else 0.18))
    # crop = quad bbox plus a margin of background (detector/crop boxes on CCTV are tight)
    lo, hi = (-0.02, 0.08) if cctv else (-0.03, 0.12)
    mx = random.uniform(lo, hi) * w
    my = random.uniform(lo, hi + 0.03) * h
    dst = dst + np.float32([mx, my])
    cw = int(dst[:, 0].max() + random.uniform(lo, hi) * w)
    ch = int(dst[:, 1].max() + random.uniform(lo, hi + 0.03) * h)
    cw, ch = max(cw, 8), max(ch, 8)
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
    if cctv:
        out = cv2.resize(out, cctv_size(layout), interpolation=cv2.INTER_AREA)
        out = degrade_cctv(out)
    elif random.random() < 0.75:  # older tiny-crop simulation: down to 18-45 px high then back up
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
