"""Loading for the ``transformers`` backend: torch and transformers imported lazily, the device and dtype
picked for the machine, the base model located (folder, hub id, GGUF, ``"embedded"``) and adapter folders checked."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ...config import EMBEDDED_BASE, EMBEDDED_INSTALL
from ...errors import AdapterError, BackendError, BackendUnavailable, ModelError

INSTALL_HINT = ("pip install 'chatharuhi[local]' torch  (CPU-only torch: "
                "pip install torch --index-url https://download.pytorch.org/whl/cpu)")
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")


def import_torch() -> tuple[Any, Any]:
    """(torch, transformers), or ``BackendUnavailable`` with the command that installs them."""
    try:
        import torch

        import transformers
    except ImportError as exc:
        raise BackendUnavailable(
            f"the transformers backend needs torch and transformers: {INSTALL_HINT} ({exc})") from None
    return torch, transformers


def pick_device(torch: Any, device: str | None) -> str:
    """``device`` checked against the machine, or the best available: cuda, then mps, then cpu."""
    has_mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if device is None or device == "auto":
        return "cuda" if torch.cuda.is_available() else "mps" if has_mps else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise BackendUnavailable(
            f"device={device!r} but this torch sees no CUDA GPU (torch {torch.__version__}); "
            "pass device='cpu' (or leave device unset), or install a CUDA build of torch")
    if device == "mps" and not has_mps:
        raise BackendUnavailable("device='mps' but Metal is not available here; leave device unset")
    return device


def pick_dtype(torch: Any, device: str, dtype: Any) -> Any:
    """``dtype`` (a torch dtype or its name), else bfloat16/float16 on GPUs and float32 on CPU."""
    if isinstance(dtype, str) and dtype != "auto":
        try:
            return getattr(torch, dtype)
        except AttributeError:
            raise BackendError(f"unknown dtype {dtype!r}; use float32, float16 or bfloat16") from None
    if dtype not in (None, "auto"):
        return dtype
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float16 if device == "mps" else torch.float32


def locate_base(source: str | os.PathLike, gguf_file: str | None = None) -> tuple[str, str | None]:
    """(folder or hub id, GGUF file name or None) for a base model given as a folder, a hub id, a
    ``.gguf`` file or ``"embedded"`` (the embedded SmolLM2 GGUF, which transformers de-quantizes)."""
    source = str(source)
    if source == EMBEDDED_BASE and gguf_file is None:
        from ...models.embedded import embedded_model_path

        path = embedded_model_path()
        if path is None:
            raise ModelError(f"base 'embedded' needs the embedded model: {EMBEDDED_INSTALL}")
        return str(path.parent), path.name
    path = Path(source).expanduser()
    if gguf_file is None and path.suffix == ".gguf":
        if not path.is_file():
            raise ModelError(f"GGUF file not found: {path}")
        return str(path.parent), path.name
    return (str(path) if path.exists() else source), gguf_file


def check_adapter_folder(path: Path) -> dict:
    """The adapter's config, or ``AdapterError`` if the folder is missing, unreadable or incomplete."""
    if not path.is_dir():
        raise AdapterError(f"adapter folder not found: {path}")
    try:
        config = json.loads((path / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AdapterError(f"{path} has no {ADAPTER_CONFIG}: not a PEFT adapter folder (save it with "
                           "model.save_pretrained(path))") from None
    except (OSError, ValueError) as exc:
        raise AdapterError(f"{path / ADAPTER_CONFIG} is corrupt: {exc}; save or download the adapter again") from None
    if not isinstance(config, dict) or "peft_type" not in config:
        raise AdapterError(f"{path / ADAPTER_CONFIG} is not a PEFT adapter config (no peft_type)")
    if not any((path / name).is_file() for name in ADAPTER_WEIGHTS):
        raise AdapterError(f"{path} has no adapter weights ({' or '.join(ADAPTER_WEIGHTS)}); save it again")
    return config
