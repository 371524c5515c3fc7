"""ChatHaruhi compatibility: its constructor keywords, names and methods, running on this engine.

``ChatHaruhi(...)`` hands its ChatHaruhi-style keywords to ``resolve_legacy``, which turns them into
this engine's terms: a ``Character`` (sources.py, roles.py), a backend name and options (llms.py)
and an embedder (embedding.py). The old methods and attributes live in api.py. Every old keyword
either works or raises a typed error that says what to use instead; none is dropped.
"""

from __future__ import annotations

from .api import REPLY_FORMATS, ChatHaruhi, untag
from .embedding import EMBEDDING_NAMES
from .legacy import Legacy, build_index, resolve_legacy, seed_story_vectors
from .llms import LEGACY_LLM_NAMES
from .roles import BUILTIN_ROLES, ROLE_NAMES, builtin_role_spec

__all__ = ["BUILTIN_ROLES", "EMBEDDING_NAMES", "LEGACY_LLM_NAMES", "REPLY_FORMATS", "ROLE_NAMES", "ChatHaruhi",
           "Legacy", "build_index", "builtin_role_spec", "resolve_legacy", "seed_story_vectors", "untag"]
