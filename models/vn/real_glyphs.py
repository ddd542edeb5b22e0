"""Character bitmaps cut from the real training crops, for synthetic plates in the real plate font.

  python real_glyphs.py harvest [--demo work/glyphs.png]   # -> work/real_glyphs.npz

The synthetic plates draw DejaVu glyphs squeezed to the plate's proportions; the real plate font
differs most where the CCTV reads fail (a 7 at 9 px, a flat-topped 2). Two-line motorbike crops of
the cleaned real set (training split only, never the held-out tenth, never the CCTV test crops) whose
label has 9 characters (`59KA19166`: province, 2-character series, 5 digits) are binarised; where
the top line splits into exactly 4 character-sized blobs and the bottom one into exactly 5 (the dash
and the dot are too flat to count), each blob is kept as an ink map labelled with its character.
Crops that do not split cleanly are skipped, so a label error or a merged pair costs a crop, not a
wrong glyph.
"""
import argparse
import os

import cv2
import numpy as np

import train_ocr
from common import WORK

GLYPHS_NPZ = os.path.join(WORK, "real_glyphs.npz")


def blobs(line):
    """Character-sized blobs of one line (grey, ink dark), left to right: (x, y, w, h)."""
    h = line.shape[0]
    _, ink = cv2.threshold(line, 0, 255, cv2.THRESH_BINARY_INV + cv2.THRESH_OTSU)
    n, _, stats, _ = cv2.connectedComponentsWithStats(ink, connectivity=8)
    out = []
    for x, y, w, bh, area in stats[1:n]:
        if 0.45 * h <= bh <= 0.98 * h and 0.12 * bh <= w <= 0.95 * bh and area >= 0.12 * w * bh:
            out.append((x, y, w, bh))
    return sorted(out)


def ink_map(grey, box):
    """The blob's box as ink (255) on nothing (0), from the grey levels around it."""
    x, y, w, h = box
    g = grey[y:y + h, x:x + w].astype(np.float32)
    paper, ink = np.percentile(g, 90), np.percentile(g, 8)
    if paper - ink < 25:
        return None
    return np.clip((paper - g) / (paper - ink) * 255, 0, 255).astype(np.uint8)


def harvest(demo=None):
    real = train_ocr.load_real()["train"]
    glyphs = {}
    used = skipped = 0
    for im, label in real:
        h, w = im.shape[:2]
        if w / h >= 2.2 or len(label) != 9 or not label[4:].isdigit():
            continue
        grey = cv2.cvtColor(im, cv2.COLOR_RGB2GRAY)
        # the plate's own rows: trim the 8 % border the crops carry, then split at the middle
        y0, y1 = int(0.06 * h), int(0.94 * h)
        mid = (y0 + y1) // 2
        found = []
        for (a, b), chars in (((y0, mid), label[:4]), ((mid, y1), label[4:])):
            line = grey[a:b]
            bs = blobs(line)
            if len(bs) != len(chars):
                break
            found += [(c, (x, y + a, bw, bh)) for c, (x, y, bw, bh) in zip(chars, bs)]
        else:
            maps = [(c, ink_map(grey, box)) for c, box in found]
            if all(m is not None for _, m in maps):
                used += 1
                for c, m in maps:
                    glyphs.setdefault(c, []).append(m)
                continue
        skipped += 1
    flat = [(c, m) for c, ms in sorted(glyphs.items()) for m in ms]
    np.savez_compressed(GLYPHS_NPZ, chars=np.array([c for c, _ in flat]),
                        glyphs=np.array([m for _, m in flat], dtype=object), allow_pickle=True)
    print("crops used %d, skipped %d; glyphs per character: %s"
          % (used, skipped, " ".join("%s:%d" % (c, len(ms)) for c, ms in sorted(glyphs.items()))))
    if demo:
        rows = []
        for c, ms in sorted(glyphs.items()):
            cells = [cv2.resize(m, (24, 40)) for m in ms[:30]]
            row = np.zeros((40, 30 * 26), np.uint8)
            for i, cell in enumerate(cells):
                row[:, i * 26:i * 26 + 24] = cell
            rows.append(row)
        cv2.imwrite(demo, np.vstack(rows))


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("cmd", choices=["harvest"])
    ap.add_argument("--demo", default=None, help="also write a montage: one row of glyphs per character")
    a = ap.parse_args()
    harvest(a.demo)
