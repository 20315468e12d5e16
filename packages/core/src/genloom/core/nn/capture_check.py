"""`check_capturable`: find, on any machine, the host reads and host-to-device copies a CUDA graph forbids.

A captured CUDA graph cannot contain `.item()`, `int(tensor)`, data-dependent shapes (`nonzero`, boolean
indexing) or a copy from host memory (`torch.tensor([...], device=...)` inside the pass): capture fails, and
only on a GPU. Tracing with dynamo is no proxy (it turns `.item()` into a symbolic size and goes on). This
check runs the function on the meta device instead, where every such read raises, and watches every
operator for a tensor arriving from the CPU, so a CPU-only test catches what would break capture.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

__all__ = ["CaptureCheckError", "check_capturable"]


class CaptureCheckError(RuntimeError):
    """The function would not capture as a CUDA graph: the message names the operator."""


class _HostTransferWatch(TorchDispatchMode):
    """Raises on an operator that takes a CPU tensor (not a 0-dim scalar) and returns a meta tensor."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        inputs = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        if any(t.device.type == "cpu" and t.dim() > 0 for t in inputs) and any(
            isinstance(t, torch.Tensor) and t.device.type == "meta" for t in tree_leaves(out)
        ):
            shapes = [(t.device.type, tuple(t.shape)) for t in inputs]
            raise CaptureCheckError(
                f"{func} copies a host tensor to the device inside the pass (inputs {shapes})"
            )
        return out


@contextlib.contextmanager
def _no_autocast() -> Iterator[None]:
    """The meta device has no autocast dtype: autocast regions become plain regions for the check."""
    original = torch.autocast
    torch.autocast = lambda *args, **kwargs: contextlib.nullcontext()  # type: ignore[assignment,misc]
    try:
        yield
    finally:
        torch.autocast = original  # type: ignore[misc]


@contextlib.contextmanager
def _no_host_data_on_device() -> Iterator[None]:
    """`torch.tensor(data, device=...)` / `torch.as_tensor(data, device=...)` with host data: a host-to-device copy
    on CUDA, but on the meta device no operator that the watch sees (the tensor is made there directly): refuse
    them by name for the check. Data already a tensor (as_tensor of a device tensor) is no copy."""
    originals = {"tensor": torch.tensor, "as_tensor": torch.as_tensor}

    def guarded(name: str) -> Callable[..., Any]:
        original = originals[name]

        @functools.wraps(original)
        def build(data: Any, *args: Any, **kwargs: Any) -> Any:
            device = kwargs.get("device", args[1] if name == "as_tensor" and len(args) > 1 else None)
            if (
                device is not None
                and torch.device(device).type != "cpu"
                and not isinstance(data, torch.Tensor)
            ):
                raise CaptureCheckError(
                    f"torch.{name}(..., device={str(device)!r}) copies host data to the device inside the pass"
                )
            return original(data, *args, **kwargs)

        return build

    for name in originals:
        setattr(torch, name, guarded(name))
    try:
        yield
    finally:
        for name, original in originals.items():
            setattr(torch, name, original)


def check_capturable(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run `fn(*args, **kwargs)` with meta-device tensors (move the module it uses with `.to("meta")` first) and
    raise CaptureCheckError at the first host read or host-to-device copy; returns fn's (meta) result."""
    leaves = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
    if not leaves or any(t.device.type != "meta" for t in leaves):
        raise CaptureCheckError("check_capturable needs its tensor arguments on the meta device")
    try:
        with torch.no_grad(), _no_autocast(), _no_host_data_on_device(), _HostTransferWatch():
            return fn(*args, **kwargs)
    except CaptureCheckError:
        raise
    except (RuntimeError, NotImplementedError) as error:  # .item() / data-dependent ops on meta tensors
        raise CaptureCheckError(f"the pass reads a value from the device: {error}") from error
