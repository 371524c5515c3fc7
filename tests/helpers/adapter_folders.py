"""A character folder that names a LoRA adapter in its manifest, for the adapter tests."""

from __future__ import annotations

from pathlib import Path

SCENE = "Watson:「Where were you last night?」\nHolmes:「At the club, Watson.」\n"


def character_folder(root: Path, name: str, adapter_table: str) -> Path:
    """``root/name`` with a system prompt, one scene in which ``name`` speaks, and ``adapter_table`` in its manifest."""
    folder = root / name
    (folder / "texts").mkdir(parents=True, exist_ok=True)
    (folder / "system_prompt.txt").write_text(f"You are {name}.", encoding="utf-8")
    (folder / "texts" / "01.txt").write_text(SCENE.replace("Holmes", name), encoding="utf-8")
    (folder / "character.toml").write_text(f'language = "en"\n{adapter_table}', encoding="utf-8")
    return folder
