"""What keyword checking costs a turn: ``prepare()`` with the checked constructors, then with the checks
removed, alternating in one process (hash embedder, debug backend, a real ChatHaruhi fixture character).

    PYTHONPATH=. python benchmarks/bench_options.py [../shared/fixtures/chatharuhi/haruhi]

Prints the median ``prepare()`` time of each mode (best of 5 rounds of 50 queries) and their ratio.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT.parent / "shared" / "fixtures" / "chatharuhi" / "haruhi"
WORDS = "学校 棒球 外星人 社团 电脑 夏天 合宿 电影 超能力 未来人".split()


def main() -> None:
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT
    os.environ.setdefault("CHATHARUHI_HOME", tempfile.mkdtemp(prefix="bench-options-"))
    import chatharuhi
    from chatharuhi import ChatHaruhi

    bot = ChatHaruhi(system_prompt=str(folder / "system_prompt.txt"), story_text_folder=str(folder / "texts"),
                     llm="debug", embedder="hash")
    queries = [f"今天我们去{w}吧" for w in WORDS] * 5
    classes = [getattr(chatharuhi, n) for n in chatharuhi.__all__ if isinstance(getattr(chatharuhi, n), type)]
    checked = {c: c.__init__ for c in classes
               if getattr(c.__init__, "__strict__", False) and hasattr(c.__init__, "__wrapped__")}

    def median_ms() -> float:
        times = []
        for q in queries:
            start = time.perf_counter()
            bot.prepare(q, "阿虚")
            times.append((time.perf_counter() - start) * 1e3)
        return statistics.median(times)

    strict, unchecked = [], []
    for _ in range(5):
        strict.append(median_ms())
        for cls in checked:
            cls.__init__ = checked[cls].__wrapped__
        unchecked.append(median_ms())
        for cls, init in checked.items():
            cls.__init__ = init
    s, u = min(strict), min(unchecked)
    print(f"prepare() median: checked {s:.3f} ms, unchecked {u:.3f} ms, ratio {s / u:.3f} "
          f"({len(checked)} checked public constructors, {len(bot.index.scenes)} scenes)")


if __name__ == "__main__":
    main()
