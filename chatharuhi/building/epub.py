"""An .epub's text: its XHTML documents in spine order, tags stripped, paragraphs on their own lines."""

from __future__ import annotations

import html
import re
import zipfile
from pathlib import Path, PurePosixPath

from ..errors import SourceError

MAX_MEMBERS = 5000
MAX_UNPACKED_BYTES = 200_000_000  # a zip bomb stops here
_BLOCK = re.compile(r"</(?:p|div|h[1-6]|li|blockquote|tr)\s*>|<br\s*/?>", re.I)
_TAG = re.compile(r"<[^>]+>")
_SCRIPT = re.compile(r"<(script|style|head)\b.*?</\1\s*>", re.I | re.S)


def read_epub(path: Path, max_bytes: int) -> tuple[str, str]:
    """The book's text and title; a file that is not a zip, or holds no text, is a ``SourceError``."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise SourceError(f"cannot read it: {exc.strerror or exc}", path) from None
    if size > max_bytes:
        raise SourceError(f"is {size / 1e6:.0f} MB; a source may be at most {max_bytes / 1e6:.0f} MB", path)
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError):
        raise SourceError("is not an epub: an epub is a zip archive, and this is not one (rename a plain-text book "
                          "to .txt)", path) from None
    with zf:
        infos = zf.infolist()
        if len(infos) > MAX_MEMBERS or sum(i.file_size for i in infos) > MAX_UNPACKED_BYTES:
            raise SourceError(f"unpacks to more than {MAX_UNPACKED_BYTES / 1e6:.0f} MB or {MAX_MEMBERS} files", path)
        names = _spine(zf) or sorted(n for n in zf.namelist() if n.lower().endswith((".xhtml", ".html", ".htm")))
        parts, title = [], ""
        for name in names:
            try:
                raw = zf.read(name).decode("utf-8", errors="replace")
            except KeyError:
                continue
            if not title:
                m = re.search(r"<title[^>]*>(.*?)</title>", raw, re.I | re.S)
                title = html.unescape(m.group(1)).strip() if m else ""
            parts.append(_text(raw))
    text = "\n\n".join(p for p in parts if p.strip())
    if not any(ch.isalpha() for ch in text):
        raise SourceError("is an epub with no text in it (only images, or empty chapters)", path)
    return text, title or path.stem


def _spine(zf: zipfile.ZipFile) -> list[str]:
    """The documents in reading order, from the package file the container names."""
    try:
        container = zf.read("META-INF/container.xml").decode("utf-8", errors="replace")
        opf_name = re.search(r'full-path="([^"]+)"', container).group(1)
        opf = zf.read(opf_name).decode("utf-8", errors="replace")
    except (KeyError, AttributeError):
        return []
    base = PurePosixPath(opf_name).parent
    items = {m.group("id"): m.group("href") for m in re.finditer(
        r'<item\b[^>]*?\bid="(?P<id>[^"]+)"[^>]*?\bhref="(?P<href>[^"]+)"', opf)}
    items.update({m.group("id"): m.group("href") for m in re.finditer(
        r'<item\b[^>]*?\bhref="(?P<href>[^"]+)"[^>]*?\bid="(?P<id>[^"]+)"', opf)})
    order = re.findall(r'<itemref\b[^>]*?\bidref="([^"]+)"', opf)
    return [str(base / items[i]) if str(base) != "." else items[i] for i in order if i in items]


def _text(markup: str) -> str:
    markup = _SCRIPT.sub("", markup)
    markup = _BLOCK.sub("\n\n", markup)
    text = html.unescape(_TAG.sub("", markup))
    paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", text)]
    return "\n\n".join(p for p in paragraphs if p)
