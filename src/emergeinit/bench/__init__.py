"""The benchmark harness: studies that train, compare and report initializations.

Use it from Python (:func:`run_study`, :func:`load_study`, :class:`Study`) or from the command
line (``emergeinit bench``, a thin layer over the same API). A study config (TOML, a preset in
``emergeinit/bench/presets`` or a dict) is validated by :mod:`.config`, expanded into runs and
preflighted by :mod:`.study`, each run executed by :mod:`.runner` (the one run template) through
an executor (:mod:`.executors`) for its task (:mod:`.tasks`, the registry), and turned into an
answer by :mod:`.stats`, :mod:`.report` and :mod:`.plots`. Inits, datasets, optimizers and
tasks can be plug-ins (:mod:`.plugins`); see ``docs/bench.md``. This package imports the core;
the core never imports it.

The names below are loaded on first use, so importing a leaf such as
``emergeinit.bench.stats`` stays cheap.
"""

from __future__ import annotations

from typing import Any

__all__ = ["InitContext", "Study", "Task", "load_study", "register_task", "run_study"]

_LAZY = {
    "run_study": ("api", "run_study"),
    "load_study": ("api", "load_study"),
    "Study": ("api", "Study"),
    "InitContext": ("inits", "InitContext"),
    "Task": ("tasks", "Task"),
    "register_task": ("tasks", "register"),
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    module, attribute = _LAZY[name]
    value = getattr(importlib.import_module(f"{__name__}.{module}"), attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
