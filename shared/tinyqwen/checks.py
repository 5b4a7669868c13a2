# Hand-written support module (teaches nothing): what every exercise check uses.
"""Exercise checks that test the learner's code, and only that.

A graded cell follows three steps::

    from tinyqwen.checks import assert_close, learner_call

    expected = reference(x)                          # 1. expected values first
    got = learner_call(rms_norm_backward, x, w, g,   # 2. the learner's code, alone
                       forbid=["tinyqwen.norm.RMSNorm", "torch.autograd.grad"])
    assert_close(got, expected, "gradient wrt x")    # 3. a tolerance the dtype justifies

:func:`learner_call` runs the learner's function with the finished ``tinyqwen`` component and
any built-in the exercise forbids replaced by stubs that raise :class:`ForbiddenCall`, so a
one-line wrapper around them fails. Around the call it checks that the function left the
interpreter as it found it: the notebook's variables, ``torch``/``numpy``/``math``/builtins, the
test helpers, IPython's input and AST transformers, ``sys.path`` and the modules in
``sys.modules``, torch's global switches (default dtype, grad mode, function and dispatch modes,
global ``nn.Module`` hooks), signal handlers and interval timers, no extra threads or child
processes.
Anything changed is put back and :class:`TamperingError` is raised. The result is copied into
plain tensors, numbers and containers before the check looks at it.

:func:`assert_close` derives its tolerance from the dtype (a multiple of its machine epsilon,
relative to the size of the values), so any correct formulation passes, and says where and by
how much a wrong answer is off.
"""

from __future__ import annotations

import builtins
import gc
import importlib
import math
import os
import signal
import sys
import threading
import types
from collections.abc import Iterable

import numpy as np
import torch

__all__ = [
    "ForbiddenCall",
    "TamperingError",
    "learner_call",
    "assert_close",
    "assert_equal",
    "tolerance",
]


class ForbiddenCall(RuntimeError):
    """The learner's code called something the exercise asks it to do without."""


class TamperingError(RuntimeError):
    """The learner's code changed the interpreter that runs the checks."""


# --------------------------------------------------------------------------------------------
# Forbidding components
# --------------------------------------------------------------------------------------------


def _resolve(name: str):
    """'torch.nn.functional.cross_entropy' -> (owner, attribute name, object)."""
    parts = name.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            owner = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:-1]:
            owner = getattr(owner, attr)
        try:
            return owner, parts[-1], getattr(owner, parts[-1])
        except AttributeError:
            break
    raise ValueError(f"cannot forbid {name!r}: no such importable object")


def _raiser(name: str, why: str):
    message = f"this exercise must not use {name}{': ' + why if why else ''}; write it yourself"

    def forbidden(*args, **kwargs):
        raise ForbiddenCall(message)

    forbidden.__name__ = forbidden.__qualname__ = name.rsplit(".", 1)[-1]
    return forbidden


def _raiser_code(name: str, why: str) -> types.CodeType:
    """A code object that raises ForbiddenCall, usable in any function without free variables."""
    message = f"this exercise must not use {name}{': ' + why if why else ''}; write it yourself"
    src = (
        "def forbidden(*args, **kwargs):\n"
        f"    raise __import__('tinyqwen.checks', fromlist=['_']).ForbiddenCall({message!r})\n"
    )
    namespace: dict = {}
    exec(compile(src, f"<forbidden {name}>", "exec"), namespace)
    return namespace["forbidden"].__code__


def _is_namespace(d: dict) -> bool:
    """Module dicts and exec'd globals, not arbitrary dicts that happen to hold the object."""
    return "__name__" in d or "__builtins__" in d


class _Forbidden:
    """Replace every reference to the forbidden objects; undo() puts everything back."""

    def __init__(self, names: Iterable[str], why: str = ""):
        self.undo_steps: list = []
        targets = []
        for name in names:
            owner, attr, obj = _resolve(name)
            targets.append((name, owner, attr, obj))
        by_id = {id(obj): name for name, _, _, obj in targets}
        objs = [obj for *_, obj in targets]
        try:
            for name, owner, attr, obj in targets:
                if isinstance(
                    owner, type
                ):  # a method or attribute of a class, e.g. torch.Tensor.sum
                    self._set_class_attr(owner, attr, _raiser(name, why))
                if isinstance(obj, type):  # a whole class: every method it defines
                    for meth_name, meth in list(vars(obj).items()):
                        func = getattr(meth, "__func__", meth)  # incl. fastcore's cls_method
                        if isinstance(func, types.FunctionType):
                            self._set_class_attr(
                                obj, meth_name, _raiser(f"{name}.{meth_name}", why)
                            )
                            self._swap_code(
                                getattr(meth, "__func__", meth), f"{name}.{meth_name}", why
                            )
                if isinstance(obj, types.FunctionType):
                    self._swap_code(obj, name, why)
            # Every namespace that holds a forbidden object under any name (aliases, imports).
            for ref in gc.get_referrers(*objs):
                if isinstance(ref, dict) and _is_namespace(ref):
                    for key, value in list(ref.items()):
                        if id(value) in by_id and any(value is o for o in objs):
                            ref[key] = _raiser(by_id[id(value)], why)
                            self.undo_steps.append(
                                lambda d=ref, k=key, v=value: d.__setitem__(k, v)
                            )
        except BaseException:
            self.undo()
            raise

    def _set_class_attr(self, cls: type, attr: str, value) -> None:
        had = attr in vars(cls)
        old = vars(cls).get(attr)
        try:
            setattr(cls, attr, value)
        except (TypeError, AttributeError):  # a built-in type: leave it
            return
        self.undo_steps.append(
            (lambda: setattr(cls, attr, old)) if had else (lambda: delattr(cls, attr))
        )

    def _swap_code(self, fn, name: str, why: str) -> None:
        if isinstance(fn, types.FunctionType) and not fn.__code__.co_freevars:
            old = fn.__code__
            fn.__code__ = _raiser_code(name, why)
            self.undo_steps.append(lambda: setattr(fn, "__code__", old))

    def undo(self) -> None:
        while self.undo_steps:
            self.undo_steps.pop()()


# --------------------------------------------------------------------------------------------
# Integrity of the interpreter around a learner call
# --------------------------------------------------------------------------------------------


def _watched_namespaces() -> dict[str, dict]:
    """Name -> the live dict whose entries the learner's code must leave alone."""
    spaces = {"__main__": vars(sys.modules["__main__"]), "builtins": vars(builtins)}
    for mod in (
        math,
        np,
        np.testing,
        torch,
        torch.nn,
        torch.nn.functional,
        torch.testing,
        torch.linalg,
        sys.modules[__name__],
    ):
        spaces[mod.__name__] = vars(mod)
    for name, mod in list(sys.modules.items()):
        if name.startswith("tinyqwen") and isinstance(mod, types.ModuleType):
            spaces[name] = vars(mod)
    return spaces


def _watched_classes() -> list[type]:
    classes = [torch.Tensor, torch.nn.Module, torch.nn.Parameter, torch.optim.Optimizer]
    for name, mod in list(sys.modules.items()):
        if name.startswith("tinyqwen") and isinstance(mod, types.ModuleType):
            classes += [
                v for v in vars(mod).values() if isinstance(v, type) and v.__module__ == name
            ]
    return classes


def _children() -> set[int]:
    pids = set()
    try:
        for task in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{task}/children") as f:
                pids.update(int(p) for p in f.read().split())
    except OSError:  # not Linux, or no /proc
        pass
    return pids


def _same_items(now, before: list) -> bool:
    """The same objects in the same order (identity: comparing values could run their __eq__)."""
    now = list(now)
    return len(now) == len(before) and all(a is b for a, b in zip(now, before, strict=True))


def _ipython_state() -> dict:
    shell = sys.modules["IPython"].get_ipython() if "IPython" in sys.modules else None
    if shell is None:
        return {}
    state = {
        "input_transformers_cleanup": list(getattr(shell, "input_transformers_cleanup", [])),
        "input_transformers_post": list(getattr(shell, "input_transformers_post", [])),
        "ast_transformers": list(getattr(shell, "ast_transformers", [])),
        "shell": dict(vars(shell)),
        "shell_class": dict(vars(type(shell))),
    }
    events = getattr(shell, "events", None)
    if events is not None:
        state["events"] = {k: list(v) for k, v in events.callbacks.items()}
    return state


def _restore_ipython(before: dict) -> list[str]:
    """Put IPython's transformers, event callbacks and shell attributes back as they were."""
    shell = sys.modules["IPython"].get_ipython()
    found = []
    for key in ("input_transformers_cleanup", "input_transformers_post", "ast_transformers"):
        live = getattr(shell, key)
        if not _same_items(live, before[key]):
            found.append(f"changed IPython's {key}")
            live[:] = before[key]
    if "events" in before:
        for name, callbacks in shell.events.callbacks.items():
            if not _same_items(callbacks, before["events"].get(name, [])):
                found.append(f"changed IPython's {name} event callbacks")
                callbacks[:] = before["events"].get(name, [])
    for space, target in (("shell", shell), ("shell_class", type(shell))):
        live = vars(target)
        for key in set(live) | set(before[space]):
            if live.get(key, _MISSING) is not before[space].get(key, _MISSING):
                found.append(f"changed the IPython shell's {key}")
                if key in before[space]:
                    setattr(target, key, before[space][key])
                else:
                    delattr(target, key)
    return found


def _torch_state() -> dict:
    """torch's process-wide switches a check relies on."""
    import torch.nn.modules.module as module_hooks

    return {
        "default dtype": torch.get_default_dtype(),
        "grad mode": torch.is_grad_enabled(),
        "torch function modes": torch._C._len_torch_function_stack(),
        "torch dispatch modes": torch._C._len_torch_dispatch_stack(),
        "global nn.Module hooks": {
            name: list(hooks)
            for name, hooks in vars(module_hooks).items()
            if name.startswith("_global_") and isinstance(hooks, dict)
        },
    }


def _restore_torch(before: dict) -> list[str]:
    """Put torch's switches back as they were; describe what had changed."""
    import torch.nn.modules.module as module_hooks

    now, found = _torch_state(), []
    if now["default dtype"] != before["default dtype"]:
        found.append("changed torch's default dtype")
        torch.set_default_dtype(before["default dtype"])
    if now["grad mode"] != before["grad mode"]:
        found.append("changed torch's grad mode")
        torch.set_grad_enabled(before["grad mode"])
    for kind, pop in (
        ("torch function modes", torch._C._pop_torch_function_stack),
        ("torch dispatch modes", torch._C._pop_torch_dispatch_stack),
    ):
        if now[kind] != before[kind]:
            found.append(f"left {kind} active")
            for _ in range(max(0, now[kind] - before[kind])):
                pop()
    for name, keys in now["global nn.Module hooks"].items():
        added = [k for k in keys if k not in before["global nn.Module hooks"].get(name, [])]
        if added:
            found.append(f"registered a global nn.Module hook ({name})")
            for k in added:
                del vars(module_hooks)[name][k]
    return found


_TIMERS = ("ITIMER_REAL", "ITIMER_VIRTUAL", "ITIMER_PROF")


def _signal_state() -> dict:
    """Signal handlers and interval timers: a handler left behind receives the frame it
    interrupts, so it could run the learner's code inside a later check."""
    handlers = {}
    for sig in signal.valid_signals():
        try:
            handlers[sig] = signal.getsignal(sig)
        except (ValueError, OSError):
            continue
    timers = {t: signal.getitimer(getattr(signal, t)) for t in _TIMERS if hasattr(signal, t)}
    return {"handlers": handlers, "timers": timers}


def _restore_signals(before: dict) -> list[str]:
    found = []
    for sig, handler in before["handlers"].items():
        if signal.getsignal(sig) is not handler:
            found.append(f"changed the handler of signal {sig}")
            if threading.current_thread() is threading.main_thread() and handler is not None:
                try:
                    signal.signal(sig, handler)
                except (ValueError, OSError):
                    pass
    for name in before["timers"]:
        if signal.getitimer(getattr(signal, name))[0] > 0:
            found.append(f"left an interval timer ({name}) running")
            signal.setitimer(getattr(signal, name), 0)
    return found


class _Snapshot:
    """What the interpreter looked like before the learner's code ran."""

    def __init__(self):
        self.spaces = {name: (d, dict(d)) for name, d in _watched_namespaces().items()}
        self.classes = {cls: dict(vars(cls)) for cls in _watched_classes()}
        self.sys = {k: getattr(sys, k) for k in ("stdout", "stderr", "displayhook", "excepthook")}
        self.sys_lists = {k: list(getattr(sys, k)) for k in ("meta_path", "path_hooks")}
        self.trace, self.profile = sys.gettrace(), sys.getprofile()
        self.path = list(sys.path)
        self.modules = dict(sys.modules)
        self.torch = _torch_state()
        self.signals = _signal_state()
        self.threads = set(threading.enumerate())
        self.children = _children()
        self.ipython = _ipython_state()

    def changes(self) -> list[str]:
        """Restore whatever the learner's code changed and describe it."""
        found = []
        for name, (live, before) in self.spaces.items():
            for key in set(live) | set(before):
                if key not in before:
                    # Importing a submodule adds it to its package: harmless. A new name matters
                    # only where it can shadow what a check looks up: the notebook and builtins.
                    if name in ("__main__", "builtins") and not isinstance(
                        live[key], types.ModuleType
                    ):
                        found.append(f"added {name}.{key}")
                        del live[key]
                elif key not in live or live[key] is not before[key]:
                    found.append(f"changed {name}.{key}")
                    live[key] = before[key]
        for cls, before in self.classes.items():
            now = vars(cls)
            for key in (set(now) | set(before)) - _CLASS_CACHES:
                if now.get(key, _MISSING) is not before.get(key, _MISSING):
                    found.append(f"changed {cls.__module__}.{cls.__qualname__}.{key}")
                    try:
                        if key in before:
                            setattr(cls, key, before[key])
                        else:
                            delattr(cls, key)
                    except (AttributeError, TypeError):
                        pass
        for key, value in self.sys.items():
            if getattr(sys, key) is not value:
                found.append(f"changed sys.{key}")
                setattr(sys, key, value)
        for key, value in self.sys_lists.items():
            if not _same_items(getattr(sys, key), value):
                found.append(f"changed sys.{key}")
                getattr(sys, key)[:] = value
        if sys.gettrace() is not self.trace or sys.getprofile() is not self.profile:
            found.append("installed a trace or profile function")
            sys.settrace(self.trace)
            sys.setprofile(self.profile)
        if not _same_items(sys.path, self.path):
            found.append("changed sys.path")
            sys.path[:] = self.path
        for name, module in self.modules.items():
            if sys.modules.get(name, _MISSING) is not module:
                found.append(f"replaced or removed sys.modules[{name!r}]")
                sys.modules[name] = module
        found += _restore_torch(self.torch)
        found += _restore_signals(self.signals)
        new_threads = [t for t in threading.enumerate() if t not in self.threads and t.is_alive()]
        if new_threads:
            found.append(f"left {len(new_threads)} thread(s) running")
        for pid in _children() - self.children:
            found.append(f"left child process {pid} running")
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        if self.ipython:
            found += _restore_ipython(self.ipython)
        return found


_MISSING = object()
# Entries Python itself adds to a class the first time it is used in some way (copy/pickle cache
# the slot names): not a change to how the checks run.
_CLASS_CACHES = {"__slotnames__"}


# --------------------------------------------------------------------------------------------
# Calling the learner's code
# --------------------------------------------------------------------------------------------


def _plain(value, where: str = "the result"):
    """A copy of ``value`` made of plain tensors, numbers, strings and containers only."""
    kind = type(value)
    if kind is torch.Tensor or kind is torch.nn.Parameter:
        return torch.Tensor.clone(torch.Tensor.detach(value))
    if kind is np.ndarray:
        return np.array(value, copy=True)
    if kind in (int, float, bool, str, complex, type(None), bytes) or isinstance(value, np.generic):
        return value.item() if isinstance(value, np.generic) else value
    if kind in (torch.dtype, torch.device, torch.Size):
        return value
    if kind in (tuple, list):
        return kind(_plain(v, f"{where}[{i}]") for i, v in enumerate(value))
    if kind is dict:
        return {_plain(k, where): _plain(v, f"{where}[{k!r}]") for k, v in value.items()}
    raise TypeError(
        f"{where} is a {kind.__module__}.{kind.__qualname__}; return tensors, numbers, strings, "
        "or tuples/lists/dicts of them"
    )


def learner_call(fn, *args, forbid: Iterable[str] = (), why: str = "", raw: bool = False, **kwargs):
    """``fn(*args, **kwargs)`` with ``forbid`` unavailable; returns a plain copy of the result.

    forbid: dotted names ("tinyqwen.loss.cross_entropy", "torch.Tensor.log_softmax",
    "tinyqwen.norm.RMSNorm"); calling any of them, under any alias, raises ForbiddenCall.
    raw=True returns the object itself (for a learner's class instance that the check drives
    through further learner_call's) instead of a plain copy.
    Raises TamperingError when the call changed the interpreter (after putting it back).
    """
    if not callable(fn):
        raise TypeError(f"expected the function the exercise asks for, got {type(fn).__name__}")
    snapshot = _Snapshot()
    blocked = _Forbidden(forbid, why)
    error = None
    try:
        result = fn(*args, **kwargs)
        result = result if raw else _plain(result)
    except BaseException as exc:  # noqa: BLE001 - re-raised below, after the integrity check
        error = exc
    finally:
        blocked.undo()
    changes = snapshot.changes()
    if changes:
        shown = "; ".join(changes[:5]) + (
            f" (and {len(changes) - 5} more)" if len(changes) > 5 else ""
        )
        raise TamperingError(
            f"{getattr(fn, '__name__', 'the function')} changed the interpreter the checks run in "
            f"(it was put back): {shown}. An exercise's function must only compute its result."
        ) from error
    if error is not None:
        raise error
    return result


# --------------------------------------------------------------------------------------------
# Comparing results
# --------------------------------------------------------------------------------------------

# Allowed error in units of the dtype's machine epsilon, relative to the size of the values.
# Different correct formulations (another summation order, float64 intermediates, a fused
# kernel) differ by a few epsilon per operation; 16-bit formats get fewer units because their
# epsilon is already large.
ULPS = {torch.float64: 256, torch.float32: 128, torch.bfloat16: 4, torch.float16: 8}


def tolerance(dtype: torch.dtype, scale: float = 1.0) -> float:
    """Absolute tolerance for values of size ``scale`` computed in ``dtype``."""
    if not dtype.is_floating_point:
        return 0.0
    return ULPS.get(dtype, 16) * torch.finfo(dtype).eps * max(float(scale), torch.finfo(dtype).tiny)


def _fail(msg: str, detail: str):
    raise AssertionError(f"{msg}: {detail}" if msg else detail)


def assert_close(
    actual, expected, msg: str = "", *, scale: float | None = None, atol: float | None = None
) -> None:
    """Assert ``actual`` matches ``expected`` (tensors, arrays, numbers or containers of them).

    The tolerance is :func:`tolerance` of the expected dtype at ``scale`` (default: the largest
    magnitude in ``expected``); pass ``scale`` when the rounding error is set by something else,
    e.g. the largest angle for sines and cosines. ``atol`` overrides it.
    """
    if isinstance(expected, (tuple, list)):
        if not isinstance(actual, (tuple, list)) or len(actual) != len(expected):
            _fail(
                msg,
                f"expected a sequence of {len(expected)} values, got {type(actual).__name__}"
                + (f" of length {len(actual)}" if isinstance(actual, (tuple, list)) else ""),
            )
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            assert_close(a, e, f"{msg} [item {i}]".strip(), scale=scale, atol=atol)
        return
    if isinstance(expected, dict):
        if not isinstance(actual, dict) or set(actual) != set(expected):
            _fail(
                msg,
                f"expected a dict with keys {sorted(expected)}, got "
                + (f"keys {sorted(actual)}" if isinstance(actual, dict) else type(actual).__name__),
            )
        for key in expected:
            assert_close(
                actual[key], expected[key], f"{msg} [{key!r}]".strip(), scale=scale, atol=atol
            )
        return
    if isinstance(expected, (int, float, np.generic)) and not isinstance(expected, bool):
        expected = torch.tensor(float(expected), dtype=torch.float64)
        if type(actual) in (int, float) or isinstance(actual, np.generic):
            actual = torch.tensor(float(actual), dtype=torch.float64)
    if isinstance(expected, np.ndarray):
        expected = torch.from_numpy(expected)
        if type(actual) is np.ndarray:
            actual = torch.from_numpy(actual)
    if type(expected) is not torch.Tensor and not isinstance(expected, torch.Tensor):
        if actual != expected:
            _fail(msg, f"expected {expected!r}, got {actual!r}")
        return
    if type(actual) is not torch.Tensor:
        _fail(msg, f"expected a torch.Tensor, got {type(actual).__name__}")
    if tuple(actual.shape) != tuple(expected.shape):
        _fail(msg, f"shape {tuple(actual.shape)}, expected {tuple(expected.shape)}")
    if actual.dtype != expected.dtype:
        _fail(msg, f"dtype {actual.dtype}, expected {expected.dtype}")
    if not expected.dtype.is_floating_point:
        if not torch.equal(actual, expected):
            bad = (actual != expected).nonzero()[0].tolist()
            _fail(
                msg,
                f"differs at index {bad}: {actual[tuple(bad)].item()} vs {expected[tuple(bad)].item()}",
            )
        return
    a, e = actual.double(), expected.double()
    if not torch.equal(torch.isnan(a), torch.isnan(e)) or not torch.equal(
        torch.isinf(a), torch.isinf(e)
    ):
        _fail(msg, "NaN or infinity where the expected values have none (or the reverse)")
    finite = torch.isfinite(e)
    if not torch.equal(a[~finite], e[~finite]):
        _fail(msg, "infinities of the wrong sign")
    a, e = a[finite], e[finite]
    if e.numel() == 0:
        return
    size = float(e.abs().max()) if scale is None else scale
    tol = atol if atol is not None else tolerance(expected.dtype, size)
    err = (a - e).abs()
    worst = int(err.argmax())
    if err[worst] > tol:
        _fail(
            msg,
            f"off by {err[worst].item():.3g} (tolerance {tol:.3g} for {expected.dtype} values of "
            f"size {size:.3g}) at flat index {worst}: got {a[worst].item():.6g}, expected {e[worst].item():.6g}",
        )


def assert_equal(actual, expected, msg: str = "") -> None:
    """Exact equality for integers, strings, booleans and integer tensors."""
    if isinstance(expected, torch.Tensor):
        if (
            type(actual) is not torch.Tensor
            or actual.shape != expected.shape
            or not torch.equal(actual, expected)
        ):
            _fail(
                msg,
                f"expected {expected.tolist() if expected.numel() < 20 else 'the reference tensor'}, "
                f"got {actual.tolist() if type(actual) is torch.Tensor and actual.numel() < 20 else actual!r}",
            )
        return
    if type(actual) is not type(expected) and not (
        isinstance(expected, int) and type(actual) is int
    ):
        _fail(
            msg,
            f"expected a {type(expected).__name__} ({expected!r}), got a {type(actual).__name__} ({actual!r})",
        )
    if actual != expected:
        _fail(msg, f"expected {expected!r}, got {actual!r}")
