"""The Gradio web demo from a source checkout: ``python apps/web_demo.py [--port 7860] [--backend NAME]``.

The app itself lives in the package (``chatharuhi/web/app.py``) so that ``chatharuhi demo`` works from an
installed wheel too; this file is the same command for people browsing ``apps/``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from chatharuhi.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["demo", *sys.argv[1:]]))
