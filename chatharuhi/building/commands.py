"""``chatharuhi build-character``: the command-line side of ``chatharuhi.building``."""

from __future__ import annotations

import argparse
import sys

from ..config import BUILD_MAX_LLM_CALLS, BUILD_MIN_LINES, BUILD_THRESHOLD


def add_parsers(sub) -> None:
    """Add the build-character sub-command."""
    p = sub.add_parser("build-character", help="build a character folder from novels (.txt, .epub), subtitles "
                       "(.srt, .ass) or scripts")
    p.add_argument("sources", nargs="+", metavar="SOURCE", help="the book(s), subtitle or script files")
    p.add_argument("--character", required=True, metavar="NAME", help="who to build, as the source names them")
    p.add_argument("--alias", action="append", default=[], metavar="A", help="another name of theirs (repeatable)")
    p.add_argument("--cast", metavar="FILE", help="the cast: one character a line, names separated by '|', main "
                   "name first (default: found in the text)")
    p.add_argument("--report", metavar="FILE.jsonl", help="write one JSON object per quotation found")
    p.add_argument("--out", metavar="DIR", help="the character folder to write (default: ./NAME)")
    p.add_argument("--min-lines", type=int, default=BUILD_MIN_LINES,
                   help=f"refuse a character with fewer lines (default {BUILD_MIN_LINES})")
    p.add_argument("--threshold", type=float, default=BUILD_THRESHOLD,
                   help=f"confidence below which a quotation stays narration (default {BUILD_THRESHOLD})")
    p.add_argument("--force", action="store_true", help="replace an existing output folder")
    p.add_argument("--work", help="the work's title for the system prompt (default: the sources' titles)")
    p.add_argument("--backend", help="an LLM backend for the uncertain quotations (openai, llama_cpp, embedded...)")
    p.add_argument("--model", help="model for --backend")
    p.add_argument("--base-url", help="OpenAI-compatible server for --backend openai")
    p.add_argument("--api-key", help="API key (default: OPENAI_API_KEY)")
    p.add_argument("--max-llm-calls", type=int, default=BUILD_MAX_LLM_CALLS,
                   help=f"at most this many LLM requests (default {BUILD_MAX_LLM_CALLS})")
    p.add_argument("--cast-only", action="store_true", help="print the cast with line counts and stop")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _llm(args: argparse.Namespace):
    if not args.backend:
        if args.model or args.base_url:
            from ..errors import InputError

            raise InputError("--model and --base-url need --backend (the LLM pass is off without it)")
        return None
    from ..backends.registry import resolve_backend

    options = {k: v for k, v in {"model": args.model, "base_url": args.base_url, "api_key": args.api_key}.items()
               if v}
    return resolve_backend(args.backend, **options)


def cmd_build_character(args: argparse.Namespace) -> int:
    """Build the folder; print where it is, the cast table and what to do next."""
    from .analysis import analyse
    from .build import build_character

    log = lambda m: print(m, file=sys.stderr)  # noqa: E731
    analysis = analyse(args.sources, cast=args.cast, character=args.character, aliases=tuple(args.alias),
                       threshold=args.threshold, progress=not args.no_progress, log=log)
    if args.cast_only:
        print_cast(analysis)
        return 0
    result = build_character(args.sources, args.character, out=args.out, aliases=tuple(args.alias), cast=args.cast,
                             report=args.report, min_lines=args.min_lines, threshold=args.threshold,
                             force=args.force, llm=_llm(args), max_llm_calls=args.max_llm_calls, work=args.work,
                             progress=not args.no_progress, log=log, analysis=analysis)
    print_cast(analysis, limit=10)
    print(f"{result.path}: {result.name}, {result.lines} lines in {result.scenes} scenes")
    print(f"next: edit {result.path}/system_prompt.txt (a draft), then `chatharuhi validate {result.path}` and "
          f"`chatharuhi chat {result.path.name} --characters-dir {result.path.parent}`")
    return 0


def print_cast(analysis, limit: int | None = None) -> None:
    """The cast with each one's lines at the threshold, and the merges made."""
    counts = analysis.counts()
    ranked = sorted(analysis.cast.members, key=lambda m: -counts.get(m.name, 0))
    for m in ranked[:limit] if limit else ranked:
        aliases = f"  ({', '.join(m.aliases)})" if m.aliases else ""
        print(f"{counts.get(m.name, 0):6d}  {m.name}{aliases}")
    unknown = sum(1 for line in analysis.lines if analysis.speaker(line) is None)
    print(f"{unknown:6d}  (not sure enough: kept as narration)")


COMMANDS = {"build-character": cmd_build_character}
