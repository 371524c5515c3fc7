"""Characters' pictures in the web demo: an avatar read within its size and pixel limits, a small copy Gradio can
serve in chat bubbles, and a drawn placeholder (the initial) for a folder without one."""

from __future__ import annotations

import logging
from pathlib import Path

from ..config import IMAGE_MAX_PIXELS, cache_home
from ..errors import InputError

AVATAR_FILES = ("avatar.png", "avatar.jpg", "avatar.jpeg", "avatar.webp", "avatar.gif")
AVATAR_MAX_BYTES = 5 * 1024 * 1024  # an avatar file larger than this is refused (a 20 MB photo is a mistake)
AVATAR_MAX_PIXELS = IMAGE_MAX_PIXELS
AVATAR_SIZE = 256  # avatars are stored and shown at most this many pixels wide
THUMB_DIR = "web_avatars"  # under the home folder: small copies Gradio can serve in chat bubbles

logger = logging.getLogger("chatharuhi")


def read_avatar(path: Path, what: str = "avatar"):
    """The image at ``path`` as a small RGBA PIL image; a clear ``InputError`` if it is too big or not an image."""
    from PIL import Image

    size = path.stat().st_size
    if size > AVATAR_MAX_BYTES:
        raise InputError(f"the {what} {path.name} is {size / 2**20:.1f} MB; the limit is {AVATAR_MAX_BYTES // 2**20} "
                         f"MB: save it smaller ({AVATAR_SIZE}×{AVATAR_SIZE} pixels is plenty)")
    try:
        with Image.open(path) as img:
            if img.width * img.height > AVATAR_MAX_PIXELS:
                raise InputError(f"the {what} {path.name} is {img.width}×{img.height} pixels; the limit is "
                                 f"{AVATAR_MAX_PIXELS // 1_000_000} megapixels: scale it down")
            img.load()
            small = img.convert("RGBA")
    except InputError:
        raise
    except (OSError, ValueError, Image.DecompressionBombError, SyntaxError) as exc:
        raise InputError(f"the {what} {path.name} is not an image Pillow can read ({exc}); use a PNG or JPEG") from None
    small.thumbnail((AVATAR_SIZE, AVATAR_SIZE))
    return small


PLACEHOLDER_FONTS = ("/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc", "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
                     "/System/Library/Fonts/PingFang.ttc", "C:/Windows/Fonts/msyh.ttc", "C:/Windows/Fonts/arial.ttf")


def placeholder_avatar(name: str, display_name: str) -> Path | None:
    """A generated avatar for a folder without one: the name's first character on a colour of its own."""
    import hashlib

    try:
        from PIL import Image, ImageDraw, ImageFont
    except ImportError:  # pragma: no cover - Pillow comes with the web extra
        return None
    digest = hashlib.sha256(f"{name}\0{display_name}".encode()).hexdigest()
    thumb = cache_home() / THUMB_DIR / f"placeholder-{safe_file(name)}-{digest[:12]}.png"
    if thumb.is_file():
        return thumb
    hue = int(digest[:4], 16) / 0xFFFF
    import colorsys

    r, g, b = (int(255 * c) for c in colorsys.hls_to_rgb(hue, 0.42, 0.45))
    image = Image.new("RGB", (AVATAR_SIZE, AVATAR_SIZE), (r, g, b))
    draw = ImageDraw.Draw(image)
    letter = (display_name.strip() or name)[:1].upper()
    font = None
    for candidate in PLACEHOLDER_FONTS:
        if Path(candidate).is_file():
            try:
                font = ImageFont.truetype(candidate, AVATAR_SIZE // 2)
                break
            except OSError:
                continue
    if font is None:
        font = ImageFont.load_default(size=AVATAR_SIZE // 2)
        letter = (name[:1] or "?").upper()  # the built-in font has no CJK glyphs
    draw.text((AVATAR_SIZE / 2, AVATAR_SIZE / 2), letter, fill=(255, 255, 255), font=font, anchor="mm")
    thumb.parent.mkdir(parents=True, exist_ok=True)
    tmp = thumb.with_suffix(".tmp")
    image.save(tmp, "PNG")
    tmp.replace(thumb)
    return thumb


def safe_file(name: str) -> str:
    """``name`` as a short file name: letters, digits, - and _ only."""
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[:40]




def thumbnail(folder: Path, name: str, display_name: str) -> tuple[Path | None, str]:
    """A small PNG copy of the folder's avatar (or a placeholder) that Gradio may serve, and a note if it cannot be
    shown; copies are kept under the cache folder, keyed by the file's size and time."""
    file = next((folder / f for f in AVATAR_FILES if (folder / f).is_file()), None)
    if file is None:
        return placeholder_avatar(name, display_name), ""
    stat = file.stat()
    thumb = cache_home() / THUMB_DIR / f"{name}-{stat.st_size}-{int(stat.st_mtime)}.png"
    if thumb.is_file():
        return thumb, ""
    try:
        image = read_avatar(file, f"avatar of {name}")
    except InputError as exc:
        logger.warning("chatharuhi demo: %s", exc)
        return None, f"(no avatar shown: {exc})"
    thumb.parent.mkdir(parents=True, exist_ok=True)
    tmp = thumb.with_suffix(".tmp")
    image.save(tmp, "PNG")
    tmp.replace(thumb)
    return thumb, ""
