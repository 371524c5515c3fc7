"""What a verified, resumable pull costs over a bare download: ``chatharuhi.pull_model`` against
huggingface_hub's own ``http_get`` of the same file from the same local hub mirror, in one run.

    python benchmarks/bench_pull.py [--mb 200] [--repeat 3]

Prints the median seconds of each and the ratio; the last line is JSON. The difference is the
sha256 pass over the finished file (and the metadata request), which a bare download skips.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from helpers.hub_mirror import HubMirror  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=200, help="file size in MB (default 200)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-pull-"))
    data = work / "m.gguf"
    with open(data, "wb") as f:
        f.write(b"GGUF")
        f.write(os.urandom(args.mb * 1_000_000 - 4))
    os.environ.update(CHATHARUHI_HOME=str(work / "home"), HF_HUB_DISABLE_PROGRESS_BARS="1")
    os.environ.pop("HF_HUB_OFFLINE", None)
    from huggingface_hub import file_download, get_hf_file_metadata, hf_hub_url

    from chatharuhi.models import pull_model, remove

    ours, raw = [], []
    with HubMirror({("bench/m-GGUF", "m.gguf"): data}, commit="b" * 40) as hub:
        os.environ["HF_ENDPOINT"] = hub.endpoint
        (work / "home").mkdir()
        (work / "home" / "models.toml").write_text(
            f'[[model]]\nname = "bench"\nrepo = "bench/m-GGUF"\nrevision = "{"b" * 40}"\nfiles = [{{filename = '
            f'"m.gguf", sha256 = "{hub.sha256("bench/m-GGUF", "m.gguf")}", size = {data.stat().st_size}}}]\n')
        for _ in range(args.repeat):
            start = time.perf_counter()
            pull_model("bench", progress=False, log=None)
            ours.append(time.perf_counter() - start)
            remove("bench")
            start = time.perf_counter()
            url = hf_hub_url("bench/m-GGUF", "m.gguf", revision="b" * 40, endpoint=hub.endpoint)
            meta = get_hf_file_metadata(url, endpoint=hub.endpoint)
            with open(work / "raw.gguf", "wb") as f:
                file_download.http_get(meta.location, f, expected_size=meta.size)
            raw.append(time.perf_counter() - start)
            (work / "raw.gguf").unlink()
    shutil.rmtree(work)
    result = {"mb": args.mb, "ours_s": round(statistics.median(ours), 3), "raw_s": round(statistics.median(raw), 3)}
    result["ours_over_raw"] = round(result["ours_s"] / result["raw_s"], 2)
    print(f"pull_model {result['ours_s']} s, bare http_get {result['raw_s']} s (median of {args.repeat}, "
          f"{args.mb} MB, local mirror)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
