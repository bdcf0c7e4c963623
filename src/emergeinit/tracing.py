"""One example forward pass that reads the depth order, and leaves no trace on the model.

Two readings (docs/method.md, "Order"):

* :func:`trace_first_calls` -- the rank of each anchor module's first call (``order="call"``);
* :func:`trace_depths` -- for each anchor module, the length (in units) of the longest dataflow
  path from the input to it (``order="graph"``). Forward hooks on the units mark their outputs;
  a :class:`torch.overrides.TorchFunctionMode` carries, for every tensor the pass makes, the
  greatest depth of the tensors it was computed from, so functional ops between modules
  (a residual ``+``, ``torch.cat``, slicing, in-place writes) are seen.

Both run in training mode (eval-mode fused paths such as ``TransformerEncoderLayer``'s skip
submodules) under ``torch.no_grad()``, and restore every module's mode, every changed buffer
(BatchNorm running statistics) and the global (and CUDA) RNG state afterwards, also on failure.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils.hooks import RemovableHandle
from torch.utils.weak import WeakIdKeyDictionary

from .errors import TracingError


def call_model(model: nn.Module, example_input: Any) -> Any:
    """Call ``model`` on a tensor, a tuple/list of positional inputs or a dict of keyword inputs."""
    if isinstance(example_input, dict):
        return model(**example_input)
    if isinstance(example_input, (tuple, list)):
        return model(*example_input)
    return model(example_input)


def _model_devices(model: nn.Module) -> list[int]:
    return sorted({p.device.index or 0 for p in model.parameters() if p.device.type == "cuda"})


def _example_pass(
    model: nn.Module,
    example_input: Any,
    install: Callable[[], list[RemovableHandle]],
    mode: TorchFunctionMode | None = None,
) -> None:
    """Run ``model`` once on ``example_input`` with the hooks ``install`` registers, then undo."""
    modes = [(m, m.training) for m in model.modules()]
    saved_buffers = [(b, b.detach().clone()) for b in model.buffers()]
    handles = install()
    try:
        with (
            torch.random.fork_rng(devices=_model_devices(model)),
            torch.no_grad(),
            mode if mode is not None else contextlib.nullcontext(),
        ):
            model.train()
            call_model(model, example_input)
    except Exception as exc:
        raise TracingError(
            f"the example forward pass failed ({type(exc).__name__}: {exc}). Pass an "
            "example_input the model accepts (a tensor, a tuple of positional inputs or a dict "
            "of keyword inputs, on the model's device; a batch of at least 2 with BatchNorm), "
            "or pass example_input=None to use registration order. The model is unchanged."
        ) from exc
    finally:
        for handle in handles:
            handle.remove()
        for module, training in modes:
            module.training = training
        with torch.no_grad():
            for buffer, saved in saved_buffers:
                if buffer.shape != saved.shape:
                    buffer.data = saved
                elif not torch.equal(buffer, saved):
                    # A buffer made under inference mode can only be written back inside it (a
                    # failed in-place update of one may still have changed it).
                    with torch.inference_mode(buffer.is_inference()):
                        buffer.copy_(saved)


def trace_first_calls(
    model: nn.Module, example_input: Any, anchors: Sequence[nn.Module]
) -> dict[int, int]:
    """Run one forward pass and return ``id(module) -> rank of its first call`` for ``anchors``."""
    first_call: dict[int, int] = {}

    def record(module: nn.Module, _args: Any) -> None:
        first_call.setdefault(id(module), len(first_call))

    def install() -> list[RemovableHandle]:
        unique = {id(a): a for a in anchors}.values()
        return [m.register_forward_pre_hook(record) for m in unique]

    _example_pass(model, example_input, install)
    return first_call


def _tensors(value: Any) -> Iterator[torch.Tensor]:
    """Every tensor in a nest of tuples, lists and dicts (Hugging Face outputs are dicts)."""
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from _tensors(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)


class _DataflowDepth(TorchFunctionMode):
    """Carries, per tensor, the number of units on the longest path from the input to it."""

    def __init__(self) -> None:
        super().__init__()
        # Keyed by tensor identity, held weakly: a tensor freed during the pass drops out.
        self.depth: WeakIdKeyDictionary = WeakIdKeyDictionary()

    def of(self, value: Any) -> int:
        return max((self.depth.get(t, 0) for t in _tensors(value)), default=0)

    def raise_to(self, value: Any, depth: int) -> None:
        for tensor in _tensors(value):
            if self.depth.get(tensor, 0) < depth:
                self.depth[tensor] = depth

    def set(self, value: Any, depth: int) -> None:
        for tensor in _tensors(value):
            self.depth[tensor] = depth

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Any,
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        result = func(*args, **kwargs)
        depth = self.of((args, kwargs))
        if depth:
            self.raise_to(result, depth)
            name = getattr(func, "__name__", "")
            # In-place writes (x.add_(y), x += y, x[i] = y, out=) make the written tensor
            # depend on the other operands too.
            if args and (name.endswith("_") or name.startswith("__i") or name == "__setitem__"):
                self.raise_to(args[0], depth)
            if "out" in kwargs:
                self.raise_to(kwargs["out"], depth)
        return result


def trace_depths(
    model: nn.Module,
    example_input: Any,
    anchors: Sequence[nn.Module],
    span: dict[int, int] | None = None,
) -> tuple[dict[int, int], dict[int, int]]:
    """Run one forward pass; return ``(first call ranks, depths)`` keyed by ``id(module)``.

    A call of an anchor module has depth ``1 +`` the greatest depth among its input tensors
    (model inputs and values computed from them alone have depth 0); its outputs get the depth
    of its last level, ``depth + span - 1`` (``span[id(module)]``, default 1: a stacked
    recurrent module spans one level per layer). A module called several times takes its
    deepest call.
    """
    span = span or {}
    tracker = _DataflowDepth()
    first_call: dict[int, int] = {}
    depth_of: dict[int, int] = {}
    pending: dict[int, list[int]] = {}

    def before(module: nn.Module, args: Any, kwargs: Any) -> None:
        key = id(module)
        first_call.setdefault(key, len(first_call))
        depth = tracker.of((args, kwargs)) + 1
        depth_of[key] = max(depth_of.get(key, 0), depth)
        pending.setdefault(key, []).append(depth)

    def after(module: nn.Module, _args: Any, _kwargs: Any, output: Any) -> None:
        depth = pending[id(module)].pop()
        # Set, not raised: the output is this unit's, whatever its forward did inside.
        tracker.set(output, depth + span.get(id(module), 1) - 1)

    def install() -> list[RemovableHandle]:
        handles = []
        for module in {id(a): a for a in anchors}.values():
            handles.append(module.register_forward_pre_hook(before, with_kwargs=True))
            handles.append(module.register_forward_hook(after, with_kwargs=True))
        return handles

    _example_pass(model, example_input, install, tracker)
    return first_call, depth_of


__all__ = ["call_model", "trace_depths", "trace_first_calls"]
