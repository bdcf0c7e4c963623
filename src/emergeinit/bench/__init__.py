"""The benchmark harness: studies that train, compare and report initializations.

A study config (TOML, see ``emergeinit/bench/presets``) is validated by :mod:`.config`,
expanded into runs by :mod:`.study`, each run executed by :mod:`.runner` through an executor
(:mod:`.executors`), and turned into an answer by :mod:`.stats`, :mod:`.report` and
:mod:`.plots`. This package imports the core; the core never imports it.
"""

from __future__ import annotations

__all__: list[str] = []
