"""The task registry: the one place that names the tasks a study can run.

``study.task`` is looked up here: a registered name (``classification`` and ``translation``
are registered below), the name of an entry point of group ``emergeinit.tasks`` (a
pip-installed package's task), or an import path ``"package.module:TaskClass"``. The generic
layers ask the registry for a :class:`Task` and never name one themselves; to add a task,
implement :class:`Task` and :func:`register` it (see ``docs/bench.md#your-own-task``).
"""

from __future__ import annotations

from ...errors import ConfigError
from .. import plugins
from .base import Prepared, RunContext, Task
from .classification import ClassificationTask
from .translation import TranslationTask

__all__ = [
    "Prepared",
    "RunContext",
    "Task",
    "adopt",
    "get",
    "names",
    "portable",
    "register",
    "registered",
    "unregister",
]

_REGISTRY: dict[str, Task] = {}
_BUILT_IN: set[str] = set()


def register(task: Task) -> Task:
    """Make ``task`` available as ``study.task = task.name``; returns it (usable on a
    module-level instance). Registering another task under a taken name is an error."""
    if not isinstance(task, Task):
        raise TypeError(f"expected a Task instance, got {type(task).__name__}")
    if not task.name:
        raise ValueError(f"{type(task).__name__} has no name")
    held = _REGISTRY.get(task.name)
    if held is not None and held is not task:
        raise ValueError(f"a task named {task.name!r} is registered already")
    _REGISTRY[task.name] = task
    return task


def unregister(name: str) -> None:
    """Remove a task (tests register toy tasks and take them away again)."""
    _REGISTRY.pop(name, None)


def names() -> tuple[str, ...]:
    """The registered task names, in registration order."""
    return tuple(_REGISTRY)


def registered() -> tuple[Task, ...]:
    """The registered tasks, in registration order."""
    return tuple(_REGISTRY.values())


def get(name: str) -> Task:
    """The task ``study.task = name`` means; a plug-in task is loaded and registered under
    ``name`` on first use. Raises :class:`ConfigError` naming ``study.task``."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    if not plugins.is_plugin("task", name):
        raise ConfigError(
            f"study.task: {name!r} is not one of {', '.join(map(repr, _REGISTRY))}, nor an entry "
            "point of group 'emergeinit.tasks', nor an import path 'package.module:TaskClass' "
            "(a task registered with register_task() must be defined in an importable module, "
            "so that worker processes can register it too)"
        )
    found = plugins.resolve("task", name, "study.task")
    task = found() if isinstance(found, type) else found
    if not isinstance(task, Task):
        raise ConfigError(
            f"study.task: {name!r} gives a {type(task).__name__}, not an "
            "emergeinit.bench.tasks.Task"
        )
    _REGISTRY[name] = task
    return task


def portable() -> dict[str, str]:
    """Tasks registered in this process beyond the built-in ones, as ``name -> import path of
    their class``, for worker processes to :func:`adopt` (a class defined in ``__main__``,
    e.g. a notebook cell, cannot travel and is left out)."""
    out = {}
    for name, task in _REGISTRY.items():
        cls = type(task)
        if name not in _BUILT_IN and cls.__module__ != "__main__":
            out[name] = f"{cls.__module__}:{cls.__qualname__}"
    return out


def adopt(refs: dict[str, str]) -> None:
    """Register, in this (worker) process, the tasks another process registered (see
    :func:`portable`)."""
    for name, ref in refs.items():
        if name not in _REGISTRY:
            found = plugins.resolve("task", ref, "study.task")
            _REGISTRY[name] = found() if isinstance(found, type) else found


register(ClassificationTask())
register(TranslationTask())
_BUILT_IN.update(_REGISTRY)
