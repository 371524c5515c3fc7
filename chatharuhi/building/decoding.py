"""Reading a source file as text: bounded in size, the encoding detected (and said), binary refused.

The file is read in chunks up to a limit and never whole beyond it, so a 200 MB upload costs one
chunk and a clear error. Encodings are tried in a fixed order and each guess must look like text
(mostly CJK for the Chinese ones, mostly ASCII for Windows-1252), so a wrong guess is not accepted
just because its bytes happen to decode.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass
from pathlib import Path

from ..config import BUILD_MAX_SOURCE_BYTES
from ..errors import SourceError

CHUNK_BYTES = 1 << 20
SNIFF_BYTES = 1 << 16
# The order of the guesses after the byte-order marks; GB18030 is a superset of GBK and GB2312.
TRIED = ("utf-8", "utf-16", "gb18030", "big5", "cp1252")
_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF8, "utf-8-sig"),
         (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))


@dataclass(frozen=True)
class Decoded:
    """A source's text and how it was read."""

    text: str
    encoding: str  # the codec that read it, e.g. "utf-8", "gb18030", "utf-16-le"
    size: int  # bytes read


def read_bytes(path: Path, max_bytes: int = BUILD_MAX_SOURCE_BYTES) -> bytes:
    """The file's bytes, read in chunks; past ``max_bytes`` it stops and says so (the rest is never read)."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise SourceError(f"cannot read it: {exc.strerror or exc}", path) from None
    if not path.is_file():
        raise SourceError("is not a file", path)
    if size > max_bytes:
        raise SourceError(_too_big(size, max_bytes), path)
    chunks, total = [], 0
    with path.open("rb") as f:  # the size can change while it is read: count what arrives, too
        while chunk := f.read(CHUNK_BYTES):
            total += len(chunk)
            if total > max_bytes:
                raise SourceError(_too_big(total, max_bytes, at_least=True), path)
            chunks.append(chunk)
    return b"".join(chunks)


def _too_big(size: int, limit: int, at_least: bool = False) -> str:
    more = "more than " if at_least else ""
    return (f"is {more}{size / 1e6:.0f} MB; a source may be at most {limit / 1e6:.0f} MB (the longest novels are "
            "under 10 MB): split it into volumes and pass them all, or raise max_source_bytes")


def decode(data: bytes, path: Path | str = "<bytes>") -> Decoded:
    """Decode ``data``: a byte-order mark, else the first of ``TRIED`` that reads it as plausible text."""
    if not data.strip():
        raise SourceError("is empty: there is no text to read", path)
    for bom, codec in _BOMS:
        if data.startswith(bom):
            label = "utf-8 (BOM)" if codec == "utf-8-sig" else f"{codec} (BOM)"
            return Decoded(_clean(data.decode(codec, errors="strict")), label, len(data))
    utf16 = _utf16_without_bom(data[:SNIFF_BYTES])
    if utf16:
        try:
            return Decoded(_clean(data.decode(utf16)), utf16, len(data))
        except UnicodeDecodeError:
            pass
    try:
        return Decoded(_clean(data.decode("utf-8")), "utf-8", len(data))
    except UnicodeDecodeError:
        pass
    for codec in ("utf-16-le", "utf-16-be"):  # Chinese UTF-16 without a BOM has no NUL bytes to spot it by
        if len(data) % 2 == 0:
            try:
                text = data.decode(codec)
            except UnicodeDecodeError:
                continue
            if _mostly_cjk(text[:SNIFF_BYTES]):
                return Decoded(_clean(text), codec, len(data))
    if b"\x00" in data[:SNIFF_BYTES]:
        raise SourceError("looks binary (it has NUL bytes and no UTF-16 pattern): give a text, epub, srt, ass "
                          "or script file", path)
    for codec in ("gb18030", "big5", "cp1252"):
        try:
            text = data.decode(codec)
        except UnicodeDecodeError:
            continue
        if _plausible(text, codec):
            return Decoded(_clean(text), codec, len(data))
    raise SourceError(f"unknown encoding: tried {', '.join(TRIED)} and none reads it as text; re-save it as "
                      "UTF-8", path)


def _utf16_without_bom(sample: bytes) -> str | None:
    """``utf-16-le`` or ``-be`` when every other byte is mostly NUL (ASCII-heavy UTF-16 text)."""
    if len(sample) < 4:
        return None
    even, odd = sample[0::2], sample[1::2]
    if odd.count(0) > 0.4 * len(odd) and even.count(0) < 0.05 * len(even):
        return "utf-16-le"
    if even.count(0) > 0.4 * len(even) and odd.count(0) < 0.05 * len(odd):
        return "utf-16-be"
    return None


def _plausible(text: str, codec: str) -> bool:
    """Whether a decoding that did not fail looks like text rather than mojibake."""
    sample = text[: SNIFF_BYTES]
    controls = sum(1 for c in sample if ord(c) < 32 and c not in "\n\r\t\f")
    if controls > 0.01 * max(1, len(sample)):
        return False
    if codec == "utf-8":
        return True
    wide = [c for c in sample if ord(c) > 127]
    if codec in ("gb18030", "big5"):
        cjk = sum(1 for c in wide if "\u4e00" <= c <= "\u9fff" or "\u3000" <= c <= "\u303f" or "\uff00" <= c <= "\uffef"
                  or c in "“”‘’…—")
        return bool(wide) and cjk >= 0.9 * len(wide)
    return len(wide) <= 0.05 * max(1, len(sample))  # cp1252: English with a few curly quotes or accents


def _mostly_cjk(text: str) -> bool:
    ok = sum(1 for c in text if "\u4e00" <= c <= "\u9fff" or c in "“”‘’，。！？：；、…—（）《》\n " or
             (c.isascii() and c.isprintable()))
    return ok >= 0.97 * max(1, len(text)) and sum(1 for c in text if "\u4e00" <= c <= "\u9fff") >= 0.3 * len(text)


def _clean(text: str) -> str:
    """Unix line ends; a leading BOM dropped. Offsets in reports are into this text."""
    return text.lstrip("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
