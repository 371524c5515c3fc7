"""Download a packaged ChatHaruhi role (JSONL) from Hugging Face, with timeouts and a cache.

``silk-road/ChatHaruhi-RolePlaying/haruhi`` is ``haruhi.jsonl`` in the dataset repository
``silk-road/ChatHaruhi-RolePlaying``; a bare name (``haruhi``) means that repository. The endpoint is
``$CHATHARUHI_HF_ENDPOINT``, else ``$HF_ENDPOINT``, else https://huggingface.co. Downloads land in
``<home>/hf/<repo>/<name>.jsonl`` and are imported once into ``<home>/hf-roles/``; a cached file is
used without touching the network.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from ..config import cache_dir
from ..errors import CharacterImportError
from .folder import safe_name

DEFAULT_ROLE_REPO = "silk-road/ChatHaruhi-RolePlaying"
DEFAULT_HF_ENDPOINT = "https://huggingface.co"
ENV_HF_ENDPOINT = "CHATHARUHI_HF_ENDPOINT"
DOWNLOAD_TIMEOUT_S = 30.0
MAX_DOWNLOAD_BYTES = 1 << 30


def split_role(spec: str) -> tuple[str, str]:
    """``owner/repo/name`` -> (``owner/repo``, ``name``); a bare name uses the default repository."""
    spec = spec.strip().strip("/")
    parts = spec.split("/")
    if len(parts) == 1 and parts[0]:
        return DEFAULT_ROLE_REPO, parts[0]
    if len(parts) >= 3 and all(parts):
        return "/".join(parts[:2]), "/".join(parts[2:])
    raise CharacterImportError(f"bad role {spec!r}: use a name ('haruhi') or 'owner/repo/name'")


def role_url(repo: str, name: str, endpoint: str | None = None) -> str:
    """Where a role file lives on the hub."""
    base = (endpoint or os.environ.get(ENV_HF_ENDPOINT) or os.environ.get("HF_ENDPOINT") or DEFAULT_HF_ENDPOINT)
    fname = name if name.endswith(".jsonl") else f"{name}.jsonl"
    return f"{base.rstrip('/')}/datasets/{repo}/resolve/main/{urllib.parse.quote(fname)}"


def _download(url: str, target: Path, timeout: float, what: str) -> None:
    """Fetch ``url`` into ``target`` atomically (a temporary file, then a rename), refusing huge files."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=target.name, suffix=".part")
    try:
        request = urllib.request.Request(url, headers={"User-Agent": "chatharuhi"})
        with urllib.request.urlopen(request, timeout=timeout) as response, os.fdopen(fd, "wb") as out:
            size = 0
            while chunk := response.read(1 << 16):
                size += len(chunk)
                if size > MAX_DOWNLOAD_BYTES:
                    raise CharacterImportError(f"{url}: larger than {MAX_DOWNLOAD_BYTES} bytes; refusing")
                out.write(chunk)
        os.replace(tmp, target)
    except urllib.error.HTTPError as exc:
        hint = " (no such role?)" if exc.code == 404 else ""
        raise CharacterImportError(f"cannot download {url}: HTTP {exc.code}{hint}") from None
    except (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError) as exc:
        reason = getattr(exc, "reason", exc)
        raise CharacterImportError(
            f"cannot download {url}: {reason}. Are you offline? Download {what} yourself and run "
            f"'chatharuhi import FILE', or set {ENV_HF_ENDPOINT} to a mirror") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def download_role(spec: str, *, endpoint: str | None = None, timeout: float = DOWNLOAD_TIMEOUT_S,
                  refresh: bool = False) -> Path:
    """The role's JSONL in the cache, downloaded first if needed (or if ``refresh``)."""
    repo, name = split_role(spec)
    target = cache_dir("hf", *[safe_name(p, "x") for p in repo.split("/")]) / f"{safe_name(name, 'role')}.jsonl"
    if target.is_file() and not refresh:
        return target
    _download(role_url(repo, name, endpoint), target, timeout, f"{repo}/{name}.jsonl")
    return target


def pull_role(spec: str, to: str | os.PathLike | None = None, *, endpoint: str | None = None,
              timeout: float = DOWNLOAD_TIMEOUT_S, refresh: bool = False) -> Path:
    """Download (or reuse) a packaged role and import it; returns the character folder.

    Without ``to`` the folder lives in the cache (``<home>/hf-roles/<repo>/<name>``) and is imported
    once; with ``to`` it is imported there (replacing an older copy)."""
    from . import import_character

    repo, name = split_role(spec)
    jsonl = download_role(spec, endpoint=endpoint, timeout=timeout, refresh=refresh)
    folder_name = safe_name(name, "role")
    if to is None:
        root = cache_dir("hf-roles", *[safe_name(p, "x") for p in repo.split("/")])
        if (root / folder_name).is_dir() and not refresh:
            return root / folder_name
        if refresh:
            shutil.rmtree(root / folder_name, ignore_errors=True)
        return import_character(jsonl, root, name=folder_name, overwrite=True)
    return import_character(jsonl, to, name=folder_name, overwrite=True)


def _endpoint(endpoint: str | None) -> str:
    return (endpoint or os.environ.get(ENV_HF_ENDPOINT) or os.environ.get("HF_ENDPOINT") or DEFAULT_HF_ENDPOINT
            ).rstrip("/")


def train_files(names: list[str]) -> list[str]:
    """The data files of a dataset's train split, as ``datasets`` picks them with no config: files named
    for the train split if any, else every JSON/JSONL file."""
    data = sorted(n for n in names if n.endswith((".jsonl", ".json")) and not n.split("/")[-1].startswith("."))
    named = [n for n in data if any(part.startswith("train") or "-train" in part or "_train" in part
                                    for part in n.split("/"))]
    return named or data


def pull_dataset(repo: str, *, endpoint: str | None = None, timeout: float = DOWNLOAD_TIMEOUT_S,
                 refresh: bool = False) -> Path:
    """The character in dataset ``owner/name``'s train split (ChatHaruhi's ``role_from_hf='owner/name'``):
    its JSONL files are downloaded, joined and imported once into ``<home>/hf-roles/<owner>/<name>/train``."""
    import json

    from . import import_character

    parts = repo.strip().strip("/").split("/")
    if len(parts) != 2 or not all(parts):
        raise CharacterImportError(f"bad dataset {repo!r}: use 'owner/dataset'")
    root = cache_dir("hf-roles", *[safe_name(p, "x") for p in parts])
    if (root / "train").is_dir() and not refresh:
        return root / "train"
    base = _endpoint(endpoint)
    listing = cache_dir("hf", *[safe_name(p, "x") for p in parts]) / "_files.json"
    _download(f"{base}/api/datasets/{parts[0]}/{parts[1]}", listing, timeout, f"the file list of {repo}")
    try:
        names = [s["rfilename"] for s in json.loads(listing.read_text(encoding="utf-8")).get("siblings", [])]
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise CharacterImportError(f"{base}/api/datasets/{repo}: not a dataset file list ({exc})") from None
    files = train_files(names)
    if not files:
        raise CharacterImportError(f"dataset {repo} has no .jsonl/.json files (found: {', '.join(names[:10])})")
    joined = listing.with_name("_train.jsonl")
    with open(joined, "wb") as out:
        for n, name in enumerate(files):
            part = listing.with_name(f"_part{n}.jsonl")
            _download(f"{base}/datasets/{repo}/resolve/main/{urllib.parse.quote(name)}", part, timeout,
                      f"{repo}/{name}")
            data = part.read_bytes()
            out.write(data if data.endswith(b"\n") else data + b"\n")
            part.unlink()
    if refresh:
        shutil.rmtree(root / "train", ignore_errors=True)
    return import_character(joined, root, name="train", overwrite=True)
