"""Reading untrusted zip files (CHARX, packaged roles, zipped folders) without writing outside a folder.

Every entry is checked before anything is read: no absolute paths, no ``..``, no symlinks, no more
than ``MAX_ZIP_ENTRIES`` entries and at most ``MAX_ZIP_TOTAL`` bytes uncompressed in all. What is read
is held to the archive's own size: every entry over ``RATIO_MIN_SIZE`` may expand at most
``MAX_ZIP_RATIO`` times, and all the bytes read from one archive together at most ``MAX_TOTAL_RATIO``
times the archive (plus ``TOTAL_SLACK``), so a 1 MB zip cannot become a gigabyte on disk. Entries never
read, such as a Chroma index's zero-filled HNSW file, are not held to either. Reads stop at the declared
size, so a header that lies about it cannot blow up memory; ``extract`` streams to disk in chunks.
"""

from __future__ import annotations

import os
import stat
import unicodedata
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterator

from ..errors import CharacterImportError

MAX_ZIP_ENTRIES = 50_000
MAX_ZIP_TOTAL = 1 << 30  # 1 GiB uncompressed in all
MAX_ZIP_RATIO = 200  # uncompressed / compressed, for each entry over RATIO_MIN_SIZE that is read
RATIO_MIN_SIZE = 64 << 10  # smaller entries are not held to the ratio (a short repetitive text compresses well)
MAX_TOTAL_RATIO = 50  # bytes read from an archive, at most this many times its size (text zips to ~3-10x)...
TOTAL_SLACK = 8 << 20  # ...plus this much, so that a small zip of small files is never refused
_CHUNK = 1 << 20


def member_parts(name: str, path: object = None) -> tuple[str, ...]:
    """The safe path parts of an entry name; ``..``, absolute and drive paths raise."""
    clean = name.replace("\\", "/")
    p = PurePosixPath(clean)
    if clean.startswith("/") or (len(clean) > 1 and clean[1] == ":") or ".." in p.parts:
        raise CharacterImportError(f"unsafe zip entry {name!r} (absolute or '..' path); refusing to import", path)
    return tuple(part for part in p.parts if part not in ("", "."))


class SafeZip:
    """A checked, read-only view of a zip file: ``names`` lists its files (folders left out)."""

    def __init__(self, path: str | os.PathLike, *, max_total: int = MAX_ZIP_TOTAL, max_ratio: int = MAX_ZIP_RATIO):
        self.path = Path(path)
        self.max_ratio = max_ratio
        self._budget = max_total  # bytes that may still be read (set against the archive's size below)
        try:
            self._zip = zipfile.ZipFile(self.path)
            infos = self._zip.infolist()
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
            raise CharacterImportError(f"not a readable zip file: {exc}", self.path) from None
        if len(infos) > MAX_ZIP_ENTRIES:
            raise CharacterImportError(f"{len(infos)} entries in the zip, more than {MAX_ZIP_ENTRIES}", self.path)
        total = 0
        seen: dict[str, str] = {}  # each name case-folded and NFC-normalised -> the name
        self._infos: dict[str, zipfile.ZipInfo] = {}
        for info in infos:
            parts = member_parts(info.filename, self.path)
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise CharacterImportError(f"zip entry {info.filename!r} is a symbolic link; refusing to import",
                                           self.path)
            if info.is_dir() or not parts:
                continue
            total += info.file_size
            if total > max_total:
                raise CharacterImportError(f"the zip expands to more than {max_total} bytes (zip bomb?)", self.path)
            name = "/".join(parts)
            same = seen.setdefault(unicodedata.normalize("NFC", name).casefold(), name)
            if same != name:  # one file on a case-insensitive or normalising disk (macOS, Windows)
                raise CharacterImportError(f"the zip holds both {same!r} and {name!r}, which differ only by case or "
                                           "Unicode normalisation: one would be written over the other; refusing "
                                           "to import", self.path)
            self._infos[name] = info
        self.names = sorted(self._infos)
        try:
            archive = self.path.stat().st_size
        except OSError:
            archive = 0
        self._budget = min(max_total, MAX_TOTAL_RATIO * archive + TOTAL_SLACK)

    def __enter__(self) -> "SafeZip":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the underlying file."""
        self._zip.close()

    def _open(self, name: str):
        """The entry's stream, after its ratio and the archive's read budget are checked."""
        info = self._infos.get(name)
        if info is None:
            raise CharacterImportError(f"the zip has no entry {name!r}", self.path)
        if info.file_size > RATIO_MIN_SIZE and info.file_size > self.max_ratio * max(1, info.compress_size):
            raise CharacterImportError(f"zip entry {name!r} expands {info.file_size} bytes from "
                                       f"{info.compress_size} (zip bomb?)", self.path)
        if info.file_size > self._budget:
            raise CharacterImportError(f"the zip expands to far more than its own size (at most {MAX_TOTAL_RATIO}x "
                                       f"it is read); refusing entry {name!r} (zip bomb?)", self.path)
        self._budget -= info.file_size
        try:
            return info, self._zip.open(info)
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as exc:
            raise CharacterImportError(f"cannot read zip entry {name!r}: {exc}", self.path) from None

    def _chunks(self, name: str) -> Iterator[bytes]:
        """The entry's bytes in chunks, never more than its declared size."""
        info, f = self._open(name)
        seen = 0
        try:
            with f:
                while chunk := f.read(_CHUNK):
                    seen += len(chunk)
                    if seen > info.file_size:
                        raise CharacterImportError(f"zip entry {name!r} is larger than its header says", self.path)
                    yield chunk
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as exc:
            raise CharacterImportError(f"cannot read zip entry {name!r}: {exc}", self.path) from None

    def read(self, name: str) -> bytes:
        """An entry's bytes, never more than its declared size."""
        return b"".join(self._chunks(name))

    def member(self, name: str) -> "ZipMember":
        """A reference to an entry, to be streamed to disk later (``ZipMember.write_to``)."""
        if name not in self._infos:
            raise CharacterImportError(f"the zip has no entry {name!r}", self.path)
        return ZipMember(self.path, name, self._infos[name].file_size)

    def extract(self, name: str, dest: Path) -> Path:
        """Write one entry under ``dest`` (a folder) at its own relative path, streamed; returns the file."""
        target = dest.joinpath(*name.split("/"))
        root = dest.resolve()
        if not target.resolve().is_relative_to(root):  # belt and braces after member_parts
            raise CharacterImportError(f"zip entry {name!r} would be written outside {dest}", self.path)
        target.parent.mkdir(parents=True, exist_ok=True)
        self.copy_to(name, target)
        return target

    def copy_to(self, name: str, target: Path) -> None:
        """Stream one entry into the file ``target``."""
        with open(target, "wb") as out:
            for chunk in self._chunks(name):
                out.write(chunk)


@dataclass(frozen=True)
class ZipMember:
    """An entry of a zip on disk that an import copies without holding it in memory."""

    zip_path: Path
    name: str
    size: int

    def head(self, n: int) -> bytes:
        """The entry's first ``n`` bytes."""
        with SafeZip(self.zip_path) as z:
            info, f = z._open(self.name)
            with f:
                return f.read(min(n, info.file_size))

    def write_to(self, target: Path) -> None:
        """Stream the entry into ``target`` (the zip's checks apply again)."""
        with SafeZip(self.zip_path) as z:
            z.copy_to(self.name, target)
