"""Draw the built-in characters' avatars (``characters/<name>/avatar.png``) with Pillow.

Run ``python apps/draw_avatars.py [NAME...]``.

Our own simple drawings, not copies of anyone's art; they are licensed with the character folders
(CC-BY-4.0). Drawn at 4× and scaled down for smooth edges; the output is deterministic.
"""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

SIZE = 256
SCALE = 4
ROOT = Path(__file__).resolve().parents[1] / "characters"


def _canvas(top: tuple, bottom: tuple) -> tuple[Image.Image, ImageDraw.ImageDraw, int]:
    n = SIZE * SCALE
    img = Image.new("RGB", (n, n))
    d = ImageDraw.Draw(img)
    for y in range(n):  # vertical gradient background
        t = y / (n - 1)
        d.line([(0, y), (n, y)], fill=tuple(round(a + (b - a) * t) for a, b in zip(top, bottom)))
    return img, d, SCALE


def _box(cx, cy, rx, ry, s):
    return [(cx - rx) * s, (cy - ry) * s, (cx + rx) * s, (cy + ry) * s]


def _eyes(d, s, y, gap, color, pupil=(30, 30, 40), r=11, shine=True):
    for cx in (128 - gap, 128 + gap):
        d.ellipse(_box(cx, y, r, r + 3, s), fill=(255, 255, 255))
        d.ellipse(_box(cx, y + 1, r - 3, r, s), fill=color)
        d.ellipse(_box(cx, y + 2, r - 7, r - 5, s), fill=pupil)
        if shine:
            d.ellipse(_box(cx - 3, y - 3, 2.5, 2.5, s), fill=(255, 255, 255))


def haruhi() -> Image.Image:
    """Short brown hair, the yellow ribbon headband, a confident grin; warm sunset colours."""
    img, d, s = _canvas((255, 214, 120), (246, 128, 72))
    d.ellipse(_box(128, 300, 110, 90, s), fill=(230, 236, 245))  # sailor uniform
    d.polygon([(c * s) for c in (88, 222, 128, 256, 168, 222)], fill=(40, 60, 120))  # collar
    d.rectangle(_box(128, 214, 18, 14, s), fill=(255, 230, 205))  # neck
    d.ellipse(_box(128, 126, 92, 98, s), fill=(122, 68, 40))  # hair, back
    d.ellipse(_box(128, 140, 66, 74, s), fill=(255, 230, 205))  # face
    d.pieslice(_box(128, 112, 74, 62, s), 180, 360, fill=(122, 68, 40))  # fringe
    for x in (86, 112, 140, 166):
        d.polygon([(x - 16) * s, 110 * s, (x + 16) * s, 110 * s, x * s, 136 * s], fill=(122, 68, 40))
    d.chord(_box(128, 70, 80, 26, s), 180, 360, fill=(255, 218, 40))  # the yellow ribbon headband
    d.rectangle([50 * s, 66 * s, 206 * s, 78 * s], fill=(255, 218, 40))
    d.polygon([(c * s) for c in (196, 70, 226, 50, 222, 92)], fill=(255, 200, 20))  # its bow
    _eyes(d, s, 146, 27, (150, 90, 40))
    for cx in (101, 155):  # eyebrows, raised
        d.line([(cx - 12) * s, 126 * s, (cx + 12) * s, 122 * s], fill=(90, 50, 30), width=4 * s)
    d.chord(_box(128, 176, 22, 14, s), 0, 180, fill=(200, 60, 70))  # the grin
    d.rectangle([108 * s, 174 * s, 148 * s, 178 * s], fill=(255, 255, 255))
    return img


def wukong() -> Image.Image:
    """The Monkey King: golden fur, the golden headband, a cheeky look; clouds behind."""
    img, d, s = _canvas((120, 180, 240), (250, 236, 200))
    for cx, cy, r in ((40, 220, 40), (80, 236, 34), (210, 226, 44), (176, 244, 30)):
        d.ellipse(_box(cx, cy, r, r * 0.6, s), fill=(255, 255, 255))
    d.ellipse(_box(128, 300, 100, 80, s), fill=(200, 40, 40))  # red robe
    d.ellipse(_box(50, 140, 24, 28, s), fill=(196, 140, 60))  # ears
    d.ellipse(_box(206, 140, 24, 28, s), fill=(196, 140, 60))
    d.ellipse(_box(50, 140, 12, 15, s), fill=(240, 200, 160))
    d.ellipse(_box(206, 140, 12, 15, s), fill=(240, 200, 160))
    d.ellipse(_box(128, 136, 82, 92, s), fill=(196, 140, 60))  # fur
    d.ellipse(_box(108, 146, 36, 40, s), fill=(244, 208, 170))  # heart-shaped face
    d.ellipse(_box(148, 146, 36, 40, s), fill=(244, 208, 170))
    d.ellipse(_box(128, 184, 44, 32, s), fill=(244, 208, 170))
    d.rectangle([52 * s, 78 * s, 204 * s, 92 * s], fill=(240, 190, 30))  # the golden headband
    d.ellipse(_box(128, 85, 10, 10, s), fill=(255, 226, 90))
    _eyes(d, s, 140, 24, (200, 120, 20), r=10)
    d.ellipse(_box(128, 170, 7, 5, s), fill=(120, 70, 50))  # nose
    d.arc(_box(128, 184, 22, 14, s), 10, 170, fill=(120, 50, 40), width=4 * s)  # grin
    d.line([222 * s, 40 * s, 150 * s, 256 * s], fill=(150, 30, 30), width=9 * s)  # the staff
    d.line([222 * s, 40 * s, 212 * s, 70 * s], fill=(240, 190, 30), width=11 * s)
    return img


def sherlock() -> Image.Image:
    """A deerstalker cap, a long face, a pipe; London fog."""
    img, d, s = _canvas((170, 182, 176), (84, 96, 100))
    d.ellipse(_box(128, 300, 110, 86, s), fill=(60, 52, 48))  # coat
    d.polygon([(c * s) for c in (104, 220, 128, 256, 152, 220)], fill=(235, 235, 235))  # collar
    d.rectangle(_box(128, 212, 16, 16, s), fill=(240, 214, 192))
    d.ellipse(_box(128, 146, 56, 74, s), fill=(240, 214, 192))  # long face
    d.ellipse(_box(128, 82, 70, 40, s), fill=(150, 116, 80))  # deerstalker crown
    d.polygon([(c * s) for c in (70, 92, 40, 112, 74, 104)], fill=(130, 98, 66))  # back brim
    d.polygon([(c * s) for c in (186, 92, 216, 112, 182, 104)], fill=(130, 98, 66))  # front brim
    check = Image.new("RGB", img.size, (110, 84, 56))  # the check pattern, only inside the crown
    lines = Image.new("L", img.size, 0)
    ld = ImageDraw.Draw(lines)
    for x in range(64, 206, 14):
        ld.line([x * s, 40 * s, (x - 10) * s, 124 * s], fill=255, width=2 * s)
    for y in range(56, 124, 14):
        ld.line([50 * s, y * s, 206 * s, y * s], fill=255, width=2 * s)
    crown = Image.new("L", img.size, 0)
    ImageDraw.Draw(crown).ellipse(_box(128, 82, 70, 40, s), fill=255)
    img.paste(check, (0, 0), Image.composite(lines, Image.new("L", img.size, 0), crown))
    d.rectangle([56 * s, 108 * s, 200 * s, 118 * s], fill=(120, 90, 60))
    _eyes(d, s, 148, 22, (90, 120, 140), r=9, shine=False)
    for cx in (106, 150):  # thoughtful brows
        d.line([(cx - 12) * s, 130 * s, (cx + 12) * s, 132 * s], fill=(70, 50, 40), width=4 * s)
    d.line([128 * s, 150 * s, 124 * s, 176 * s], fill=(200, 170, 150), width=3 * s)  # nose
    d.line([114 * s, 192 * s, 142 * s, 192 * s], fill=(150, 80, 70), width=3 * s)
    d.line([140 * s, 192 * s, 188 * s, 206 * s], fill=(70, 40, 30), width=6 * s)  # pipe stem
    d.rectangle([182 * s, 186 * s, 200 * s, 212 * s], fill=(90, 50, 30))  # bowl
    d.ellipse(_box(191, 176, 10, 6, s), fill=(220, 220, 220))  # smoke
    d.ellipse(_box(200, 160, 8, 5, s), fill=(230, 230, 230))
    return img


DRAWINGS = {"haruhi": haruhi, "wukong": wukong, "sherlock": sherlock}


def draw(name: str) -> Image.Image:
    """The finished avatar of a built-in character: SIZE×SIZE, round-cornered."""
    big = DRAWINGS[name]()
    small = big.resize((SIZE, SIZE), Image.Resampling.LANCZOS).filter(ImageFilter.SMOOTH)
    mask = Image.new("L", (SIZE * SCALE, SIZE * SCALE), 0)
    ImageDraw.Draw(mask).rounded_rectangle([0, 0, SIZE * SCALE, SIZE * SCALE], radius=40 * SCALE, fill=255)
    out = small.convert("RGBA")
    out.putalpha(mask.resize((SIZE, SIZE), Image.Resampling.LANCZOS))
    return out


def main(argv: list[str]) -> int:
    for name in argv or list(DRAWINGS):
        path = ROOT / name / "avatar.png"
        draw(name).save(path, "PNG", optimize=True)
        print(f"{path} ({path.stat().st_size // 1024} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
