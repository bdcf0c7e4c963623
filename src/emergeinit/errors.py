"""Typed errors. Every error is raised before a model is touched, so a failed call loses nothing."""

from __future__ import annotations


class EmergeInitError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigError(EmergeInitError, ValueError):
    """An option has a bad value (alpha <= 0, an unknown option string, a bad pivot, ...)."""


class UnsupportedModuleError(EmergeInitError, TypeError):
    """The model holds a module the operation cannot handle correctly."""


class NoUnitsError(ConfigError):
    """The model has no module the rule can scale."""


class TracingError(EmergeInitError, RuntimeError):
    """A forward pass of the model on the given example (or probe) inputs failed."""


class ScaleRangeError(EmergeInitError, ArithmeticError):
    """A unit's scale alpha**e overflows or underflows the dtype of its weight."""


class MetaTensorError(EmergeInitError, RuntimeError):
    """The model has parameters on the meta device: there is nothing to scale yet."""


class GraphCycleError(EmergeInitError, ValueError):
    """The graph given to the emergence measure has a directed cycle."""


class NotWritableError(EmergeInitError, RuntimeError):
    """A parameter the call would write cannot be written in place (an inference tensor)."""


class NonFiniteWeightWarning(RuntimeWarning):
    """A weight kept by ``base="keep"`` holds nan or inf values."""


__all__ = [
    "ConfigError",
    "EmergeInitError",
    "GraphCycleError",
    "MetaTensorError",
    "NoUnitsError",
    "NonFiniteWeightWarning",
    "NotWritableError",
    "ScaleRangeError",
    "TracingError",
    "UnsupportedModuleError",
]
