"""The chatharuhi error tree.

Every error the library raises on purpose is a ``ChatHaruhiError``; messages name the file, line,
field or value at fault and say how to fix it.

    ChatHaruhiError
    ├── CharacterError
    │   ├── CharacterNotFound      unknown name or alias (lists close matches and all names)
    │   ├── InvalidCharacter       a broken folder or manifest (names the file and line)
    │   │   ├── AdapterNotPulled   the manifest names a catalogue adapter not pulled yet (names the pull command)
    │   │   └── UnknownAdapter     the manifest names an adapter the catalogue does not know (closest name)
    │   ├── CharacterImportError   a file that cannot be imported or exported (card, JSONL, zip, download)
    │   └── BuildError             building a character from a novel, subtitles or a script failed
    │       ├── SourceError        an unreadable source: binary, empty, too big, unknown encoding, bad epub/subtitles
    │       ├── CastError          a cast file with a malformed line
    │       ├── NameNotInSource    the character's name never occurs (lists the closest names found)
    │       ├── TooFewLines        the character has fewer lines than --min-lines (gives the count)
    │       └── OutputExists       the output folder exists and --force was not given
    ├── InputError                 bad user input: an empty message, an invalid option
    │   └── UnknownOption          a keyword argument or option nobody accepts (names the closest valid one)
    ├── TemplateError              a prompt template that is missing or lacks a variable
    ├── EmbedderError              an embedder that cannot be built or fails
    ├── BudgetError                a mandatory prompt part does not fit the token budget
    ├── BackendError
    │   ├── UnknownBackend         a backend name that is not registered
    │   ├── BackendUnavailable     no backend configured, or its extra is not installed
    │   ├── MissingAPIKey          the backend needs a key and none was given
    │   ├── BackendTimeout         the backend did not answer in time
    │   ├── WorkerCrashed          a local model's worker process died (names the signal, the cause, the fix)
    │   ├── BackendConnectionError the backend could not be reached, or dropped the stream
    │   ├── BackendResponseError   the backend answered with an error status
    │   └── ModelError             a local model file or folder is missing, corrupt or fails its hash
    │       ├── AdapterError       a LoRA adapter that is corrupt, unknown or made for another base model
    │       │   └── AdapterMismatch  a character's adapter trained for another base than the one loaded
    │       ├── UnknownModel       a model name that is not in the catalogue (lists close matches)
    │       └── ModelDownloadError a pull that failed: no network, a wrong hash, a full disk, a busy lock
    └── SessionError               a saved conversation that cannot be read or written
        └── SessionNotFound        an unknown session id
"""

from __future__ import annotations


class ChatHaruhiError(Exception):
    """Base class of every error chatharuhi raises on purpose."""


class CharacterError(ChatHaruhiError):
    """A character cannot be found or loaded."""


class CharacterNotFound(CharacterError, LookupError):
    """No character folder matches the requested name or alias."""

    def __init__(self, name: str, available: list[str], suggestions: list[str] | None = None,
                 missing_dirs: list[str] | None = None):
        self.name = name
        self.available = sorted(available)
        self.suggestions = suggestions or []
        self.missing_dirs = missing_dirs or []
        hint = f"; did you mean {', '.join(repr(s) for s in self.suggestions)}?" if self.suggestions else "."
        missing = "".join(f" The characters folder {d} does not exist." for d in self.missing_dirs)
        listing = ", ".join(self.available) if self.available else "(none found)"
        super().__init__(f"Unknown character {name!r}{hint}{missing} Available: {listing}.")


class InvalidCharacter(CharacterError, ValueError):
    """A character folder or manifest is malformed; the message names the file and line."""

    def __init__(self, message: str, path: object = None, line: int | None = None):
        self.path = path
        self.line = line
        self.reason = message  # the message without the file (for a client that must not see server paths)
        where = f"{path}:{line}: " if path is not None and line else (f"{path}: " if path is not None else "")
        super().__init__(f"{where}{message}")


class AdapterNotPulled(InvalidCharacter):
    """A character's manifest names a catalogue adapter that is not pulled; ``command`` is the pull to run."""

    def __init__(self, message: str, path: object = None, model: str = ""):
        self.model = model
        self.command = f"chatharuhi models pull {model}"
        super().__init__(message, path)


class UnknownAdapter(InvalidCharacter, LookupError):
    """A character's manifest names an adapter that is not in the catalogue; ``suggestions`` holds the closest."""

    def __init__(self, message: str, path: object = None, name: str = "", suggestions: list[str] | None = None):
        self.name = name
        self.suggestions = suggestions or []
        super().__init__(message, path)


class CharacterImportError(CharacterError, ValueError):
    """A character file (card, PNG, CHARX, JSONL, zip) or download cannot be imported or exported."""

    def __init__(self, message: str, path: object = None):
        self.path = path
        super().__init__(f"{path}: {message}" if path is not None else message)


class BuildError(CharacterError, ValueError):
    """Building a character from a novel, subtitles or a script failed; ``path`` names the file at fault."""

    def __init__(self, message: str, path: object = None):
        self.path = path
        self.reason = message
        super().__init__(f"{path}: {message}" if path is not None else message)


class SourceError(BuildError):
    """A source cannot be read: binary, empty, too big, an unknown encoding, a broken epub or subtitle file."""


class CastError(BuildError):
    """A cast file (``--cast``) that cannot be used; the message names the line."""


class NameNotInSource(BuildError, LookupError):
    """The requested character never speaks in (or is never named by) the sources; ``suggestions`` are the closest."""

    def __init__(self, name: str, suggestions: list[str], cast: list[str]):
        self.name, self.suggestions, self.cast = name, suggestions, cast
        hint = f" Closest names found: {', '.join(suggestions)}." if suggestions else ""
        listing = f" Speakers found: {', '.join(cast[:20])}{' ...' if len(cast) > 20 else ''}." if cast else ""
        super().__init__(f"{name!r} never occurs as a speaker in the sources.{hint}{listing} Pass --character with "
                         "one of them, or --alias/--cast to say how the book names them.")


class TooFewLines(BuildError):
    """The character has fewer attributed lines than the minimum."""

    def __init__(self, name: str, count: int, minimum: int):
        self.name, self.count, self.minimum = name, count, minimum
        super().__init__(f"{name!r} has only {count} line{'s' if count != 1 else ''} attributed with enough confidence "
                         f"(at least {minimum} needed): add sources, lower --threshold, or pass --min-lines {count}"
                         if count else f"{name!r} has no line attributed with enough confidence: add sources, lower "
                         "--threshold or add aliases with --alias")


class OutputExists(BuildError, FileExistsError):
    """The output folder exists; nothing was written."""


class InputError(ChatHaruhiError, ValueError):
    """Bad user input: an empty message, an invalid option."""


class UnknownOption(InputError, TypeError):
    """A keyword argument or option that is not accepted; says which valid one is closest.

    Also a ``TypeError``: Python raises that for an unexpected keyword argument, so code that catches
    it keeps working."""

    def __init__(self, name: str, where: str, valid: "list[str] | tuple[str, ...] | frozenset[str]" = (),
                 hint: str = "", kind: str = "keyword argument"):
        import difflib

        self.name, self.where, self.valid = name, where, sorted(valid)
        close = difflib.get_close_matches(name, self.valid, n=1, cutoff=0.6)
        self.suggestion = close[0] if close else None
        mean = f"; did you mean {self.suggestion!r}?" if self.suggestion else "."
        listing = f" Valid: {', '.join(self.valid)}." if self.valid and len(self.valid) <= 40 else ""
        super().__init__(f"{where} got an unknown {kind} {name!r}{mean}{listing}{(' ' + hint) if hint else ''}")


class TemplateError(ChatHaruhiError):
    """A prompt template is missing or was rendered without one of its variables."""


class EmbedderError(ChatHaruhiError):
    """An embedder cannot be built or failed to embed."""


class BudgetError(ChatHaruhiError, ValueError):
    """A mandatory part of the prompt does not fit in the token budget."""

    def __init__(self, message: str, part: str | None = None, tokens: int | None = None, budget: int | None = None):
        self.part = part
        self.tokens = tokens
        self.budget = budget
        super().__init__(message)


class BackendError(ChatHaruhiError):
    """A language-model backend failed."""


class UnknownBackend(BackendError, LookupError):
    """A backend name that is not registered."""

    def __init__(self, name: str, available: list[str], suggestion: str | None = None):
        import difflib

        self.name = name
        self.available = sorted(set(available))
        if suggestion is None:
            close = difflib.get_close_matches(name, self.available, n=1, cutoff=0.6)
            suggestion = close[0] if close else None
        self.suggestion = suggestion
        mean = f"; did you mean {suggestion!r}?" if suggestion else "."
        super().__init__(f"Unknown backend {name!r}{mean} Available: {', '.join(self.available)}")


class BackendUnavailable(BackendError):
    """No backend is configured, or a backend's optional dependency is missing."""


class MissingAPIKey(BackendError):
    """The backend needs an API key and none was given."""


class BackendTimeout(BackendError, TimeoutError):
    """The backend did not answer in time."""


class WorkerCrashed(BackendError):
    """A local model's worker process died (a signal or an exit); the next request starts a fresh one."""

    def __init__(self, message: str, signal: str | None = None, exit_code: int | None = None):
        self.signal = signal
        self.exit_code = exit_code
        super().__init__(message)


class BackendConnectionError(BackendError, ConnectionError):
    """The backend could not be reached, or the connection dropped mid-stream."""


class BackendResponseError(BackendError):
    """The backend answered with an error status."""

    def __init__(self, message: str, status_code: int | None = None):
        self.status_code = status_code
        super().__init__(message)


class ModelError(BackendError):
    """A local model file or folder is missing, corrupt, or does not match its pinned hash."""


class AdapterError(ModelError):
    """A LoRA adapter folder that is corrupt, unknown, or was trained for another base model."""


class UnknownModel(ModelError, LookupError):
    """A model name that is not in the catalogue of pullable models."""

    def __init__(self, name: str, available: list[str], suggestions: list[str] | None = None):
        self.name = name
        self.available = sorted(available)
        self.suggestions = suggestions or []
        hint = f"; did you mean {', '.join(repr(s) for s in self.suggestions)}?" if self.suggestions else ""
        super().__init__(f"Unknown model {name!r}{hint} Known models: {', '.join(self.available)} "
                         "(see `chatharuhi models list`), or pass a path to a .gguf file")


class ModelDownloadError(ModelError):
    """Pulling a model failed: no network, a hash mismatch, a full disk, or another pull holds the lock."""


class AdapterMismatch(AdapterError):
    """A character's adapter was trained for another base model than the backend runs (names both)."""

    def __init__(self, message: str, adapter_base: str = "", loaded_base: str = ""):
        self.adapter_base, self.loaded_base = adapter_base, loaded_base
        super().__init__(message)


class SessionError(ChatHaruhiError):
    """A saved conversation cannot be read or written."""


class SessionNotFound(SessionError, LookupError):
    """No session has this id."""
