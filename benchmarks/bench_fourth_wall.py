"""How often an imported card's replies talk about their sources ("the original scene is from the first chapter
of the story ..."): replies that mention scene, original, chapter or story, out of N generations.

Run from the repository root:  python benchmarks/bench_fourth_wall.py --cards CARD... [--n 50]
(see benchmarks/README.md). Each card (a real SillyTavern PNG or JSON card) is imported with the importer
of the checkout on ``sys.path`` (so the same script measures a "before" checkout: ``PYTHONPATH=OLD python
benchmarks/bench_fourth_wall.py``), then each generation is a fresh one-turn chat with the embedded model
(SmolLM2-135M, llama.cpp), a message from QUESTIONS (none of which contains a counted word) and its own
seed. The last line of output is one JSON object.

The cards used for the figures in benchmarks/README.md are SillyTavern's own default characters
(default/content/default_Seraphina.png and default_FluxTheCat.png in the SillyTavern repository) and the
"Dr. Morgan Chen" template card of a public character-writing guide; they are not shipped here.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

WORDS = re.compile(r"\b(scenes?|original(?:ly)?|chapters?|stor(?:y|ies))\b", re.IGNORECASE)
QUESTIONS = [
    "Hello! Who are you?", "What are you doing right now?", "How do you feel today?", "What do you like most?",
    "Do you remember me?", "Where are we?", "What should we do next?", "Can you help me with something?",
    "Why are you here?", "What is your favourite food?",
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cards", nargs="+", required=True, help="SillyTavern cards (PNG or JSON)")
    parser.add_argument("--n", type=int, default=50, help="generations in all, spread over the cards (default 50)")
    parser.add_argument("--label", default="", help="a name for this checkout in the JSON line")
    parser.add_argument("--show", action="store_true", help="print every reply")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="bench-fourth-wall-"))
    os.environ["CHATHARUHI_HOME"] = str(home)
    import chatharuhi
    from chatharuhi import ChatHaruhi
    from chatharuhi.interop import import_character

    characters = []
    for card in args.cards:
        folder = import_character(card, home / "characters")
        characters.append(folder)
        sizes = sorted(len(p.read_text(encoding="utf-8")) for p in (folder / "texts").glob("*.txt"))
        print(f"{Path(card).name}: imported as {folder.name}, {len(sizes)} scenes, longest {sizes[-1]} chars",
              file=sys.stderr)
    counted, per_card, replies, started = 0, {c.name: [0, 0] for c in characters}, [], time.perf_counter()
    bots = {c.name: ChatHaruhi(c.name, llm="embedded", embedder="hash") for c in characters}
    for i in range(args.n):
        folder = characters[i % len(characters)]
        question = QUESTIONS[(i // len(characters)) % len(QUESTIONS)]
        bot = bots[folder.name]
        bot.reset()
        reply = bot.chat(question, seed=i)
        hit = bool(WORDS.search(reply))
        counted += hit
        per_card[folder.name][0] += hit
        per_card[folder.name][1] += 1
        replies.append({"card": folder.name, "question": question, "reply": reply, "mentions": hit})
        if args.show or hit:
            print(f"[{i}] {folder.name} <- {question!r}{' (MENTIONS)' if hit else ''}\n    {reply!r}", file=sys.stderr)
    took = time.perf_counter() - started
    header = bots[characters[0].name]._header
    print(f"story header: {header!r}")
    for name, (hits, n) in per_card.items():
        print(f"{name}: {hits} of {n} replies mention scene/original/chapter/story")
    print(f"all: {counted} of {args.n} ({100 * counted / args.n:.0f} %) in {took:.0f} s")
    (home / "replies.json").write_text(json.dumps(replies, ensure_ascii=False, indent=1), encoding="utf-8")
    print(json.dumps({"bench": "fourth_wall", "label": args.label, "version": chatharuhi.__version__,
                      "generations": args.n, "mentioning": counted, "share": round(counted / args.n, 3),
                      "per_card": {k: v[0] for k, v in per_card.items()}, "replies_file": str(home / "replies.json"),
                      "seconds": round(took, 1)}, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
