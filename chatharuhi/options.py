"""Keyword checking: nothing a caller passes is silently ignored.

A public function or constructor names every keyword it accepts. Python already refuses an
unknown keyword with a bare ``TypeError``; ``@strict`` turns that into ``UnknownOption``, which
names the closest valid keyword. A callable that forwards ``**options`` (a backend's constructor,
``get_backend``) checks them itself with ``check_options`` against what the receiver declares.

    @strict
    def load_character(folder): ...
    load_character(foldr="x")   # UnknownOption: load_character() got an unknown keyword argument
                                # 'foldr'; did you mean 'folder'?
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, Iterable, TypeVar

from .errors import UnknownOption

T = TypeVar("T")
_NAMED = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


def parameter_names(fn: Callable[..., Any]) -> tuple[frozenset[str], bool]:
    """The keywords ``fn`` accepts by name (``self`` excluded), and whether it also takes ``**kwargs``."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature: nothing to check
        return frozenset(), True
    names = frozenset(p.name for p in params if p.kind in _NAMED and p.name != "self")
    return names, any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def check_options(given: Iterable[str], valid: Iterable[str], where: str, hint: str = "") -> None:
    """Raise ``UnknownOption`` for the first keyword in ``given`` that is not in ``valid``."""
    valid = frozenset(valid)
    for name in given:
        if name not in valid:
            raise UnknownOption(name, where, valid, hint)


def _checked(fn: Callable[..., Any], where: str) -> Callable[..., Any]:
    names, takes_any = parameter_names(fn)
    if takes_any or getattr(fn, "__strict__", False):  # ``**kwargs`` callables check their own keywords
        return fn

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if kwargs and not kwargs.keys() <= names:
            check_options(kwargs, names, where)
        return fn(*args, **kwargs)

    wrapper.__strict__ = True  # type: ignore[attr-defined]
    return wrapper


def strict(obj: T) -> T:
    """Make a function, or a class's constructor, refuse unknown keywords with ``UnknownOption``."""
    if isinstance(obj, type):
        init = obj.__dict__.get("__init__") or obj.__init__
        obj.__init__ = _checked(init, f"{obj.__name__}()")  # type: ignore[misc]
        return obj
    return _checked(obj, f"{getattr(obj, '__name__', 'function')}()")  # type: ignore[arg-type]
