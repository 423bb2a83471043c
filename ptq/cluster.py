"""Ray (the optional extra ``.[ray]``): run one of ptq's module-level functions over a list of
plain-dict tasks as Ray tasks, one CPU each, and gather their plain-dict results.

Nothing heavy travels through the driver: a task holds paths and numbers, and its function reads
the model and the samples from those paths on whichever node runs it. So on a multi-node cluster
ptq (the same version) must be installed on every node, and the paths a task names (the model
file the driver writes, the calibration/eval folders, the output folders) must be the same shared
storage on every node; on one machine (``ray.init(num_cpus=2)``, ``ray start --head``) they are.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from ptq.errors import UsageError


def connect(address: str):
    """The ``ray`` module, connected to the cluster at ``address`` ("auto": the cluster this
    machine belongs to, from ``RAY_ADDRESS`` or a running ``ray start``; else host:port or
    ``ray://host:port``). A process already connected (``ray.init`` called) keeps its cluster."""
    try:
        import ray
    except ImportError:
        raise UsageError("--ray needs Ray: pip install '.[ray]' in ptq's repository") from None
    if not ray.is_initialized():
        _check_reachable(address)
        try:
            ray.init(address=address, log_to_driver=False, logging_level="ERROR")
        except Exception as exc:  # ConnectionError, ValueError on a bad address, ...
            text = " ".join(str(exc).split())[:300] or type(exc).__name__
            raise UsageError(f"--ray {address}: cannot connect to a Ray cluster ({text})") from None
    return ray


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Refuse a host:port nothing listens on at once (``ray.init`` retries it for minutes)."""
    import socket

    target = address.removeprefix("ray://")
    host, _, port = target.rpartition(":")
    if address == "auto" or not host or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise UsageError(f"--ray {address}: cannot connect to a Ray cluster ({exc.strerror or exc})") from None


def call(module: str, function: str, task: dict) -> dict:
    """What a Ray task runs: ``module.function(task)``, imported on the worker's node."""
    return getattr(importlib.import_module(module), function)(task)


def run_tasks(
    module: str, function: str, tasks: list[dict], address: str, progress: Callable[[int, int], None] | None = None
) -> list[dict]:
    """``module.function(task)`` for every task as Ray tasks (one CPU each); the results in task
    order. ``progress(done, total)`` as tasks finish."""
    ray = connect(address)
    remote = ray.remote(num_cpus=1, max_retries=0)(call)
    refs = [remote.remote(module, function, task) for task in tasks]
    index = {ref: i for i, ref in enumerate(refs)}
    results: list[dict | None] = [None] * len(refs)
    pending = list(refs)
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        for ref in ready:
            try:
                results[index[ref]] = ray.get(ref)
            except Exception as exc:  # RayTaskError wrapping a bug, or a lost worker node
                text = " ".join(str(exc).split())[:300]
                raise RuntimeError(f"Ray task {function} #{index[ref]} failed: {text}") from None
        if progress is not None:
            progress(len(refs) - len(pending), len(refs))
    return results  # type: ignore[return-value]
