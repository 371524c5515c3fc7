"""The worker process of a local GGUF model: llama.cpp's own server (``python -m ...llama_cpp.server_main``).

It reads one JSON line on stdin (the settings, the API key among them: never on the command line, where
``ps`` shows it), checks that this llama.cpp build can run on this CPU, starts xllamacpp's ``Server`` on
loopback with that key and CORS closed, and writes one JSON line on stdout: ``{"address": ...}`` or
``{"error": kind, "message": ...}``. llama.cpp logs to stderr, which the parent keeps (a crash message
quotes its last lines). The server then runs on its own threads until stdin closes: when the parent
closes it, or dies, the worker ends. Besides the standard library it imports xllamacpp and chatharuhi's config.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import signal
import sys
import threading
import time
from typing import Any

# llama.cpp's system info names the CPU features the build uses; these are /proc/cpuinfo's names for them.
CPU_FLAGS = {
    "AVX": "avx", "AVX2": "avx2", "F16C": "f16c", "FMA": "fma", "BMI2": "bmi2", "AVX_VNNI": "avx_vnni",
    "AVX512": "avx512f", "AVX512_VBMI": "avx512vbmi", "AVX512_VNNI": "avx512_vnni", "AVX512_BF16": "avx512_bf16",
    "AMX_INT8": "amx_int8",
}
_ARCH_REQ_XCOMP_PERM, _XFEATURE_XTILEDATA, _SYS_ARCH_PRCTL = 0x1023, 18, 158
PARENT_POLL_S = 0.5  # how often the worker checks that the program that started it is alive
# Settings passed through to llama.cpp's CommonParams by name (the parent checked them).
PASSTHROUGH = ("n_gpu_layers", "main_gpu", "n_batch", "n_ubatch", "rope_freq_base", "rope_freq_scale", "n_keep")


def build_features(system_info: str) -> set[str]:
    """CPU features a llama.cpp build uses, from its system info ("AVX2 = 1 | ...")."""
    return {name for name, value in re.findall(r"([A-Z0-9_]+) = (\d+)", system_info) if value != "0"}


def cpu_flags() -> set[str] | None:
    """This CPU's flags as the kernel reports them (it hides AMX when the tile state is not granted)."""
    from ...config import ENV_CPU_FLAGS

    if os.environ.get(ENV_CPU_FLAGS):  # to check a build against another CPU's flags
        return set(os.environ[ENV_CPU_FLAGS].split())
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        return None
    return None


def amx_granted() -> bool:
    """Whether the kernel lets this process use AMX tiles (Linux arch_prctl ARCH_REQ_XCOMP_PERM)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.syscall(_SYS_ARCH_PRCTL, _ARCH_REQ_XCOMP_PERM, _XFEATURE_XTILEDATA) == 0
    except (OSError, AttributeError):
        return False


def unsupported(system_info: str, flags: set[str] | None, granted: bool) -> list[str]:
    """Features the build uses that this CPU lacks or does not grant (empty: safe to run)."""
    if flags is None:  # not Linux: nothing to compare with
        return []
    features = build_features(system_info)
    missing = [name for name in sorted(features) if name in CPU_FLAGS and CPU_FLAGS[name] not in flags]
    if "AMX_INT8" in features and "AMX_INT8" not in missing and not granted:
        missing.append("AMX_INT8 (advertised, but the kernel does not grant the tile state)")
    return missing


def _die_with_parent() -> None:
    """End this process when the parent dies, even if stdin were somehow kept open: a thread watches for this
    process being handed to another parent. (Not prctl's PR_SET_PDEATHSIG: that fires when the *thread* that
    started us ends, so a model started from a short-lived thread, say the demo's "Get a better model", was
    SIGKILLed mid-reply.)"""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_S)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _params(spec: dict[str, Any]) -> Any:
    import xllamacpp as xlc

    p = xlc.CommonParams()
    p.model.path = spec["model_path"]
    p.n_ctx = spec["n_ctx"] * spec["n_parallel"]  # every slot gets n_ctx (kv_unified off: n_ctx / n_parallel each)
    p.n_parallel = spec["n_parallel"]
    p.cpuparams.n_threads = spec["n_threads"]
    p.cpuparams_batch.n_threads = spec["n_threads_batch"]
    p.hostnames = ["127.0.0.1"]
    p.port = spec["port"]
    p.api_keys = [spec["api_key"]]
    p.cors_origins = ""  # no Access-Control-Allow-Origin: a web page the user visits cannot drive the model
    p.ui = False
    p.endpoint_slots = p.endpoint_props = p.endpoint_metrics = False
    p.cache_ram_mib = spec["cache_ram_mib"]
    p.warmup = False  # the first reply warms the model; a start answers in a fraction of a second
    p.fit_params = bool(spec.get("fit_params"))  # fitting to device memory means nothing on a CPU-only build
    p.sampling.seed = spec["seed"]
    p.verbosity = 3 if spec.get("verbose") else 2  # warnings and errors: what a failed start or a crash quotes
    if spec.get("chat_template"):
        p.chat_template = spec["chat_template"]
    if spec["lora"]:  # loaded once, every one at scale 0: each request sends its full list of scales
        p.lora_adapters = [xlc.CommonAdapterLoraInfo(path, 0.0) for path in spec["lora"]]
        p.lora_init_without_apply = True
    for key in PASSTHROUGH:
        if spec.get(key) is not None:
            setattr(p, key, spec[key])
    return p


def _reply(out: Any, **message: Any) -> None:
    out.write(json.dumps(message) + "\n")
    out.flush()


def main() -> int:
    """Start the server described by stdin's first line; serve until stdin closes."""
    # Ctrl-C in a terminal reaches the whole process group: the parent decides (it stops the reply), not us.
    # The worker stays in the parent's session, so nice and the scheduler's per-session group apply to it too.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent()
    out = sys.stdout
    line = sys.stdin.readline()
    if not line:
        return 0
    spec = json.loads(line)
    import xllamacpp as xlc

    info = xlc.get_system_info()
    missing = unsupported(info, cpu_flags(), amx_granted())
    if missing:
        _reply(out, error="refused", message=f"this xllamacpp build uses CPU features this machine lacks: "
                                             f"{', '.join(missing)}; every generation would crash")
        return 3
    try:
        server = xlc.Server(_params(spec))
    except RuntimeError as exc:  # llama.cpp's reason is on stderr, which the parent quotes
        _reply(out, error="start", message=str(exc))
        return 2
    _reply(out, address=server.listening_address, system_info=info)
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)  # nobody reads stdout from now on: output there must not fill the pipe and block llama.cpp
    sys.stdin.read()  # until the parent closes it or dies
    os._exit(0)  # the server's threads would keep an ordinary exit waiting


if __name__ == "__main__":
    sys.exit(main())
