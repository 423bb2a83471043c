"""The worker side of sharded calibration (``ptq.calibrate.shards``): observe one shard in this
process, reading the model and the shard's samples from disk, and answer with plain data.

Run as ``python -m ptq.calibrate.shard_worker`` by the local driver, or called by a Ray task
(``ptq.cluster``); kept apart from ``shards`` so that the driver (imported by ``runner``) does
not import ``runner`` back.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable
from pathlib import Path

import onnx

from ptq.calibrate.data import input_specs
from ptq.calibrate.samples import Samples
from ptq.calibrate.runner import observe_samples, session_from_path
from ptq.calibrate.shards import ShardResult, ShardTask, states_to_npz
from ptq.config import ImageFormat
from ptq.errors import PtqError


def peak_rss_bytes() -> int:
    """This process's peak resident set size: ``VmHWM`` of ``/proc/self/status`` (Linux), which
    starts afresh at exec; ``ru_maxrss`` keeps the peak of the process that forked it (the
    driver, with its model loaded), so it is only the fallback elsewhere."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def observe_shard(task: dict, progress: Callable[[int], None] | None = None) -> dict:
    """Observe one shard (``ShardTask`` fields in ``task``) in this process: read the model and the
    shard's samples from disk, stream them, return ``ShardResult`` fields as a plain dict.
    ``progress(done)`` after each sample.

    A ``PtqError`` comes back as ``{"error": message, "exit_code": code}`` (its class need not
    travel)."""
    started = time.perf_counter()
    shard = ShardTask(**task)
    try:
        model = onnx.load(shard.model_path, load_external_data=False)  # the graph, for the input specs
        specs = input_specs(model)
        del model
        image_format = ImageFormat(**shard.image_format) if shard.image_format is not None else None
        selected = shard.indices is not None
        samples = Samples(Path(shard.data_dir), specs, shard.limit if selected else shard.stop, image_format,
                          indices=shard.indices)  # fmt: skip
        sess = session_from_path(shard.model_path, threads=shard.threads, spinning=shard.threads <= 1)
        observers, used = observe_samples(
            sess, specs, samples.between(shard.start, shard.stop), shard.stop - shard.start, list(shard.tensors),
            histogram=shard.histogram, exact=shard.exact, batch_budget=shard.batch_budget,
            progress=None if progress is None else lambda done, total: progress(done),
            first_sample=shard.start, whole=shard.whole, pipelined=shard.threads > 1,
        )  # fmt: skip
    except PtqError as exc:
        return {"index": shard.index, "error": str(exc), "exit_code": exc.exit_code}
    return dataclasses.asdict(
        ShardResult(shard.index, states_to_npz(observers), used, time.perf_counter() - started, peak_rss_bytes())
    )


def _worker_main() -> None:
    """``python -m ptq.calibrate.shard_worker``: one shard task (JSON) from stdin; progress lines and a
    ``result {json}`` line on stdout, the states in ``<model folder>/shard-<index>.npz``."""
    import json

    task = json.loads(sys.stdin.read())
    result = observe_shard(task, lambda done: print(f"progress {done}", flush=True))
    if "states" in result:
        path = Path(task["model_path"]).parent / f"shard-{task['index']}.npz"
        path.write_bytes(result.pop("states"))
        result["states_file"] = str(path)
    print("result " + json.dumps(result), flush=True)


if __name__ == "__main__":
    _worker_main()
