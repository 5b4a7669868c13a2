"""Side-by-side timing: ours and a peer, alternately, in one process; medians and ratios.

A benchmark module ``benchmarks/bench_<name>.py`` defines ``run(quick: bool) -> list[dict]`` and
builds its rows with :func:`compare` (timings) or :func:`row` (other measurements, e.g. memory
or bytes per token). ``python -m benchmarks.run`` collects every module's rows into
``benchmarks/results/latest.{json,md}`` with the machine and the date. Nothing here asserts a time.
"""

from __future__ import annotations

import contextlib
import gc
import statistics
import time
from collections.abc import Callable

import torch


@contextlib.contextmanager
def torch_threads(n: int):
    """Run the block with `n` PyTorch threads, restoring the previous count afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _time_once(fn: Callable[[], object], sync: Callable[[], None] | None) -> float:
    if sync:
        sync()
    start = time.perf_counter()
    fn()
    if sync:
        sync()
    return time.perf_counter() - start


def compare(
    benchmark: str,
    ours: Callable[[], object],
    peer: Callable[[], object],
    *,
    ours_name: str = "tinyqwen",
    peer_name: str,
    repeats: int = 5,
    warmup: int = 1,
    sync: Callable[[], None] | None = None,
    unit: str = "s",
    scale: float = 1.0,
    note: str = "",
) -> dict:
    """Time ``ours`` and ``peer`` alternately (``warmup`` untimed rounds, then ``repeats``).

    Returns a row with medians, min and max of both, and ``ratio = ours / peer`` of the medians
    (below 1 means ours is faster). ``scale`` multiplies seconds into ``unit`` (1e3 for ms).
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    for _ in range(warmup):
        ours()
        peer()
    t_ours, t_peer = [], []
    for i in range(repeats):
        gc.collect()
        # alternate which goes first, so neither always inherits a warm (or cold) cache
        pair = [(ours, t_ours), (peer, t_peer)] if i % 2 == 0 else [(peer, t_peer), (ours, t_ours)]
        for fn, times in pair:
            times.append(_time_once(fn, sync) * scale)
    return row(
        benchmark,
        ours_name=ours_name,
        peer_name=peer_name,
        metric="time",
        unit=unit,
        ours=statistics.median(t_ours),
        peer=statistics.median(t_peer),
        ours_range=(min(t_ours), max(t_ours)),
        peer_range=(min(t_peer), max(t_peer)),
        repeats=repeats,
        note=note,
    )


def row(
    benchmark: str,
    *,
    ours_name: str = "tinyqwen",
    peer_name: str,
    metric: str,
    unit: str,
    ours: float,
    peer: float,
    ours_range: tuple[float, float] | None = None,
    peer_range: tuple[float, float] | None = None,
    repeats: int = 1,
    note: str = "",
) -> dict:
    """One result row; ``ratio`` is ours / peer."""
    return {
        "benchmark": benchmark,
        "metric": metric,
        "unit": unit,
        "ours_name": ours_name,
        "peer_name": peer_name,
        "ours": ours,
        "peer": peer,
        "ratio": ours / peer if peer else float("nan"),
        "ours_range": list(ours_range) if ours_range else None,
        "peer_range": list(peer_range) if peer_range else None,
        "repeats": repeats,
        "note": note,
    }


def print_rows(rows: list[dict]) -> None:
    """Print rows as a small table (what a benchmark module shows when run on its own)."""
    for r in rows:
        print(
            f"{r['benchmark']:<44} {r['metric']:<10} ours({r['ours_name']}) {r['ours']:.4g} {r['unit']}"
            f"  peer({r['peer_name']}) {r['peer']:.4g} {r['unit']}  ratio {r['ratio']:.2f}"
            + (f"  [{r['note']}]" if r["note"] else "")
        )
