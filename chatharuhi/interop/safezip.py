"""Reading untrusted zip files (CHARX, packaged roles, zipped folders) without writing outside a folder.

Every entry is checked before anything is read: no absolute paths, no ``..``, no symlinks, no more
than ``MAX_ZIP_ENTRIES`` entries and at most ``MAX_ZIP_TOTAL`` bytes uncompressed in all; an entry that
is read may not expand more than ``MAX_ZIP_RATIO`` times (a zip bomb; entries never read, such as a
Chroma index's zero-filled HNSW file, are not held to it). Reads stop at the declared size, so a
header that lies about it cannot blow up memory either.
"""

from __future__ import annotations

import os
import stat
import zipfile
from pathlib import Path, PurePosixPath

from ..errors import CharacterImportError

MAX_ZIP_ENTRIES = 50_000
MAX_ZIP_TOTAL = 1 << 30  # 1 GiB uncompressed in all
MAX_ZIP_RATIO = 200  # uncompressed / compressed, for entries over 1 MiB
_RATIO_MIN_SIZE = 1 << 20


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
        try:
            self._zip = zipfile.ZipFile(self.path)
            infos = self._zip.infolist()
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
            raise CharacterImportError(f"not a readable zip file: {exc}", self.path) from None
        if len(infos) > MAX_ZIP_ENTRIES:
            raise CharacterImportError(f"{len(infos)} entries in the zip, more than {MAX_ZIP_ENTRIES}", self.path)
        total = 0
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
            self._infos["/".join(parts)] = info
        self.names = sorted(self._infos)

    def __enter__(self) -> "SafeZip":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the underlying file."""
        self._zip.close()

    def read(self, name: str) -> bytes:
        """An entry's bytes, never more than its declared size."""
        info = self._infos.get(name)
        if info is None:
            raise CharacterImportError(f"the zip has no entry {name!r}", self.path)
        if info.file_size > _RATIO_MIN_SIZE and info.file_size > self.max_ratio * max(1, info.compress_size):
            raise CharacterImportError(f"zip entry {name!r} expands {info.file_size} bytes from "
                                       f"{info.compress_size} (zip bomb?)", self.path)
        try:
            with self._zip.open(info) as f:
                data = f.read(info.file_size + 1)
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as exc:
            raise CharacterImportError(f"cannot read zip entry {name!r}: {exc}", self.path) from None
        if len(data) > info.file_size:
            raise CharacterImportError(f"zip entry {name!r} is larger than its header says", self.path)
        return data

    def extract(self, name: str, dest: Path) -> Path:
        """Write one entry under ``dest`` (a folder) at its own relative path; returns the file."""
        target = dest.joinpath(*name.split("/"))
        root = dest.resolve()
        if not target.resolve().is_relative_to(root):  # belt and braces after member_parts
            raise CharacterImportError(f"zip entry {name!r} would be written outside {dest}", self.path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(self.read(name))
        return target
