"""The worker process of a local GGUF model: ``python -m chatharuhi.backends.llama_cpp.worker_main FD``.

It receives ``("load", kwargs)``, checks that this llama.cpp build can run on this CPU, loads the
model and answers ``("ready", info)``; then serves ``("generate", request)`` messages one at a time,
answering ``start``, ``progress`` (after every prefill batch: the parent's proof of life), ``chunk``
and ``done`` messages, and stopping early on ``("cancel",)``. Token ids come rendered from the
parent, so llama.cpp's KV cache keeps whatever prefix two consecutive prompts share.
With ``n_threads="auto"`` and OpenMP threads that spin, it sets each generation's thread count from
the machine's load first (``worker_threads.py``). ``("adapter", {"id", "path", "scale"})`` loads a
GGUF LoRA adapter onto the model (``worker_adapters.py``); a generation names the adapter it runs
under (or none: the base model), and a switch drops the KV cache. Besides the standard library it
imports llama_cpp and chatharuhi's (light) package modules.
"""

from __future__ import annotations

import ctypes
import os
import re
import signal
import sys
import time
from collections import deque
from multiprocessing.connection import Connection
from typing import Any

from .adapters import AdapterRejected, Adapters
from .threads import ThreadGovernor, waits_passively

# llama.cpp's system info names the CPU features the build uses; these are /proc/cpuinfo's names for them.
CPU_FLAGS = {
    "AVX": "avx", "AVX2": "avx2", "F16C": "f16c", "FMA": "fma", "BMI2": "bmi2", "AVX_VNNI": "avx_vnni",
    "AVX512": "avx512f", "AVX512_VBMI": "avx512vbmi", "AVX512_VNNI": "avx512_vnni", "AVX512_BF16": "avx512_bf16",
    "AMX_INT8": "amx_int8",
}
_ARCH_REQ_XCOMP_PERM, _XFEATURE_XTILEDATA, _SYS_ARCH_PRCTL = 0x1023, 18, 158


def build_features(system_info: str) -> set[str]:
    """CPU features a llama.cpp build uses, from ``llama_print_system_info`` ("AVX2 = 1 | ...")."""
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


def _amx_granted() -> bool:
    """Whether the kernel lets this process use AMX tiles (Linux arch_prctl ARCH_REQ_XCOMP_PERM)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.syscall(_SYS_ARCH_PRCTL, _ARCH_REQ_XCOMP_PERM, _XFEATURE_XTILEDATA) == 0
    except (OSError, AttributeError):
        return False


def unsupported(system_info: str, flags: set[str] | None, amx_granted: bool) -> list[str]:
    """Features the build uses that this CPU lacks or does not grant (empty: safe to run)."""
    if flags is None:  # not Linux: nothing to compare with
        return []
    missing = [name for name in sorted(build_features(system_info))
               if name in CPU_FLAGS and CPU_FLAGS[name] not in flags]
    if "AMX_INT8" in build_features(system_info) and "AMX_INT8" not in missing and not amx_granted:
        missing.append("AMX_INT8 (advertised, but the kernel does not grant the tile state)")
    return missing


_log: deque = deque(maxlen=60)  # llama.cpp's recent log lines: (level, text)
_ERROR = 4  # ggml_log_level: NONE 0, DEBUG 1, INFO 2, WARN 3, ERROR 4, CONT 5


def _capture_log(echo: bool) -> Any:
    """Route llama.cpp's log here, so a failed load can say why (llama-cpp-python hides it when not verbose)."""
    import llama_cpp

    @llama_cpp.llama_log_callback
    def callback(level: int, text: bytes, user_data: Any) -> None:
        line = text.decode("utf-8", "replace")
        _log.append((level, line))
        if echo:
            sys.stderr.write(line)

    llama_cpp.llama_log_set(callback, ctypes.c_void_p(0))
    return callback  # kept alive by the caller


def _why() -> str:
    said = "".join(text for level, text in _log if level == _ERROR).split("\n")
    said = [line.strip() for line in said if line.strip()]
    return f" llama.cpp said: {' / '.join(said[-3:])}" if said else ""


def _load(spec: dict) -> Any:
    import llama_cpp

    from ...config import LLAMA_CPP_INSTALL

    info = llama_cpp.llama_print_system_info().decode("utf-8", "replace")
    missing = unsupported(info, cpu_flags(), _amx_granted())
    if missing:
        raise _Refused(f"this llama-cpp-python build uses CPU features this machine lacks: {', '.join(missing)}; "
                       f"every generation would crash. Reinstall it with the portable flags: {LLAMA_CPP_INSTALL}")
    try:  # verbose=True keeps llama.cpp's own messages (to our log callback and a stderr the parent reads)
        llm = llama_cpp.Llama(**{**spec, "verbose": True})
    except ValueError as exc:  # llama.cpp's "Failed to load model from file"
        raise _BadModel(f"{spec.get('model_path')}: llama.cpp cannot load it ({exc}); is it a complete GGUF file "
                        f"of an architecture this llama-cpp-python supports?{_why()}") from None
    return llm, info


class _Refused(Exception):
    pass


class _BadModel(Exception):
    pass


def _set_threads(llm: Any, governor: ThreadGovernor | None, batch_too: bool, stats: dict[str, Any]) -> None:
    """As many threads as the cores other programs leave free (``n_threads="auto"``); stats say what was used."""
    import llama_cpp

    if governor is not None:
        threads, others = governor.choose()
        batch = threads if batch_too else llm.n_threads_batch
        if (threads, batch) != (llm.n_threads, llm.n_threads_batch):
            llama_cpp.llama_set_n_threads(llm.ctx, threads, batch)
            llm.n_threads, llm.n_threads_batch = threads, batch
        if others is not None:
            stats.setdefault("others_busy", round(others, 2))  # as seen when the generation started
    stats.setdefault("n_threads", llm.n_threads)
    stats.setdefault("n_threads_batch", llm.n_threads_batch)
    seen = stats.setdefault("threads_seen", [])
    if not seen or seen[-1] != llm.n_threads:
        seen.append(llm.n_threads)


def _generate(conn: Connection, llm: Any, request: dict, adapters: Adapters,
              governor: ThreadGovernor | None = None, batch_too: bool = False) -> None:
    import llama_cpp

    tokens = request["tokens"]
    switched = adapters.select(request.get("adapter"))
    if request.get("reset") or switched:  # a KV cache computed under another adapter must not be reused
        llm.reset()
    stop_ids = set(request.get("stop_ids") or ())
    stats: dict[str, Any] = {"prompt_tokens": len(tokens), "reused_tokens": 0, "prefill_tokens": 0,
                             "prefill_s": 0.0, "decode_tokens": 0, "adapter": adapters.active,
                             "adapter_switched": switched}
    _set_threads(llm, governor, batch_too, stats)
    original = type(llm).eval
    t0 = time.perf_counter()
    prefill = [True]  # llama-cpp's first eval call of a generation is the prompt (maybe empty: all cached)

    def timed_eval(batch):
        start, batch = time.perf_counter(), list(batch)
        if not prefill[0]:
            if governor is not None and governor.due():
                _set_threads(llm, governor, batch_too, stats)
            original(llm, batch)
            stats["decode_tokens"] += len(batch)
            return
        prefill[0] = False
        stats["reused_tokens"] = llm.n_tokens  # what llama-cpp kept of the previous prompt's KV cache
        step = max(1, llm.n_batch)
        for i in range(0, len(batch), step):  # batch by batch, telling the parent we are alive
            if i and governor is not None and governor.due():
                _set_threads(llm, governor, batch_too, stats)
            original(llm, batch[i:i + step])
            conn.send(("progress", {"prefill_done": min(len(batch), i + step)}))
        stats["prefill_tokens"] = len(batch)
        stats["prefill_s"] = time.perf_counter() - start
        conn.send(("start", dict(stats)))

    llm.eval = timed_eval
    criteria = None
    if stop_ids:
        criteria = llama_cpp.StoppingCriteriaList([lambda ids, logits: int(ids[-1]) in stop_ids])
    chunks = llm.create_completion(prompt=tokens, max_tokens=request["max_tokens"], stop=request["stop"],
                                   stopping_criteria=criteria, stream=True, **request["params"])
    try:
        for chunk in chunks:
            if conn.poll() and conn.recv() == ("cancel", request["id"]):  # a late cancel of an earlier job: ignored
                stats["cancelled"] = True
                break
            text = chunk["choices"][0]["text"]
            if chunk["choices"][0].get("finish_reason"):
                stats["finish_reason"] = chunk["choices"][0]["finish_reason"]
            if text:
                if "first_token_s" not in stats:
                    stats["first_token_s"] = time.perf_counter() - t0
                conn.send(("chunk", text))
    finally:
        chunks.close()
        del llm.eval
    stats["total_s"] = time.perf_counter() - t0
    conn.send(("done", stats))


def main(argv: list[str]) -> int:
    """Serve one model over the socket whose descriptor is ``argv[1]``."""
    # Ctrl-C in a terminal reaches the whole process group: the parent decides (it stops the reply), not us.
    # The child stays in the parent's session, so nice and the scheduler's per-session group apply to it too.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    conn = Connection(int(argv[1]))
    try:
        _, spec, options = conn.recv()
    except EOFError:
        return 0
    # Started before the model loads, so that the first generation has a window to measure the load in.
    # Threads that sleep when they wait cannot collapse on a busy machine: then every core, always.
    auto = options.get("auto_threads") and not waits_passively(os.environ)
    governor = ThreadGovernor(spec["n_threads"]) if auto else None
    keep = _capture_log(bool(spec.get("verbose")))  # noqa: F841 - the C side holds a pointer to it
    try:
        llm, info = _load(spec)
    except _Refused as exc:
        conn.send(("error", "refused", str(exc)))
        return 3
    except _BadModel as exc:
        conn.send(("error", "model", str(exc)))
        return 2
    conn.send(("ready", {"n_ctx": llm.n_ctx(), "n_threads": llm.n_threads, "n_batch": llm.n_batch,
                         "adaptive_threads": governor is not None,
                         "n_ubatch": llm.context_params.n_ubatch, "system_info": info}))
    adapters = Adapters(llm)
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):  # the parent went away
            return 0
        if message[0] == "generate":
            try:
                _generate(conn, llm, message[1], adapters, governor,
                          bool(auto and options.get("auto_threads_batch")))
            except (BrokenPipeError, ConnectionResetError):
                return 0
            except Exception as exc:  # reported to the caller; the worker stays usable
                conn.send(("error", f"{type(exc).__name__}: {exc}"))
        elif message[0] == "adapter":
            request = message[1]
            _log.clear()  # so that _why() quotes this load's complaint
            try:
                adapters.load(request["id"], request["path"], request["scale"])
            except AdapterRejected as exc:
                conn.send(("error", "model", f"{exc}{_why()}"))
            else:
                conn.send(("adapter_ready", {"id": request["id"], "loaded": len(adapters.loaded)}))
        elif message[0] == "close":
            return 0  # anything else (a cancel that came after its job ended) needs no answer


if __name__ == "__main__":
    sys.exit(main(sys.argv))
