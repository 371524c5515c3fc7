"""The web app's "Build a character from a book" section: upload novels, subtitles or scripts, see the cast the
tool found with each one's lines, pick one, preview their scenes, save the folder (chatharuhi.building)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config import BUILD_THRESHOLD
from ..errors import ChatHaruhiError, InputError
from .characters import MAX_UPLOAD_BYTES
from .render import literal, toast

SOURCE_TYPES = [".txt", ".epub", ".srt", ".ass", ".ssa"]
MAX_FILES = 20
CAST_ROWS = 30
PREVIEW_SCENES = 3


def _paths(files: Any) -> list[Path]:
    items = files if isinstance(files, list) else [files] if files else []
    paths = [Path(getattr(f, "name", f)) for f in items]
    if not paths:
        raise InputError("upload a novel (.txt, .epub), subtitles (.srt, .ass) or a script first")
    if len(paths) > MAX_FILES:
        raise InputError(f"at most {MAX_FILES} files at once")
    for p in paths:
        if p.stat().st_size > MAX_UPLOAD_BYTES:
            raise InputError(f"{p.name} is {p.stat().st_size / 2**20:.0f} MB; the limit is "
                             f"{MAX_UPLOAD_BYTES // 2**20} MB")
    return paths


def find_cast(files: Any, cast_text: str, threshold: float | None):
    """Read the uploads and attribute every quotation; the cast table, the pick list and the analysis."""
    from ..building.analysis import analyse
    from ..building.cast import parse_cast

    paths = _paths(files)
    cast = None
    if (cast_text or "").strip():
        from ..character.folder import detect_language

        cast = parse_cast(cast_text, "the cast box", detect_language(cast_text))
    analysis = analyse(paths, cast=cast, threshold=BUILD_THRESHOLD if threshold is None else float(threshold))
    for s in analysis.sources:  # the report names the upload, not the server's temporary path
        s.path = Path(s.path).name
    counts = analysis.counts()
    ranked = sorted(analysis.cast.members, key=lambda m: -counts.get(m.name, 0))
    rows = ["| lines | character | also called |", "|---:|---|---|"]
    rows += [f"| {counts.get(m.name, 0)} | {_cell(m.name)} | {_cell(', '.join(m.aliases))} |"
             for m in ranked[:CAST_ROWS]]
    unsure = sum(1 for line in analysis.lines if analysis.speaker(line) is None)
    merges = f"\n\nMerged names (give a cast to undo one): {literal('; '.join(analysis.cast.merges))}" \
        if analysis.cast.merges else ""
    read = literal("; ".join(f"{Path(s.path).name}: {s.kind}, {s.encoding}" for s in analysis.sources))
    table = "\n".join(rows) + f"\n\n{unsure} quotations not sure enough stay narration. Read: {read}.{merges}"
    choices = [m.name for m in ranked if counts.get(m.name, 0)]
    return table, choices, analysis


def preview(analysis: Any, name: str) -> str:
    """The first scenes the character would get."""
    from ..building.build import find_member
    from ..building.scenes import cut_scenes

    if analysis is None:
        raise InputError("find the cast first")
    if not name:
        raise InputError("pick a character")
    member = find_member(analysis, name)
    scenes = cut_scenes(analysis, member)
    shown = "\n\n".join(f"**{literal(s.name)}**\n\n{literal(s.text)}" for s in scenes[:PREVIEW_SCENES])
    return f"{len(scenes)} scenes, {analysis.counts().get(analysis.cast.members[member].name, 0)} lines.\n\n{shown}"


def _cell(text: str) -> str:
    """Text for a Markdown table cell, shown literally (a ``|`` in a name does not split the row)."""
    return literal(text).replace("|", "\\|")


def save(analysis: Any, name: str, folder: str, min_lines: int | None, shelf: Any, owner: str) -> str:
    """Write the character as the browser ``owner``'s own, as imports are (``Shelf``); returns the folder name."""
    from ..building.build import build_character
    from ..interop.folder import safe_name

    if analysis is None:
        raise InputError("find the cast first")
    if not name:
        raise InputError("pick a character")
    folder = (folder or "").strip() or safe_name(name.replace(" ", "_"))
    if safe_name(folder) != folder or folder.startswith("."):
        raise InputError(f"the folder name {folder!r} has characters a folder name cannot have: use letters, "
                         "digits, - or _")
    to = shelf.destination(owner)
    if shelf.free_name(folder) != folder:
        raise InputError(f"a character called {folder!r} already exists: pick another folder name")
    result = build_character([], name, out=to / folder, analysis=analysis, threshold=analysis.threshold,
                             min_lines=int(min_lines or 5))
    return shelf.added(result.path, owner)


def build_section(gr, demo, c: dict) -> None:
    """The accordion and its events (called inside the Blocks, next to "Add a character")."""
    with gr.Accordion("Build a character from a book", open=False, elem_id="build-character"):
        files = gr.File(label="Novels (.txt, .epub), subtitles (.srt, .ass) or scripts", file_count="multiple",
                        file_types=SOURCE_TYPES, elem_id="build-files")
        cast_text = gr.Textbox(label="Cast (optional): one character a line, names separated by |", lines=2,
                               elem_id="build-cast")
        threshold = gr.Number(label="Confidence threshold (lower: more lines, more mistakes)", value=BUILD_THRESHOLD,
                              minimum=0, maximum=1, step=0.05, elem_id="build-threshold")
        find = gr.Button("Find the cast", elem_id="build-find")
        table = gr.Markdown(elem_id="build-cast-table")
        pick = gr.Dropdown([], label="Character", value=None, elem_id="build-pick")
        show = gr.Button("Preview scenes", size="sm", elem_id="build-preview")
        scenes = gr.Markdown(elem_id="build-scenes")
        folder = gr.Textbox(label="Folder name (optional)", max_lines=1, elem_id="build-folder")
        min_lines = gr.Number(label="Fewest lines to accept", value=5, precision=0, minimum=1, elem_id="build-min")
        go = gr.Button("Save character", variant="primary", elem_id="build-save")
        status = gr.Markdown(elem_id="build-status")
        state = gr.State(None)

    def on_find(f, text, thr):
        try:
            tbl, choices, analysis = find_cast(f, text, thr)
        except ChatHaruhiError as exc:
            raise gr.Error(toast(str(exc))) from None
        return tbl, gr.update(choices=choices, value=choices[0] if choices else None), analysis, ""

    def on_preview(analysis, name):
        try:
            return preview(analysis, name)
        except ChatHaruhiError as exc:
            raise gr.Error(toast(str(exc))) from None

    def on_save(analysis, name, fold, least, tab):
        owner = tab.owner if tab is not None else ""
        try:
            saved = save(analysis, name, fold, least, demo.shelf, owner)
        except ChatHaruhiError as exc:
            raise gr.Error(toast(str(exc))) from None
        return (f"Saved as **{literal(saved)}**: pick it under Character. Its system prompt is a draft: edit it.",
                gr.update(choices=demo.choices(owner)))

    find.click(on_find, inputs=[files, cast_text, threshold], outputs=[table, pick, state, status],
               api_name="build_find_cast")
    show.click(on_preview, inputs=[state, pick], outputs=[scenes], api_name="build_preview")
    go.click(on_save, inputs=[state, pick, folder, min_lines, c["tab"]], outputs=[status, c["character"]],
             api_name="build_save")
