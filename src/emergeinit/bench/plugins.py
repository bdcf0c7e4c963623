"""User plug-ins: inits, datasets, optimizers and tasks named by import path or entry point.

A study names a plug-in where it would name a built-in: ``"package.module:function"`` (an
import path: the module is imported, the attribute after the colon looked up, dots allowed) or
the name of an entry point in the plug-in kind's group, so a pip-installed package can offer
one::

    [project.entry-points."emergeinit.inits"]
    my-init = "my_package.inits:my_init"

Everything here runs at preflight, before any run starts: a plug-in that cannot be imported,
is missing or is not callable is a :class:`~emergeinit.errors.ConfigError` that names the
config key and says how to fix it. What each kind is called with and must return is in
``docs/bench.md#your-own-inits-datasets-optimizers-and-tasks``.

A leaf of the bench wing (standard library and :mod:`emergeinit.errors` only).
"""

from __future__ import annotations

import functools
import importlib
import re
from importlib import metadata
from typing import Any

from ..errors import ConfigError

__all__ = [
    "GROUPS",
    "describe",
    "entry_point_names",
    "is_plugin",
    "is_reference",
    "label",
    "refresh",
    "resolve",
]

#: Entry-point group of each plug-in kind.
GROUPS = {
    "init": "emergeinit.inits",
    "dataset": "emergeinit.datasets",
    "optimizer": "emergeinit.optimizers",
    "task": "emergeinit.tasks",
}

_REFERENCE = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")


def is_reference(name: str) -> bool:
    """Whether ``name`` has the form of an import path, ``package.module:attribute``.

    >>> is_reference("my_package.inits:my_init"), is_reference("kaiming")
    (True, False)
    """
    return bool(_REFERENCE.fullmatch(name))


@functools.cache
def _entry_points(group: str) -> dict[str, metadata.EntryPoint]:
    return {ep.name: ep for ep in metadata.entry_points(group=group)}


def refresh() -> None:
    """Read the entry points again (after installing a package into a running process)."""
    _entry_points.cache_clear()


def entry_point_names(kind: str) -> list[str]:
    """Names installed packages offer in the kind's entry-point group (read once per process)."""
    return sorted(_entry_points(GROUPS[kind]))


def is_plugin(kind: str, name: str) -> bool:
    """Whether ``name`` names a plug-in of ``kind`` (an import path or an entry point), without
    importing it."""
    return is_reference(name) or name in _entry_points(GROUPS[kind])


def resolve(kind: str, name: str, key: str) -> Any:
    """The object a plug-in name stands for, checked to be callable.

    ``key`` is the config key that named it, for the error message.
    """
    if is_reference(name):
        obj = _import(name, key)
    else:
        found = _entry_points(GROUPS[kind]).get(name)
        if found is None:
            offered = ", ".join(entry_point_names(kind)) or "none installed"
            raise ConfigError(
                f"{key}: {name!r} is neither built in nor an import path "
                f"'package.module:function' nor an entry point of group {GROUPS[kind]!r} "
                f"({offered})"
            )
        try:
            obj = found.load()
        except Exception as exc:
            raise ConfigError(
                f"{key}: entry point {name!r} ({found.value}) cannot be loaded: "
                f"{type(exc).__name__}: {exc}"
            ) from None
    if not callable(obj):
        raise ConfigError(
            f"{key}: plug-in {name!r} is a {type(obj).__name__}, not callable; name a function "
            "(or a class) as 'package.module:function'"
        )
    return obj


def _import(name: str, key: str) -> Any:
    module_name, _, attribute = name.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise ConfigError(
            f"{key}: cannot import module {module_name!r} of plug-in {name!r} ({exc}); install "
            "its package or put its folder on PYTHONPATH"
        ) from None
    except Exception as exc:  # the module itself raised while importing
        raise ConfigError(
            f"{key}: importing {module_name!r} for plug-in {name!r} raised "
            f"{type(exc).__name__}: {exc}"
        ) from None
    obj: Any = module
    for part in attribute.split("."):
        if not hasattr(obj, part):
            public = sorted(n for n in dir(module) if not n.startswith("_"))[:12]
            raise ConfigError(
                f"{key}: module {module_name!r} has no {attribute!r} (plug-in {name!r}); it "
                f"defines {', '.join(public) or 'nothing public'}"
            )
        obj = getattr(obj, part)
    return obj


def label(name: str, obj: Any = None) -> str:
    """What a plug-in is called in results.csv, the report and the plots: its ``name``
    attribute when it is a non-empty string, else the name the study gave it."""
    given = getattr(obj, "name", None)
    return given if isinstance(given, str) and given else name


def describe(obj: Any) -> str:
    """The first line of a plug-in's docstring (or nothing)."""
    doc = (getattr(obj, "__doc__", None) or "").strip()
    return doc.splitlines()[0].strip() if doc else ""
