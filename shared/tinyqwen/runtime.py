# Hand-written support module (teaches nothing): runtime profiles, seeding and device choice.
"""Runtime profiles let one notebook run everywhere.

=========  ==========================================  =======================================
profile    chosen when                                 goal
=========  ==========================================  =======================================
``ci``     ``TINYQWEN_PROFILE=ci`` (tests, book build)  each notebook well under 2 min, 2 CPUs,
                                                        offline, deterministic under a seed
``cpu``    no CUDA device (a laptop)                   meaningful results in minutes
``gpu``    a CUDA device is available (Colab T4 up)    full-size experiments
=========  ==========================================  =======================================

Notebooks call :func:`setup` once and size their experiments with :meth:`Runtime.pick`::

    rt = setup(seed=0)
    steps = rt.pick(ci=50, cpu=500, gpu=3000)
"""

from __future__ import annotations

import json
import os
import platform
import random
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch

PROFILES = ("ci", "cpu", "gpu")
PROFILE_ENV = "TINYQWEN_PROFILE"
# Modules a Colab runtime already has that the notebooks import without installing them; every
# other import is covered by the package's dependencies and its `notebooks` extra (a test checks).
COLAB_PREINSTALLED = ("IPython", "google", "ipykernel", "ipywidgets")


def in_colab() -> bool:
    """True inside a Google Colab runtime."""
    return "google.colab" in sys.modules


def current_profile() -> str:
    """The profile named by ``$TINYQWEN_PROFILE``, else ``gpu`` with CUDA and ``cpu`` without."""
    name = os.environ.get(PROFILE_ENV, "").strip().lower()
    if not name:
        return "gpu" if torch.cuda.is_available() else "cpu"
    if name not in PROFILES:
        raise ValueError(f"{PROFILE_ENV}={name!r} is not a profile; choose one of {PROFILES}")
    return name


def default_device(profile: str | None = None) -> torch.device:
    """CUDA when the profile allows it and a GPU is present, else CPU (``ci`` is always CPU)."""
    profile = profile or current_profile()
    if profile != "ci" and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and PyTorch (all devices) so a run repeats exactly on CPU."""
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass(frozen=True)
class Runtime:
    """What a notebook needs to know about where it runs."""

    profile: str
    device: torch.device
    seed: int

    @property
    def offline(self) -> bool:
        """The ``ci`` profile never touches the network."""
        return self.profile == "ci"

    def pick(self, *, ci, cpu, gpu):
        """Return the value given for the current profile, e.g. ``rt.pick(ci=64, cpu=512, gpu=4096)``."""
        return {"ci": ci, "cpu": cpu, "gpu": gpu}[self.profile]

    def progress(self, iterable, *, desc: str, total: int | None = None, **tqdm_kwargs):
        """:func:`progress`: a progress bar with an ETA for every long loop of a chapter."""
        return progress(iterable, desc=desc, total=total, **tqdm_kwargs)


REHEARSAL_ENV = "TINYQWEN_REHEARSAL_LOG"
REHEARSAL_ITERATIONS = 2


def progress(iterable, *, desc: str, total: int | None = None, **tqdm_kwargs):
    """``tqdm(iterable)`` with a description and an ETA; chapters run every long loop through it.

    With ``$TINYQWEN_REHEARSAL_LOG`` set (``make notebook-times PROFILE=gpu`` on a machine without
    the GPU), the loop runs only its first REHEARSAL_ITERATIONS iterations and appends, per loop,
    one JSON line to that file: the loop's size, and per iteration the wall time, the floating
    point operations and the number of PyTorch operations it ran, from which the time on a GPU
    is estimated with chapter 8's calculators.
    """
    from tqdm.auto import tqdm

    total = (
        total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
    )
    bar = tqdm(iterable, desc=desc, total=total, dynamic_ncols=True, **tqdm_kwargs)
    log = os.environ.get(REHEARSAL_ENV)
    return bar if not log else _Rehearsal(bar, desc, total, log)


class _Rehearsal:
    """A progress bar that stops its loop after REHEARSAL_ITERATIONS iterations and logs their
    cost; everything else (set_postfix, close, ...) is the wrapped tqdm bar's."""

    def __init__(self, bar, desc: str, total: int | None, log: str):
        self.bar, self.desc, self.total, self.log = bar, desc, total, log

    def __getattr__(self, name):
        return getattr(self.bar, name)

    def __iter__(self):
        from torch.utils._python_dispatch import TorchDispatchMode
        from torch.utils.flop_counter import FlopCounterMode

        class OpCounter(TorchDispatchMode):
            ops = 0

            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                self.ops += 1
                return func(*args, **(kwargs or {}))

        depth = _Rehearsal.depth = getattr(_Rehearsal, "depth", 0) + 1
        runs = []
        try:
            for i, item in enumerate(self.bar):
                if i >= REHEARSAL_ITERATIONS:
                    break
                flops, ops = FlopCounterMode(display=False), OpCounter()
                start = time.perf_counter()
                with flops, ops:
                    yield item
                runs.append((time.perf_counter() - start, flops.get_total_flops(), ops.ops))
        finally:
            _Rehearsal.depth = depth - 1
            self.bar.close()
            if runs:
                self._write(depth, runs)

    def _write(self, depth: int, runs: list) -> None:
        record = {
            "desc": self.desc,
            "total": self.total,
            "depth": depth,
            "iterations_run": len(runs),
            "seconds_per_iteration": sum(r[0] for r in runs) / len(runs),
            "flops_per_iteration": sum(r[1] for r in runs) / len(runs),
            "ops_per_iteration": sum(r[2] for r in runs) / len(runs),
            "finished": time.time(),
        }
        with open(self.log, "a") as f:
            f.write(json.dumps(record) + "\n")


def setup(seed: int = 0, *, chapter: str | None = None, verbose: bool = True) -> Runtime:
    """Choose the profile and device, seed everything, and say what was chosen.

    chapter: the notebook's name without extension (e.g. "04_rmsnorm"); the chapter's recorded
    run time under each profile is printed (tinyqwen.records).
    """
    profile = current_profile()
    device = default_device(profile)
    seed_everything(seed)
    if profile == "ci":
        # The ci models are tiny: one thread is faster than two waiting on each other, and it
        # stays fast when other processes share the machine.
        torch.set_num_threads(1)
    rt = Runtime(profile=profile, device=device, seed=seed)
    if verbose:
        where = (
            torch.cuda.get_device_name(device)
            if device.type == "cuda"
            else platform.processor() or "cpu"
        )
        print(
            f"TinyQwen runtime: profile={profile} device={device} ({where}) seed={seed} "
            f"torch={torch.__version__}{' colab' if in_colab() else ''}"
        )
        if chapter is not None:
            from tinyqwen.records import chapter_time

            print(chapter_time(chapter, profile))
    return rt
