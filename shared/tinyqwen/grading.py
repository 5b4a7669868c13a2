# Hand-written support module (teaches nothing): grading submissions a class handed in.
"""Grade untrusted submissions: ``python -m tinyqwen.course grade SUBMISSIONS --source notebooks``.

Nothing a submission contains is trusted except the bodies of the definitions in its solution
cells. Each submission is matched to an instructor notebook by the grade ids of its solution
cells (never by file name); the grading notebook is the instructor's notebook (setup, chapter
code, checks with hidden tests, points) with only the solution cells' definitions taken from the
submission. Those definitions are filtered with :mod:`ast` so that no learner code runs when they
are defined; learner code runs only inside :func:`tinyqwen.checks.learner_call`.

Each submission is executed by a small runner (``python -m tinyqwen.grading _run``) in a
bubblewrap sandbox: no network, a fresh scratch directory as the only writable place, read-only
Python, an unprivileged user, resource limits, and a wall-clock limit per cell that kills the
whole sandbox. A check that hangs, crashes or tampers with the interpreter costs its own points;
the runner is restarted for the checks not yet graded. book/instructors.md ("Grading") states the
threat model, the guarantees and the limits.
"""

from __future__ import annotations

import argparse
import ast
import csv
import io
import json
import os
import queue
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

# The runner's environment: offline, ci profile, headless plots, one thread per library.
SANDBOX_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "MPLBACKEND": "Agg",
    "TINYQWEN_PROFILE": "ci",
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "OMP_WAIT_POLICY": "PASSIVE",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "TOKENIZERS_PARALLELISM": "false",
}
MAX_SUBMISSION_BYTES = 50 * 2**20
MAX_PROTOCOL_LINE = 65536
NOBODY = 65534  # parallel job k runs as uid NOBODY - k, so RLIMIT_NPROC counts per sandbox
SCRATCH = "/grading"  # where the sandbox sees its scratch directory


# ============================================================================================
# Scoring an executed notebook (used by the test suite on notebooks run in a kernel)
# ============================================================================================


def scores(executed_nb) -> list[dict]:
    """Points per graded cell of an executed notebook: full points when the cell raised nothing."""
    from tinyqwen.course import is_graded, nbgrader_meta

    out = []
    for cell in executed_nb.cells:
        if not is_graded(cell):
            continue
        meta = nbgrader_meta(cell)
        errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
        ok = cell.get("execution_count") is not None and not errors
        reason = (
            ""
            if ok
            else (f"{errors[0]['ename']}: {errors[0]['evalue']}"[:200] if errors else "not run")
        )
        points = meta.get("points", 0)
        out.append(
            {
                "grade_id": meta["grade_id"],
                "max_points": points,
                "points": points if ok else 0,
                "error": reason,
            }
        )
    return out


# ============================================================================================
# Instructor notebooks
# ============================================================================================


@dataclass
class Exercise:
    """One graded cell of an instructor notebook and the solution cell it checks."""

    check_id: str
    cell: int  # index of the graded cell in the notebook
    points: float
    solution_id: str | None


@dataclass
class Assignment:
    """An instructor notebook: the only source of cells, checks, grade ids and points."""

    path: Path
    cells: list  # nbformat cells
    solution_ids: list[str]
    stubs: dict[str, str]  # solution grade id -> the student edition's source
    exports: dict[str, list[str]]  # solution grade id -> names the instructor's solution defines
    exercises: list[Exercise]
    packages: set[str]  # top-level packages the notebook imports

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def max_points(self) -> float:
        return sum(e.points for e in self.exercises)


def load_assignment(path: Path) -> Assignment | None:
    """The instructor notebook at ``path``, or None when it has no graded cells."""
    import nbformat

    from tinyqwen.course import (
        is_graded,
        is_solution,
        nbgrader_meta,
        notebook_imports,
        solution_names,
        student_edition,
    )

    nb = nbformat.read(path, as_version=4)
    if not any(is_graded(c) for c in nb.cells):
        return None
    student = student_edition(nb)
    solution_ids, stubs, exports, exercises = [], {}, {}, []
    last_solution = None
    for i, cell in enumerate(nb.cells):
        if is_solution(cell):
            gid = nbgrader_meta(cell)["grade_id"]
            solution_ids.append(gid)
            stubs[gid] = student.cells[i].source
            exports[gid] = sorted(solution_names(cell))
            last_solution = gid
        elif is_graded(cell):
            meta = nbgrader_meta(cell)
            exercises.append(Exercise(meta["grade_id"], i, meta.get("points", 0), last_solution))
            last_solution = None
    return Assignment(path, nb.cells, solution_ids, stubs, exports, exercises, notebook_imports(nb))


def load_assignments(source: Path) -> list[Assignment]:
    """Every instructor notebook with graded cells in ``source``; grade ids must be unique."""
    if not source.is_dir():
        raise ValueError(f"--source {source} is not a directory of instructor notebooks")
    found = [a for p in sorted(source.glob("*.ipynb")) if (a := load_assignment(p)) is not None]
    if not found:
        raise ValueError(f"no instructor notebook with graded cells in {source}")
    owner: dict[str, str] = {}
    for a in found:
        for gid in a.solution_ids + [e.check_id for e in a.exercises]:
            if gid in owner:
                raise ValueError(f"grade id {gid!r} is in both {owner[gid]} and {a.name}")
            owner[gid] = a.name
    return found


# ============================================================================================
# Submissions: read every file before grading any, match by grade ids
# ============================================================================================


@dataclass
class Submission:
    path: Path
    data: bytes | None = None
    error: str = ""  # why it cannot be read
    solutions: dict[str, str] = field(default_factory=dict)  # grade id -> source (first cell)
    ids: set[str] = field(default_factory=set)  # every grade id in its code cells
    duplicates: list[str] = field(default_factory=list)


def submission_paths(args: list[Path]) -> list[Path]:
    """Files named on the command line and every ``*.ipynb`` under named directories."""
    out = []
    for p in args:
        if p.is_dir():
            out += sorted(
                q for q in p.rglob("*.ipynb") if ".ipynb_checkpoints" not in q.parts and q.is_file()
            )
        else:
            out.append(p)
    seen, unique = set(), []
    for p in out:
        key = os.path.abspath(p)
        if key not in seen:
            seen.add(key)
            unique.append(Path(key))
    return unique


def read_submissions(paths: list[Path]) -> list[Submission]:
    """Read every submission into memory first: no submission can change a neighbour's file
    before it is graded."""
    subs = []
    for path in paths:
        sub = Submission(path)
        try:
            if path.stat().st_size > MAX_SUBMISSION_BYTES:
                sub.error = f"larger than {MAX_SUBMISSION_BYTES // 2**20} MiB"
            else:
                sub.data = path.read_bytes()
        except OSError as exc:
            sub.error = f"cannot read it: {exc.strerror or exc}"
        subs.append(sub)
    for sub in subs:
        if sub.data is not None:
            _parse_submission(sub)
    return subs


def _cell_source(cell) -> str | None:
    src = cell.get("source")
    if isinstance(src, str):
        return src
    if isinstance(src, list) and all(isinstance(s, str) for s in src):
        return "".join(src)
    return None


def _parse_submission(sub: Submission) -> None:
    """Grade ids and solution sources of a notebook's JSON, tolerating any structure."""
    try:
        nb = json.loads(sub.data.decode("utf-8"))
    except (ValueError, RecursionError) as exc:
        sub.error = f"not a notebook (invalid JSON: {str(exc)[:80]})"
        return
    cells = nb.get("cells") if isinstance(nb, dict) else None
    if not isinstance(cells, list):
        sub.error = "not a notebook (no list of cells)"
        return
    for cell in cells:
        if not isinstance(cell, dict) or cell.get("cell_type") != "code":
            continue
        meta = cell.get("metadata")
        nbg = meta.get("nbgrader") if isinstance(meta, dict) else None
        gid = nbg.get("grade_id") if isinstance(nbg, dict) else None
        source = _cell_source(cell)
        if not isinstance(gid, str) or source is None:
            continue
        sub.ids.add(gid)
        if gid in sub.solutions:
            sub.duplicates.append(gid)
        else:
            sub.solutions[gid] = source


def match_assignment(
    sub: Submission, assignments: list[Assignment]
) -> tuple[Assignment | None, str]:
    """The instructor notebook whose solution grade ids the submission shares most; None (with
    the reason) when it shares none, or shares as many with two notebooks."""
    shared = sorted(
        ((len(sub.ids & set(a.solution_ids)), a.name, a) for a in assignments),
        key=lambda t: (-t[0], t[1]),
    )
    best = shared[0]
    if best[0] == 0:
        return None, "refused: its grade ids match no instructor notebook (not graded)"
    if len(shared) > 1 and shared[1][0] == best[0]:
        return None, (
            f"refused: it matches {best[1]} and {shared[1][1]} equally "
            f"({best[0]} grade ids each; not graded)"
        )
    return best[2], ""


# ============================================================================================
# Carrying definitions: only what cannot run code when it is defined
# ============================================================================================

# Dunder methods a learner's class may define: each runs only when the learner's own code (or a
# check, through learner_call) calls it. Every other dunder (__repr__, __eq__, __del__,
# __getattr__, __torch_function__, ...) can run implicitly, outside learner_call.
ALLOWED_DUNDERS = frozenset(
    {
        "__init__",
        "__post_init__",
        "__call__",
        "__len__",
        "__getitem__",
        "__setitem__",
        "__iter__",
        "__next__",
        "__contains__",
        "__enter__",
        "__exit__",
    }
)
# Imports a definition may carry: the standard library and the instructor notebook's packages,
# except modules whose import does something (a browser, a window) or that name the runner.
ALWAYS_IMPORTABLE = frozenset({"math", "torch", "numpy", "tinyqwen"})
NEVER_IMPORTABLE = frozenset(
    {"antigravity", "this", "turtle", "turtledemo", "tkinter", "idlelib", "webbrowser", "__main__"}
)
DATACLASS_OPTIONS = frozenset(
    {"init", "repr", "eq", "order", "unsafe_hash", "frozen", "match_args", "kw_only", "slots"}
)
_HELPER = "__tinyqwen_{}__"  # names the runner provides to definition-time expressions


class NotCarried(Exception):
    """A solution cell breaks a rule for definitions; it is not carried to grading at all."""

    def __init__(self, node, message: str):
        super().__init__(f"line {getattr(node, 'lineno', '?')}: {message}")


@dataclass
class Carried:
    """What the runner executes for one solution cell, and what was left out."""

    source: str = ""
    binds: list[str] = field(default_factory=list)  # names the definitions bind
    imports: list[list[str]] = field(default_factory=list)  # [name, module, how]
    notes: list[str] = field(default_factory=list)
    error: str = ""


def _helper_call(what: str, *args, **kwargs) -> ast.Call:
    return ast.Call(
        func=ast.Name(_HELPER.format(what), ast.Load()),
        args=[ast.Constant(a) for a in args],
        keywords=[ast.keyword(k, ast.Constant(v)) for k, v in kwargs.items()],
    )


def _dotted(node) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return ".".join([node.id, *reversed(parts)])


def _is_dunder(name: str) -> bool:
    return name.startswith("__") and name.endswith("__")


def _check_name(node, name: str, what: str) -> None:
    if _is_dunder(name) or name.startswith("__tinyqwen"):
        raise NotCarried(node, f"{what} {name!r}: names like __this__ are not carried")


def _literal(node) -> bool:
    try:
        ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False
    return True


def _value(node):
    """A value that costs no learner code to compute: a literal, a name or a dotted name
    (``torch.float32``, ``math.pi``, ``my_function``), ``float("inf")``; else None."""
    if _literal(node) or _dotted(node) is not None:
        return node
    if (
        isinstance(node, ast.Call)
        and _dotted(node.func) == "float"
        and len(node.args) == 1
        and not node.keywords
        and isinstance(node.args[0], ast.Constant)
        and node.args[0].value in ("inf", "-inf", "nan")
    ):
        return ast.Constant(float(node.args[0].value))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        inner = _value(node.operand)
        return None if inner is None else ast.UnaryOp(node.op, inner)
    return None


def _defaults(node, args: ast.arguments) -> None:
    """Default values are evaluated when a function is defined: literals and dtypes only."""
    args.defaults = [_default(node, d) for d in args.defaults]
    args.kw_defaults = [None if d is None else _default(node, d) for d in args.kw_defaults]


def _default(node, value):
    out = _value(value)
    if out is None:
        raise NotCarried(
            value,
            f"default value {ast.unparse(value)!r} of {getattr(node, 'name', 'a lambda')}: "
            "only literals and (dotted) names are carried",
        )
    return out


def _strip_annotations(args: ast.arguments) -> None:
    for a in [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]:
        if a is not None:
            a.annotation = None


# Decorators a definition may use, by where it sits. Each is replaced by a call to the runner,
# which applies its own copy (captured before any learner code ran).
DECORATORS = {
    "function": {"no_grad", "inference_mode", "cache", "lru_cache"},
    "method": {"staticmethod", "classmethod", "property", "no_grad", "inference_mode"},
    "class": {"dataclass"},
}


def _decorator(node, where: str, imported: dict[str, str]) -> ast.Call:
    call = node if isinstance(node, ast.Call) else None
    name = _dotted(call.func if call else node)
    canonical = {
        "torch.no_grad": "no_grad",
        "torch.inference_mode": "inference_mode",
        "functools.cache": "cache",
        "functools.lru_cache": "lru_cache",
        "dataclasses.dataclass": "dataclass",
        "staticmethod": "staticmethod",
        "classmethod": "classmethod",
        "property": "property",
    }.get(name or "")
    if canonical is None and name in ("cache", "lru_cache", "dataclass"):
        if imported.get(name) in (f"functools.{name}", f"dataclasses.{name}"):
            canonical = name
    shown = ast.unparse(node)
    if canonical is None or canonical not in DECORATORS[where]:
        raise NotCarried(node, f"decorator @{shown} is not allowed here")
    kwargs = {}
    if call is not None:
        if canonical in ("staticmethod", "classmethod", "property", "cache"):
            raise NotCarried(node, f"decorator @{shown}: use it without arguments")
        if canonical in ("no_grad", "inference_mode") and (call.args or call.keywords):
            raise NotCarried(node, f"decorator @{shown}: use it without arguments")
        if canonical == "lru_cache":
            if len(call.args) > 1 or not all(_literal(a) for a in call.args):
                raise NotCarried(node, f"decorator @{shown}: only literal arguments")
            if call.args:
                kwargs["maxsize"] = ast.literal_eval(call.args[0])
        for kw in call.keywords:
            allowed = DATACLASS_OPTIONS if canonical == "dataclass" else {"maxsize", "typed"}
            if kw.arg not in allowed or not _literal(kw.value):
                raise NotCarried(
                    node, f"decorator @{shown}: only literal options {sorted(allowed)}"
                )
            kwargs[kw.arg] = ast.literal_eval(kw.value)
    return _helper_call("decorator", canonical, **kwargs)


def _function(node, where: str, imported: dict[str, str]) -> None:
    node.decorator_list = [_decorator(d, where, imported) for d in node.decorator_list]
    _defaults(node, node.args)
    _strip_annotations(node.args)
    node.returns = None


def _class(node: ast.ClassDef, imported: dict[str, str]) -> None:
    _check_name(node, node.name, "class")
    if node.keywords:
        raise NotCarried(
            node, f"class {node.name}: keyword arguments (metaclass=...) are not allowed"
        )
    bases = []
    for b in node.bases:
        name = _dotted(b)
        if name is None:
            raise NotCarried(
                b, f"class {node.name}: a base class must be a name, not {ast.unparse(b)!r}"
            )
        bases.append(_helper_call("base", name))
    node.bases = bases
    node.decorator_list = [_decorator(d, "class", imported) for d in node.decorator_list]
    for stmt in node.body:
        if isinstance(stmt, ast.Pass) or (
            isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant)
        ):
            continue
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
            if _is_dunder(stmt.name) and stmt.name not in ALLOWED_DUNDERS:
                raise NotCarried(
                    stmt,
                    f"method {node.name}.{stmt.name} could run outside the checks "
                    f"(allowed special methods: {', '.join(sorted(ALLOWED_DUNDERS))})",
                )
            _function(stmt, "method", imported)
            continue
        if isinstance(stmt, ast.Assign) and all(isinstance(t, ast.Name) for t in stmt.targets):
            for t in stmt.targets:
                if _is_dunder(t.id) and t.id != "__slots__":
                    raise NotCarried(stmt, f"class {node.name}: assigning {t.id} is not allowed")
            value = _value(stmt.value)
            if value is None:
                raise NotCarried(
                    stmt, f"class {node.name}: class attributes must be literals or names"
                )
            stmt.value = value
            continue
        if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
            _check_name(stmt, stmt.target.id, "class attribute")
            if stmt.value is not None:
                value = _value(stmt.value)
                if value is None:
                    raise NotCarried(
                        stmt, f"class {node.name}: class attributes must be literals or names"
                    )
                stmt.value = value
            stmt.annotation = ast.Constant(ast.unparse(stmt.annotation))
            continue
        raise NotCarried(
            stmt,
            f"class {node.name}: a class body may hold only methods, a docstring and "
            "NAME = literal",
        )


def _targets(node) -> list[str] | None:
    """Names bound by an assignment's targets, or None when a target is not a plain name."""
    names = []
    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
    for t in targets:
        elts = t.elts if isinstance(t, (ast.Tuple, ast.List)) else [t]
        for e in elts:
            if not isinstance(e, ast.Name):
                return None
            names.append(e.id)
    return names


def _parse(source: str) -> ast.Module:
    try:
        return ast.parse(source)
    except SyntaxError:
        from IPython.core.inputtransformer2 import TransformerManager

        return ast.parse(TransformerManager().transform_cell(source))


def carry(source: str, packages: set[str] = frozenset()) -> Carried:
    """The definitions of a submitted solution cell, in a form whose definition runs no
    learner code.

    Kept: imports (of the standard library, ``packages`` and torch/numpy/tinyqwen), ``def``,
    ``async def``, ``class`` and ``NAME = literal``. Everything else is dropped with a note.
    A definition that breaks a rule (a decorator, default value, base class or special method
    that could run code when defined or implicitly later) makes the whole cell not carried:
    ``error`` says why.
    """
    out = Carried()
    if source.lstrip().startswith("%%"):  # a cell magic (%%time): its body is the cell
        magic, _, source = source.lstrip().partition("\n")
        out.notes.append(f"line 1: the cell magic {magic.split()[0]} is not carried")
        source = "\n" + source  # keep line numbers
    try:
        tree = _parse(source)
    except (SyntaxError, ValueError, MemoryError, RecursionError) as exc:
        out.error = f"the cell does not parse: {exc}"
        return out
    kept = []
    imported: dict[str, str] = {}
    importable = (
        set(sys.stdlib_module_names) | set(packages) | ALWAYS_IMPORTABLE
    ) - NEVER_IMPORTABLE
    try:
        for node in tree.body:
            if isinstance(node, ast.Pass) or (
                isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
            ):
                continue
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                _carry_import(node, out, imported, importable)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                _check_name(node, node.name, "function")
                _function(node, "function", imported)
                kept.append(node)
                out.binds.append(node.name)
            elif isinstance(node, ast.ClassDef):
                _class(node, imported)
                kept.append(node)
                out.binds.append(node.name)
            elif isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
                names = _targets(node)
                value = _value(node.value)
                if value is None and isinstance(node.value, ast.Lambda):
                    _defaults(node.value, node.value.args)
                    value = node.value
                if names is None or value is None:
                    out.notes.append(
                        f"line {node.lineno} is not carried to grading: only definitions are "
                        "(imports, def, class, NAME = literal or name)"
                    )
                    continue
                for n in names:
                    _check_name(node, n, "name")
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                kept.append(ast.Assign(targets=targets, value=value, lineno=node.lineno))
                out.binds += names
            elif isinstance(node, ast.AnnAssign):
                continue  # a bare annotation binds nothing
            else:
                out.notes.append(
                    f"line {node.lineno} is not carried to grading: only definitions are "
                    "(imports, def, class, NAME = literal or name)"
                )
    except NotCarried as exc:
        out.error = f"not carried: {exc}"
        return out
    module = ast.fix_missing_locations(ast.Module(body=kept, type_ignores=[]))
    out.source = ast.unparse(module)
    try:
        compile(out.source, "<carried>", "exec", flags=_annotations_flag(), dont_inherit=True)
    except SyntaxError as exc:
        out.error = f"not carried: {exc}"
    out.binds = list(dict.fromkeys(out.binds + [name for name, *_ in out.imports]))
    return out


def _annotations_flag() -> int:
    import __future__

    return __future__.annotations.compiler_flag


def _future_flags() -> int:
    """The compiler flags of every ``from __future__ import`` feature."""
    import __future__

    flags = 0
    for name in __future__.all_feature_names:
        flags |= getattr(__future__, name).compiler_flag
    return flags


def _carry_import(node, out: Carried, imported: dict[str, str], importable: set[str]) -> None:
    def skip(what: str, why: str) -> None:
        out.notes.append(f"line {node.lineno}: {what} is not carried ({why})")

    if isinstance(node, ast.ImportFrom):
        if node.module == "__future__":
            return
        if node.level or not node.module:
            return skip("a relative import", "only absolute imports are")
        if node.module.split(".")[0] not in importable:
            return skip(f"import from {node.module}", "not a package this notebook uses")
        for alias in node.names:
            if alias.name == "*":
                skip(f"from {node.module} import *", "name what you import")
                continue
            bind = alias.asname or alias.name
            _check_name(node, bind, "imported name")
            out.imports.append([bind, node.module, "attr:" + alias.name])
            imported[bind] = f"{node.module}.{alias.name}"
        return
    for alias in node.names:
        if alias.name.split(".")[0] not in importable:
            skip(f"import {alias.name}", "not a package this notebook uses")
            continue
        bind = alias.asname or alias.name.split(".")[0]
        _check_name(node, bind, "imported name")
        out.imports.append([bind, alias.name, "module" if alias.asname else "top"])
        imported[bind] = alias.name if alias.asname else bind


# What a reviewer should look at: APIs that reach into the interpreter, the checker or the system.
FLAG_PATTERNS = [
    (r"\bsys\s*\.\s*_getframe|\b_current_frames\b|\binspect\b", "frame introspection"),
    (
        r"\bf_back\b|\bf_locals\b|\bf_globals\b|\btb_frame\b|\bgi_frame\b|\bf_code\b",
        "frame objects",
    ),
    (r"\bgc\s*\.|\bimport\s+gc\b|\bctypes\b", "gc / ctypes"),
    (
        r"__globals__|__code__|__closure__|__builtins__|__subclasses__|__dict__|__class__|"
        r"__import__|__main__|__mro__",
        "interpreter internals",
    ),
    (r"\bget_ipython\b|\bIPython\b", "IPython"),
    (r"\bbuiltins\b|\bglobals\s*\(|\bvars\s*\(|\blocals\s*\(", "namespaces"),
    (r"\bexec\s*\(|\beval\s*\(|\bcompile\s*\(", "exec / eval"),
    (r"\bos\s*\.|\bsubprocess\b|\bsocket\b|\burllib\b|\bhttp\b|\brequests\b", "system / network"),
    (r"\bthreading\b|\b_thread\b|\bmultiprocessing\b|\bsignal\b|\bresource\b", "threads / signals"),
    (r"\bopen\s*\(|\bpathlib\b|\bPath\s*\(|\bshutil\b", "files"),
    (
        r"\bimportlib\b|\bsys\s*\.\s*modules\b|\bsys\s*\.\s*path\b|\bsys\s*\.",
        "import machinery / sys",
    ),
    (r"\bsetattr\s*\(|\bdelattr\s*\(", "setattr"),
    (r"\bpickle\b|\bmarshal\b|\bdill\b|\bcopyreg\b", "serialisation"),
    (
        r"\btinyqwen\s*\.\s*(checks|grading)\b|\blearner_call\b|\bassert_close\b|"
        r"\bassert_equal\b|\bForbiddenCall\b|\bTamperingError\b|\ballclose\b|\btesting\b",
        "refers to the checker",
    ),
]


def flags(source: str) -> list[str]:
    """Static review flags for a submitted cell: 'what (line N)'."""
    out = []
    for pattern, label in FLAG_PATTERNS:
        lines = [
            str(n) for n, line in enumerate(source.splitlines(), 1) if re.search(pattern, line)
        ]
        if lines:
            out.append(f"{label} (line {', '.join(lines[:5])}{'…' if len(lines) > 5 else ''})")
    return out


# ============================================================================================
# The grading plan: the instructor's cells with the submission's definitions
# ============================================================================================


@dataclass
class Plan:
    cells: list[dict]  # what the runner executes, in order
    exercises: list[Exercise]
    notes: dict[int, list[str]]  # graded cell index -> notes on its solution
    flags: list[str]
    submission_notes: list[str]


def grading_plan(assignment: Assignment, sub: Submission) -> Plan:
    from tinyqwen.course import is_graded, is_solution, nbgrader_meta

    cells, notes, flag_list = [], {}, []
    solution_notes: dict[str, list[str]] = {}
    for i, cell in enumerate(assignment.cells):
        if cell.cell_type != "code":
            continue
        if is_solution(cell):
            gid = nbgrader_meta(cell)["grade_id"]
            submitted = sub.solutions.get(gid)
            these = solution_notes.setdefault(gid, [])
            if submitted is None:
                these.append(
                    f"solution cell {gid} is missing from the submission (graded as the stub)"
                )
                carried = carry(assignment.stubs[gid], assignment.packages)
            else:
                flag_list += [f"{gid}: {f}" for f in flags(submitted)]
                carried = carry(submitted, assignment.packages)
                these += carried.notes
                if gid in sub.duplicates:
                    these.append(f"grade id {gid} is on several cells; the first one is graded")
                if carried.error:
                    these.append(carried.error)
                    carried = carry(assignment.stubs[gid], assignment.packages)
            cells.append(
                {
                    "i": i,
                    "kind": "solution",
                    "grade_id": gid,
                    "source": carried.source,
                    "binds": carried.binds,
                    "imports": carried.imports,
                    "exports": assignment.exports[gid],
                }
            )
        elif is_graded(cell):
            cells.append({"i": i, "kind": "check", "source": cell.source})
        else:
            cells.append({"i": i, "kind": "instructor", "source": cell.source})
    for ex in assignment.exercises:
        notes[ex.cell] = list(solution_notes.get(ex.solution_id, []))
    extra = sorted(
        sub.ids - set(assignment.solution_ids) - {e.check_id for e in assignment.exercises}
    )
    sub_notes = []
    if extra:
        sub_notes.append(f"cells with unknown grade ids earn nothing: {', '.join(extra[:10])}")
    return Plan(cells, assignment.exercises, notes, flag_list, sub_notes)


# ============================================================================================
# The sandbox
# ============================================================================================


@dataclass
class Sandbox:
    """How each submission's runner is started: bubblewrap, or (loudly) without it."""

    kind: str  # "bubblewrap" or "none"
    description: str  # one line for every report row
    bwrap: str | None = None
    setpriv: str | None = None  # drop to an unprivileged uid (when the grader runs as root)
    readonly: list[str] = field(default_factory=list)

    @property
    def isolated(self) -> bool:
        return self.kind == "bubblewrap"

    def command(self, scratch: Path, uid: int | None, argv: list[str]) -> tuple[list[str], str]:
        """(command line, working directory) that runs ``argv`` for one attempt."""
        drop = (
            [
                self.setpriv,
                f"--reuid={uid}",
                f"--regid={uid}",
                "--clear-groups",
                "--inh-caps=-all",
                "--bounding-set=-all",
                "--no-new-privs",
            ]
            if self.setpriv and uid is not None
            else []
        )
        if not self.isolated:
            return drop + argv, str(scratch)
        if os.geteuid() == 0:
            # No user namespace: the processes keep a real unprivileged uid, which RLIMIT_NPROC
            # counts (it never counts root's processes).
            ns = [
                "--unshare-ipc",
                "--unshare-pid",
                "--unshare-net",
                "--unshare-uts",
                "--unshare-cgroup-try",
            ]
        else:
            ns = ["--unshare-all"]
        cmd = [self.bwrap, *ns, "--die-with-parent", "--new-session", "--ro-bind", "/usr", "/usr"]
        for d in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
            if os.path.islink(d):
                cmd += ["--symlink", os.readlink(d), d]
            elif os.path.isdir(d):
                cmd += ["--ro-bind", d, d]
        cmd += ["--ro-bind", "/etc", "/etc", "--proc", "/proc", "--dev", "/dev"]
        cmd += ["--perms", "1777", "--tmpfs", "/tmp"]
        made = {"/", "/usr", "/etc", "/tmp", "/proc", "/dev"}
        for path in self.readonly:
            parents = [p for p in reversed(Path(path).parents) if str(p) not in made]
            for p in parents:
                cmd += ["--perms", "0755", "--dir", str(p)]
                made.add(str(p))
            cmd += ["--ro-bind", path, path]
            made.add(path)
        cmd += ["--bind", str(scratch), SCRATCH, "--chdir", SCRATCH, "--", *drop, *argv]
        return cmd, "/"


def _readonly_paths() -> list[str]:
    """What the runner needs besides /usr and /etc: the Python prefixes and the tinyqwen
    package (with its recorded results), nothing of the repository's notebooks."""
    import tinyqwen
    from tinyqwen.records import results_dir

    wanted = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    wanted |= {os.path.realpath(p) for p in list(wanted)}
    wanted.add(os.path.realpath(os.path.dirname(sys.executable)))
    wanted.add(os.path.dirname(os.path.realpath(tinyqwen.__file__)))
    if results_dir().is_dir():
        wanted.add(str(results_dir().resolve()))
    paths = sorted(
        p
        for p in wanted
        if os.path.isdir(p)
        and not p.startswith(("/usr/", "/etc/"))
        and p not in ("/", "/usr", "/etc")
    )
    return [p for p in paths if not any(p != q and p.startswith(q + "/") for q in paths)]


def detect_sandbox(bwrap: str | None = None) -> Sandbox:
    """Bubblewrap if it is installed and works here, else a sandbox of kind "none" that says why."""
    setpriv = shutil.which("setpriv") if os.geteuid() == 0 else None
    readonly = _readonly_paths()
    name = bwrap or os.environ.get("TINYQWEN_BWRAP") or "bwrap"
    found = shutil.which(name)
    why = ""
    if not sys.platform.startswith("linux"):
        why = "bubblewrap needs Linux"
    elif found is None:
        why = f"bubblewrap not found ({name!r} is not an executable; apt-get install bubblewrap)"
    if not why:
        box = Sandbox("bubblewrap", "", found, setpriv, readonly)
        ok, detail = _probe(box, NOBODY)
        if ok:
            version = subprocess.run(
                [found, "--version"], capture_output=True, text=True
            ).stdout.strip()
            user = f"uid {NOBODY}-k" if setpriv else f"uid {os.geteuid()}"
            box.description = (
                f"{version or 'bubblewrap'}: no network, private scratch, read-only Python, {user}"
            )
            return box
        why = f"bubblewrap failed here ({detail})"
    box = Sandbox("none", "", None, setpriv, readonly)
    if setpriv and not _probe(box, NOBODY)[0]:
        box.setpriv = None  # Python is not readable by an unprivileged user (e.g. under /root)
    user = f"uid {NOBODY}-k" if box.setpriv else f"uid {os.geteuid()}"
    box.description = f"none: {why}; resource limits and a scratch directory only, {user}"
    return box


def _probe(box: Sandbox, uid: int) -> tuple[bool, str]:
    scratch = Path(tempfile.mkdtemp(prefix="tinyqwen-probe-"))
    try:
        if box.setpriv:
            os.chmod(scratch, 0o755)
            os.chown(scratch, uid, uid)
        cmd, cwd = box.command(scratch, uid, [sys.executable, "-I", "-B", "-c", "import tinyqwen"])
        try:
            out = subprocess.run(
                cmd,
                cwd=cwd,
                env=_sandbox_env(box, scratch),
                capture_output=True,
                text=True,
                timeout=60,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return False, str(exc)[:200]
        return out.returncode == 0, (
            out.stderr.strip().splitlines() or ["exit code " + str(out.returncode)]
        )[-1][:200]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _sandbox_env(box: Sandbox, scratch: Path) -> dict:
    home = SCRATCH if box.isolated else str(scratch)
    tmp = "/tmp" if box.isolated else str(scratch / "tmp")
    return {
        **SANDBOX_ENV,
        "HOME": home,
        "TMPDIR": tmp,
        "MPLCONFIGDIR": f"{tmp}/matplotlib",
        "XDG_CACHE_HOME": f"{tmp}/cache",
        "HF_HOME": f"{tmp}/huggingface",
    }


# ============================================================================================
# Running one submission: attempts, restarts
# ============================================================================================


@dataclass
class Limits:
    timeout: float = 120.0  # seconds per cell
    submission_timeout: float = 1800.0  # seconds per submission, restarts included
    memory_gb: float = 4.0
    processes: int = 64
    file_mb: int = 256


@dataclass
class Attempt:
    """What one run of the runner reported before it finished or was stopped."""

    results: dict[int, tuple[bool, str]] = field(default_factory=dict)  # cell index -> (ok, error)
    notes: dict[int, list[str]] = field(default_factory=dict)
    stopped: str = ""  # why the run ended early ("" when it reached the end)
    at: int | None = None  # the cell running when it stopped
    restart: bool = False  # the runner asked for a fresh interpreter after cell ``at``
    checks_run: int = 0
    flags: list[str] = field(default_factory=list)


def _sanitize(text: str, limit: int = 300) -> str:
    text = "".join(ch if ch.isprintable() else " " for ch in str(text))
    text = re.sub(r"\s+", " ", text).strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _tail(path: Path, n: int = 600) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - n))
            return _sanitize(f.read().decode("utf-8", "replace"), n)
    except OSError:
        return ""


def _kill(proc: subprocess.Popen) -> None:
    """SIGKILL a run and everything it started.

    Under bubblewrap the runner lives in its own pid namespace, whose first process is
    bubblewrap's child: killing it makes the kernel kill every process in the namespace, and
    bubblewrap exits only once they are all gone (so the slot's uid has no processes left for the
    next run). Without bubblewrap, the process group is killed; a process that left it survives.
    """
    for child in _children_of(proc.pid):
        try:
            os.kill(child, signal.SIGKILL)
        except OSError:
            pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        pass
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pass


def _children_of(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except (OSError, ValueError):
        return []


def _attempt(
    box: Sandbox,
    plan: Plan,
    run_checks: set[int],
    limits: Limits,
    uid: int | None,
    workdir: Path,
    n: int,
    deadline: float,
) -> Attempt:
    """One run of the runner over ``plan``, with only the checks in ``run_checks``."""
    token = secrets.token_hex(16)
    cells = [dict(c, run=(c["kind"] != "check" or c["i"] in run_checks)) for c in plan.cells]
    expected = [c["i"] for c in cells if c["run"]]
    kinds = {c["i"]: c["kind"] for c in cells}
    scratch = workdir / f"scratch-{n}"
    scratch.mkdir(mode=0o700)
    (scratch / "tmp").mkdir(mode=0o700)
    if box.setpriv and uid is not None:
        for p in (scratch, scratch / "tmp"):
            os.chown(p, uid, uid)
    log_path = workdir / f"log-{n}.txt"
    att = Attempt()
    argv = [
        sys.executable, "-I", "-B", "-m", "tinyqwen.grading", "_run",
        f"--memory-bytes={int(limits.memory_gb * 2**30)}",
        f"--processes={limits.processes}",
        f"--file-bytes={limits.file_mb * 2**20}",
        f"--cpu-seconds={int(limits.submission_timeout) + 60}",
    ]  # fmt: skip
    cmd, cwd = box.command(scratch, uid, argv)
    with open(log_path, "wb") as log:
        try:
            proc = subprocess.Popen(
                cmd, cwd=cwd, env=_sandbox_env(box, scratch), stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=log, start_new_session=True,
            )  # fmt: skip
        except OSError as exc:
            att.stopped = f"the sandbox could not start: {exc}"
            return att
    lines: queue.Queue = queue.Queue()

    def read() -> None:
        try:
            while True:
                line = proc.stdout.readline(MAX_PROTOCOL_LINE)
                lines.put(line)
                if not line:
                    return
        except (OSError, ValueError):
            lines.put(b"")

    def feed() -> None:  # in a thread: a runner that never reads must not block the grader
        try:
            proc.stdin.write(json.dumps({"token": token, "cells": cells}).encode())
            proc.stdin.close()
        except (OSError, ValueError):
            pass

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    threading.Thread(target=feed, daemon=True).start()
    try:
        _follow(att, lines, token, expected, kinds, limits, deadline)
    finally:
        _kill(proc)
        reader.join(timeout=5)
        proc.stdout.close()
        if att.stopped and "died" in att.stopped:
            tail = _tail(log_path)
            if tail:
                att.stopped += f" (last output: …{tail[-200:]})"
        log_path.unlink(missing_ok=True)
        shutil.rmtree(scratch, ignore_errors=True)
    return att


def _follow(
    att: Attempt,
    lines: queue.Queue,
    token: str,
    expected: list[int],
    kinds: dict,
    limits: Limits,
    deadline: float,
) -> None:
    """Read the runner's protocol: 'ready', then 'start'/'end' for each expected cell in order,
    then 'done'. Anything else (a wrong token, a line out of order) is tampering. Every event
    must come within the per-cell time limit of the previous one."""
    position = 0  # index into expected of the next cell
    current: int | None = None  # the cell that started and has not ended
    ready = False
    count = 0

    def stop(why: str) -> None:
        att.stopped = why
        att.at = (
            current
            if current is not None
            else (expected[position] if position < len(expected) else None)
        )

    quiet_until = time.monotonic() + limits.timeout
    while True:
        now = time.monotonic()
        try:
            raw = lines.get(timeout=max(0.0, min(deadline, quiet_until) - now))
        except queue.Empty:
            if time.monotonic() >= deadline:
                return stop(
                    f"the submission exceeded its time limit of {limits.submission_timeout:g} s"
                )
            return stop(f"exceeded the time limit of {limits.timeout:g} s")
        if not raw:
            return stop("the process died")
        quiet_until = time.monotonic() + limits.timeout
        count += 1
        try:
            msg = json.loads(raw)
            if (
                not isinstance(msg, dict)
                or msg.get("tok") != token
                or count > 2 * len(expected) + 2
            ):
                raise ValueError
        except ValueError:
            att.flags.append("runtime: a forged or garbled line on the grader's result channel")
            return stop("wrote to the grader's result channel (tampering)")
        ev, i = msg.get("ev"), msg.get("i")
        if ev == "ready" and not ready:
            ready = True
        elif (
            ev == "start"
            and ready
            and current is None
            and position < len(expected)
            and i == expected[position]
        ):
            current = i
        elif ev == "end" and current is not None and i == current:
            att.results[i] = (msg.get("ok") is True, _sanitize(msg.get("error", "")))
            if isinstance(msg.get("notes"), list):
                att.notes[i] = [_sanitize(x) for x in msg["notes"]][:20]
            att.checks_run += kinds[i] == "check"
            if msg.get("restart"):
                att.restart = True
                return stop("restart")
            current, position = None, position + 1
        elif ev == "done" and ready and current is None and position == len(expected):
            return
        else:
            att.flags.append("runtime: a line out of order on the grader's result channel")
            return stop("wrote to the grader's result channel out of order (tampering)")


def grade_submission(
    sub: Submission,
    assignment: Assignment,
    box: Sandbox,
    limits: Limits,
    uid: int | None,
    workdir: Path,
) -> dict:
    """Grade one matched submission: run the plan; after a check that hung, crashed or tampered
    (it scores 0), run again for the checks not yet graded."""
    plan = grading_plan(assignment, sub)
    check_ids = {e.cell: e.check_id for e in plan.exercises}
    pending = sorted(check_ids)
    outcome: dict[int, tuple[bool, str]] = {}
    notes = {k: list(v) for k, v in plan.notes.items()}
    flag_list = list(plan.flags)
    problems: list[str] = []
    restarts, n = 0, 0
    start = time.monotonic()
    deadline = start + limits.submission_timeout
    while pending:
        n += 1
        att = _attempt(box, plan, set(pending), limits, uid, workdir, n, deadline)
        flag_list += att.flags
        for i, (ok, err) in att.results.items():
            if i in check_ids:
                outcome[i] = (ok, err)
                if i in pending:
                    pending.remove(i)
            elif not ok and _plan_kind(plan, i) == "instructor":
                problems.append(f"instructor cell {i} failed: {err}")
        for i, extra in att.notes.items():
            notes.setdefault(_exercise_of(i, plan), []).extend(extra)
        if not att.stopped or not pending:
            break
        if att.restart:
            ok, err = outcome[att.at]
            outcome[att.at] = (
                False,
                f"{err} (the notebook was restarted for the remaining checks)",
            )
            flag_list.append(f"runtime: {check_ids[att.at]}: {err}")
        elif time.monotonic() >= deadline:
            for i in pending:
                outcome[i] = (False, f"not graded: {att.stopped}")
            pending = []
            break
        elif att.checks_run == 0 and att.at not in check_ids:
            # No learner code ran in this run: the instructor's cells or the environment failed.
            where = f"cell {att.at}" if att.at is not None else "the runner"
            problems.append(f"{where}: {att.stopped}")
            break
        else:
            offender = (
                att.at
                if att.at in check_ids
                else next((c for c in pending if att.at is None or c > att.at), None)
            )
            if offender is None:
                break
            outcome[offender] = (
                False,
                f"{att.stopped} (the notebook was restarted for the remaining checks)",
            )
            flag_list.append(f"runtime: {check_ids[offender]}: {att.stopped}")
            if offender in pending:
                pending.remove(offender)
        restarts += 1
    for i in pending:
        outcome.setdefault(
            i, (False, "not graded: " + (problems[-1] if problems else "the runner stopped"))
        )
    exercises = []
    for ex in plan.exercises:
        ok, err = outcome.get(ex.cell, (False, "not graded"))
        exercises.append(
            {
                "grade_id": ex.check_id,
                "solution_id": ex.solution_id,
                "points": ex.points if ok else 0,
                "max_points": ex.points,
                "error": err,
                "notes": list(dict.fromkeys(notes.get(ex.cell, []))),  # once, not once per run
            }
        )
    problems = list(dict.fromkeys(problems))
    return {
        "status": "error" if problems else "graded",
        "error": "; ".join(problems),
        "points": sum(e["points"] for e in exercises),
        "max_points": assignment.max_points,
        "seconds": round(time.monotonic() - start, 1),
        "restarts": restarts,
        "flags": list(dict.fromkeys(flag_list)),
        "notes": plan.submission_notes,
        "exercises": exercises,
    }


def _plan_kind(plan: Plan, i: int) -> str:
    return next((c["kind"] for c in plan.cells if c["i"] == i), "")


def _exercise_of(cell: int, plan: Plan) -> int:
    """The graded cell an index belongs to: itself, or the next check after a solution cell."""
    for ex in plan.exercises:
        if ex.cell >= cell:
            return ex.cell
    return plan.exercises[-1].cell if plan.exercises else cell


# ============================================================================================
# A batch
# ============================================================================================


def grade_all(
    paths: list[Path],
    source: Path,
    *,
    jobs: int = 1,
    limits: Limits | None = None,
    bwrap: str | None = None,
    sandbox: Sandbox | None = None,
    done: list | None = None,
) -> tuple[list[dict], Sandbox]:
    """Grade every submission in ``paths`` (files or directories) against the instructor
    notebooks in ``source``; one result per submission, in order, whatever happens to the
    others. ``done`` (a list) receives each result as soon as it is known, so a caller that is
    interrupted can still report what was graded."""
    limits = limits or Limits()
    assignments = load_assignments(source)
    subs = read_submissions(submission_paths(paths))
    box = sandbox or detect_sandbox(bwrap)
    _refuse_visible(box, source, [s.path for s in subs])
    results: list[dict | None] = [None] * len(subs)
    slots: queue.Queue = queue.Queue()
    for k in range(max(1, jobs)):
        slots.put(k)
    workroot = Path(tempfile.mkdtemp(prefix="tinyqwen-grading-"))
    os.chmod(workroot, 0o711)

    def one(index: int) -> None:
        sub = subs[index]
        base = {
            "submission": str(sub.path),
            "notebook": sub.path.name,
            "assignment": None,
            "sandbox": box.description,
            "points": 0,
            "max_points": 0,
            "seconds": 0.0,
            "restarts": 0,
            "flags": [],
            "notes": [],
            "exercises": [],
        }
        try:
            if sub.error:
                results[index] = {**base, "status": "unreadable", "error": sub.error}
                return
            assignment, why = match_assignment(sub, assignments)
            if assignment is None:
                results[index] = {**base, "status": "unmatched", "error": why}
                return
            base["assignment"] = assignment.name
            base["max_points"] = assignment.max_points
            slot = slots.get()
            try:
                workdir = workroot / f"submission-{index}"
                workdir.mkdir(mode=0o711)
                uid = NOBODY - slot if box.setpriv else None
                results[index] = {
                    **base,
                    **grade_submission(sub, assignment, box, limits, uid, workdir),
                }
            finally:
                slots.put(slot)
        except Exception as exc:  # noqa: BLE001 - a grader bug for one submission stops nothing
            results[index] = {
                **base,
                "status": "error",
                "error": f"grader error: {type(exc).__name__}: {exc}",
            }
        finally:
            if done is not None and results[index] is not None:
                done.append(results[index])

    try:
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            list(pool.map(one, range(len(subs))))
    finally:
        shutil.rmtree(workroot, ignore_errors=True)
    return [r for r in results if r is not None], box


def _refuse_visible(box: Sandbox, source: Path, subs: list[Path]) -> None:
    """The sandbox must not show the instructor notebooks or any submission."""
    for ro in box.readonly:
        for p in [source.resolve(), *[s.resolve() for s in subs]]:
            if str(p) == ro or str(p).startswith(ro.rstrip("/") + "/"):
                raise ValueError(
                    f"{p} lies inside {ro}, which the sandbox shows read-only to every "
                    "submission; move the instructor notebooks and submissions elsewhere"
                )


def grade(path: Path, source_dir: Path, *, timeout: float = 120, **options) -> dict:
    """Grade one submission file (see :func:`grade_all`)."""
    results, _ = grade_all([path], source_dir, limits=Limits(timeout=timeout), **options)
    return results[0]


# ============================================================================================
# Reports
# ============================================================================================


def report_table(results: list[dict], box: Sandbox) -> str:
    head = (
        f"Sandbox: {box.description}" if box.isolated else f"!!! NO SANDBOX: {box.description} !!!"
    )
    lines = [head, ""]
    for res in results:
        total = f"{res['points']:g}/{res['max_points']:g}"
        what = res["assignment"] or "-"
        lines.append(f"{_sanitize(res['submission'], 500)}  [{res['status']}, {what}]  {total}")
        if res.get("error"):
            lines.append(f"    {_sanitize(res['error'])}")
        for ex in res["exercises"]:
            lines.append(
                f"    {ex['grade_id']:<32} {ex['points']:>3g}/{ex['max_points']:<3g} {_sanitize(ex['error'], 160)}"
            )
            lines += [f"        · {_sanitize(note, 160)}" for note in ex.get("notes", [])]
        lines += [f"    · {_sanitize(note, 160)}" for note in res.get("notes", [])]
        if res["flags"]:
            lines.append(f"    flags: {_sanitize('; '.join(res['flags']), 400)}")
    return "\n".join(lines)


CSV_COLUMNS = [
    "submission",
    "assignment",
    "status",
    "sandbox",
    "grade_id",
    "points",
    "max_points",
    "error",
    "flags",
]


def _csv_cell(value) -> str | float:
    if isinstance(value, (int, float)):
        return value
    text = _sanitize(value or "", 1000)
    return "'" + text if text[:1] in ("=", "+", "-", "@") else text  # no formulas in spreadsheets


def report_csv(results: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(CSV_COLUMNS)
    for res in results:
        common = [res["submission"], res["assignment"] or "", res["status"], res["sandbox"]]
        flag_text = "; ".join(res["flags"])
        rows = res["exercises"] or [
            {"grade_id": "", "points": 0, "max_points": 0, "error": res.get("error", "")}
        ]
        for ex in rows:
            error = ex["error"] or (res.get("error", "") if res["status"] != "graded" else "")
            w.writerow(
                [
                    _csv_cell(v)
                    for v in [
                        *common,
                        ex["grade_id"],
                        ex["points"],
                        ex["max_points"],
                        error,
                        flag_text,
                    ]
                ]
            )
    return buf.getvalue()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tinyqwen.course grade",
        description="Grade untrusted submissions against the instructor notebooks, each in a sandbox.",
    )
    parser.add_argument(
        "submissions", nargs="+", type=Path, help="notebooks or directories of them"
    )
    parser.add_argument(
        "--source",
        type=Path,
        default=Path("notebooks"),
        help="instructor notebooks (default: notebooks/)",
    )
    parser.add_argument("--csv", type=Path, help="write points per exercise as CSV")
    parser.add_argument("--json", type=Path, help="write the full report as JSON")
    parser.add_argument("--jobs", type=int, default=1, help="submissions graded in parallel")
    parser.add_argument("--timeout", type=float, default=120, help="seconds per cell (default 120)")
    parser.add_argument(
        "--submission-timeout",
        type=float,
        default=1800,
        help="seconds per submission, restarts included",
    )
    parser.add_argument(
        "--memory-gb", type=float, default=4, help="address space per submission (default 4)"
    )
    parser.add_argument(
        "--bwrap", help="the bubblewrap executable (default: $TINYQWEN_BWRAP or bwrap)"
    )
    args = parser.parse_args(argv)
    limits = Limits(
        timeout=args.timeout, submission_timeout=args.submission_timeout, memory_gb=args.memory_gb
    )
    results: list[dict] = []
    finished: list[dict] = []  # what is known if grading is interrupted
    box = Sandbox("none", "none: not started")
    try:
        box = detect_sandbox(args.bwrap)
        if not box.isolated:
            print(
                "\n" + "!" * 78 + f"\n!!! GRADING WITHOUT A SANDBOX: {box.description}\n"
                "!!! Submissions can read and write whatever this user can. Install bubblewrap.\n"
                + "!" * 78
                + "\n",
                file=sys.stderr,
            )
        results, box = grade_all(
            args.submissions, args.source, jobs=args.jobs, limits=limits, sandbox=box, done=finished
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        results = results or finished
        if results or not args.submissions:
            print(report_table(results, box))
        if args.csv:
            args.csv.write_text(report_csv(results))
        if args.json:
            args.json.write_text(json.dumps(results, indent=1))
    return 0 if all(r["status"] == "graded" for r in results) else 1


# ============================================================================================
# The runner: executes one grading plan inside the sandbox
# ============================================================================================
#
# It reads the plan from stdin, writes one JSON line per event on its original stdout (with a
# token only the grader and this process know) and sends everything else the notebook prints to
# stderr. Solution cells are defined in a namespace of their own; each check runs in a copy of
# the notebook's namespace, so its variables (the expected values) are in no module. An audit
# hook refuses frame, gc, code-object, ctypes, process and socket access while code that is not
# the instructor's or an installed library's is on the stack. After each check the interpreter is
# compared with its state before; any difference asks the grader for a fresh run.

# Modules and classes whose state the runner compares around every check.
WATCHED_MODULES = (
    "builtins", "sys", "math", "functools", "dataclasses", "typing", "types", "abc", "inspect",
    "copy", "operator", "collections", "warnings", "json", "numpy", "numpy.testing", "torch",
    "torch.nn", "torch.nn.functional", "torch.testing", "torch.linalg", "torch.autograd",
    "torch.autograd.grad_mode", "torch.autograd.function", "torch.nn.modules.module",
)  # fmt: skip
VOLATILE = {
    ("sys", "last_type"),
    ("sys", "last_value"),
    ("sys", "last_traceback"),
    ("sys", "last_exc"),
}
# Audit events refused while untrusted code is on the stack (or in any thread but the main one).
GUARDED_EVENTS = frozenset(
    {
        "sys._getframe", "sys._current_frames", "sys._current_exceptions", "sys.settrace",
        "sys.setprofile", "sys.addaudithook", "sys.unraisablehook", "sys.excepthook",
        "gc.get_referrers", "gc.get_referents", "gc.get_objects", "gc.freeze",
        "code.__new__", "function.__new__", "compile", "exec", "marshal.loads", "marshal.load",
        "object.__setattr__", "object.__delattr__", "open", "mmap.__new__",
        "os.system", "os.fork", "os.forkpty", "os.kill", "os.killpg", "signal.pthread_kill",
        "_thread.start_new_thread", "import",
    }
)  # fmt: skip
GUARDED_PREFIXES = (
    "ctypes.",
    "socket.",
    "os.exec",
    "os.spawn",
    "os.posix_spawn",
    "subprocess.",
    "resource.",
    "pty.",
    "cpython.",
)
FRAME_ATTRIBUTES = frozenset({"tb_frame", "gi_frame", "cr_frame", "ag_frame"})
# CPython's test modules (arbitrary memory access) and subinterpreters: never for an exercise.
DENIED_IMPORTS = ("_test", "_xxtestfuzz", "_xxsubinterpreters", "_ctypes_test")
IMPORTLIB_FRAMES = ("<frozen importlib._bootstrap>", "<frozen importlib._bootstrap_external>")
LEARNER_FILE = "<solution "  # the file name of code compiled from a solution cell


def _runner(argv: list[str]) -> int:  # noqa: C901 - one sequential procedure, read top to bottom
    import builtins
    import resource
    import types

    opts = dict(a.lstrip("-").split("=", 1) for a in argv)
    plan = json.loads(sys.stdin.buffer.read())
    os.close(0)
    token, cells = plan["token"], plan["cells"]
    for res, key in (
        (resource.RLIMIT_AS, "memory-bytes"),
        (resource.RLIMIT_NPROC, "processes"),
        (resource.RLIMIT_FSIZE, "file-bytes"),
        (resource.RLIMIT_CPU, "cpu-seconds"),
        (resource.RLIMIT_CORE, None),
    ):
        value = int(opts[key]) if key else 0
        hard = resource.getrlimit(res)[1]
        value = value if hard == resource.RLIM_INFINITY else min(value, hard)
        resource.setrlimit(res, (value, value))
    protocol = os.dup(1)  # the result channel; fd 1 and sys.stdout now go to the log
    os.dup2(2, 1)

    def emit(**event) -> None:
        sys.stdout.flush()
        data = (json.dumps({"tok": token, **event}) + "\n").encode()
        while data:
            data = data[os.write(protocol, data) :]

    import dataclasses
    import functools

    import torch

    from tinyqwen import checks

    try:  # notebook code tells Jupyter apart by it ("ipykernel" in sys.modules); no kernel starts
        import ipykernel  # noqa: F401
    except ImportError:
        pass

    # Imports the definitions carry, resolved now: before any learner code has run.
    resolved: dict[tuple, object] = {}
    import importlib

    for c in cells:
        for _, module, how in c.get("imports", []):
            key = (module, how)
            if key in resolved:
                continue
            try:
                mod = importlib.import_module(module)
                if how == "top":
                    value = importlib.import_module(module.split(".")[0])
                elif how.startswith("attr:"):
                    name = how[5:]
                    try:
                        value = getattr(mod, name)
                    except AttributeError:
                        value = importlib.import_module(f"{module}.{name}")
                else:
                    value = mod
                resolved[key] = value
            except BaseException as exc:  # noqa: BLE001 - reported as a note
                resolved[key] = ImportError(f"{type(exc).__name__}: {exc}")

    # What definition-time expressions may use: copies taken before any learner code ran.
    trusted_decorators = {
        "staticmethod": builtins.staticmethod,
        "classmethod": builtins.classmethod,
        "property": builtins.property,
    }
    no_grad, inference_mode = torch.no_grad, torch.inference_mode
    lru_wrapper, cache_info = functools._lru_cache_wrapper, functools._CacheInfo
    make_dataclass = dataclasses.dataclass
    function_type, module_type = types.FunctionType, types.ModuleType
    function_meta = type(torch.autograd.Function)
    tampering_error = checks.TamperingError
    base_exception_args = BaseException.__dict__["args"]

    def with_mode(mode):
        def apply(fn):
            if type(fn) is not function_type:
                raise TypeError("torch.no_grad / inference_mode decorate functions only")

            def wrapper(*args, **kwargs):
                with mode():
                    return fn(*args, **kwargs)

            for attr in ("__module__", "__name__", "__qualname__", "__doc__"):
                setattr(wrapper, attr, getattr(fn, attr))
            wrapper.__wrapped__ = fn
            return wrapper

        return apply

    def lru(maxsize=128, typed=False):
        def apply(fn):
            if type(fn) is not function_type:
                raise TypeError("functools.cache decorates functions only")
            size = maxsize if maxsize is None else max(0, int(maxsize))
            wrapper = lru_wrapper(fn, size, bool(typed), cache_info)
            for attr in ("__module__", "__name__", "__qualname__", "__doc__"):
                setattr(wrapper, attr, getattr(fn, attr))
            wrapper.__wrapped__ = fn
            return wrapper

        return apply

    def decorator(name, **options):
        if name in trusted_decorators:
            return trusted_decorators[name]
        if name == "no_grad":
            return with_mode(no_grad)
        if name == "inference_mode":
            return with_mode(inference_mode)
        if name == "cache":
            return lru(None)
        if name == "lru_cache":
            return lru(**options)
        if name == "dataclass":
            return lambda cls: make_dataclass(cls, **options)
        raise TypeError(f"decorator {name} is not allowed")

    learner_ns: dict = {}
    learner_bindings: dict = {}

    def base(dotted):
        head, *rest = dotted.split(".")
        missing = object()
        obj = learner_ns.get(head, missing)
        if obj is missing:
            obj = vars(builtins).get(head, missing)
        for part in rest:
            if type(obj) is not module_type:
                raise TypeError(f"base class {dotted}: only module attributes can be followed")
            obj = vars(obj).get(part, missing)
        meta = type(obj)
        if meta is not type and meta is not function_meta:
            raise TypeError(
                f"base class {dotted} is not allowed (a class with a custom metaclass, or not a class)"
            )
        return obj

    helpers = {
        _HELPER.format("decorator"): decorator,
        _HELPER.format("base"): base,
    }

    # The notebook's namespace is a fresh __main__; checks run in copies of it.
    main_module = types.ModuleType("__main__")
    notebook = vars(main_module)
    notebook["__builtins__"] = builtins
    runner_module = sys.modules["__main__"]  # noqa: F841 - keeps this module's globals alive
    sys.modules["__main__"] = main_module

    trusted_names = {f"<instructor cell {c['i']}>" for c in cells} | {
        f"<check cell {c['i']}>" for c in cells
    }
    prefixes = set()
    import tinyqwen

    for p in (
        sys.prefix,
        sys.base_prefix,
        sys.exec_prefix,
        sys.base_exec_prefix,
        os.path.dirname(tinyqwen.__file__),
    ):
        prefixes |= {p.rstrip("/") + "/", os.path.realpath(p).rstrip("/") + "/"}
    prefixes = tuple(sorted(prefixes))
    violations: list[str] = []
    _install_guard(trusted_names, prefixes, violations)

    def describe(exc: BaseException) -> str:
        """'Name: message' without running any of the exception's code: its class's real name
        and the arguments that are plain strings and numbers."""
        name = type.__dict__["__name__"].__get__(type(exc))
        args = base_exception_args.__get__(exc)
        if not all(type(a) in (str, int, float, bool) for a in args):
            return name
        if (
            len(args) == 2
            and type(args[0]) is int
            and OSError in type.__dict__["__mro__"].__get__(type(exc))
        ):
            return f"{name}: [Errno {args[0]}] {args[1]}"
        text = "; ".join(a if type(a) is str else repr(a) for a in args)
        return f"{name}: {text}"[:500] if text else name

    future = [0]  # an earlier cell's `from __future__ import ...` applies to later ones (IPython)

    def run(source: str, namespace: dict, filename: str) -> tuple[bool, str, type | None]:
        try:
            code = compile(source, filename, "exec", flags=future[0], dont_inherit=True)
            future[0] |= code.co_flags & _future_flags()
            exec(code, namespace)
        except BaseException as exc:  # noqa: BLE001 - every failure is a cell's result
            return False, describe(exc), type(exc)
        return True, "", None

    def sync_learner_namespace() -> None:
        """The learner's namespace as it should be: the notebook, the learner's own bindings,
        the helpers; whatever the learner's code wrote into it since is gone."""
        want = {k: v for k, v in notebook.items() if not _is_dunder(k)}
        want.update(learner_bindings)
        want.update(helpers)
        want.update(__builtins__=builtins, __name__="__main__")
        for k in list(learner_ns):
            if k not in want:
                del learner_ns[k]
        learner_ns.update(want)

    def define(c: dict) -> tuple[bool, str, list[str]]:
        notes = []
        sync_learner_namespace()
        for bind, module, how in c["imports"]:
            value = resolved[(module, how)]
            if isinstance(value, ImportError):
                notes.append(f"import {module} ({bind}) failed: {value}")
            else:
                learner_ns[bind] = learner_bindings[bind] = value
        ok, err, _ = True, "", None
        try:
            code = compile(
                c["source"],
                f"{LEARNER_FILE}{c['grade_id']}>",
                "exec",
                flags=_annotations_flag(),
                dont_inherit=True,
            )
            exec(code, learner_ns)
        except BaseException as exc:  # noqa: BLE001
            ok, err = False, describe(exc)
            notes.append(f"defining the solution failed: {err}")
        for name in c["binds"]:
            if name in learner_ns:
                learner_bindings[name] = learner_ns[name]
        for name in c["exports"]:
            notebook.pop(name, None)
            if name in learner_bindings:
                notebook[name] = learner_bindings[name]
        return ok, err, notes

    baseline = _interpreter_state(notebook)
    emit(ev="ready")
    for c in cells:
        if not c["run"]:
            continue
        i = c["i"]
        emit(ev="start", i=i)
        if c["kind"] == "instructor":
            ok, err, _ = run(c["source"], notebook, f"<instructor cell {i}>")
            baseline = _interpreter_state(notebook)
            emit(ev="end", i=i, ok=ok, error=err)
        elif c["kind"] == "solution":
            ok, err, notes = define(c)
            baseline = _interpreter_state(notebook)
            emit(ev="end", i=i, ok=ok, error=err, notes=notes)
        else:
            scope = dict(notebook)
            violations.clear()
            ok, err, kind = run(c["source"], scope, f"<check cell {i}>")
            scope.clear()
            del scope
            reasons = []
            if violations:
                reasons.append(
                    "the exercise's code used "
                    + ", ".join(sorted(set(violations))[:5])
                    + ", which grading refuses"
                )
            if kind is tampering_error:
                reasons.append(err)
            changes = _state_changes(baseline, _interpreter_state(notebook))
            if changes:
                reasons.append(
                    "the interpreter changed during the check: " + "; ".join(changes[:5])
                )
            if reasons:
                emit(
                    ev="end",
                    i=i,
                    ok=False,
                    error=" / ".join(reasons)[:600],
                    restart=True,
                    flags=reasons,
                )
                os._exit(3)
            emit(ev="end", i=i, ok=ok, error=err)
    emit(ev="done")
    sys.stdout.flush()
    os._exit(0)


def _install_guard(
    trusted_names: set[str], prefixes: tuple[str, ...], violations: list[str]
) -> None:
    """An audit hook (PEP 578) that refuses introspection and escape APIs while the learner's code
    is on the stack, or in any thread but the main one.

    A frame is the learner's when its code came from a solution cell (``<solution …>``), from a
    file outside the read-only Python prefixes and the tinyqwen package, or was compiled while
    the learner's code was on the stack. Audit hooks are no sandbox (CPython's documentation says
    so): this is a tripwire inside the sandbox that turns the usual ways of reading a check's
    memory into a failed check and a review flag.
    """
    import _thread

    get_ident, main_ident, getframe = _thread.get_ident, _thread.get_ident(), sys._getframe
    busy: set[int] = set()
    cache: dict[str, bool] = {}

    def trusted(filename) -> bool:
        ok = cache.get(filename)
        if ok is None:
            if not isinstance(filename, str):
                ok = False
            elif filename.startswith("<"):
                ok = not filename.startswith(LEARNER_FILE)
            else:
                ok = filename.startswith(prefixes)
            cache[filename] = ok
        return ok

    def taint(filename: str) -> None:
        cache[filename] = False

    def learner_frame(frame) -> str:
        """Where the learner's code is on the stack ('' when it is not)."""
        if get_ident() != main_ident:
            return "a thread"
        while frame is not None:
            if not trusted(frame.f_code.co_filename):
                return str(frame.f_code.co_filename)
            frame = frame.f_back
        return ""

    def refuse(event: str, args) -> str:
        """Where the learner's code that caused ``event`` is, if the event must be refused."""
        if event == "sys.addaudithook":
            return "anywhere"
        if event == "object.__getattr__" and (len(args) < 2 or args[1] not in FRAME_ATTRIBUTES):
            return ""
        if event == "import" and not (
            args and isinstance(args[0], str) and args[0].startswith(DENIED_IMPORTS)
        ):
            return ""
        caller = getframe(2)
        culprit = learner_frame(caller)
        if not culprit:
            return ""
        if event in ("compile", "exec", "marshal.loads", "marshal.load"):
            where = caller.f_code.co_filename if caller is not None else ""
            if where in IMPORTLIB_FRAMES:
                return ""  # importing a module from a file
            if not trusted(where):
                return culprit  # the learner's code compiles or runs code itself
            if event == "compile":
                # A library compiling text for the learner (a dataclass's __init__): allowed, and
                # that code counts as the learner's. Never under a name the runner trusts.
                name = args[1] if len(args) > 1 else ""
                name = os.fsdecode(name) if isinstance(name, (bytes, str)) else ""
                if not name.startswith("<") or name in trusted_names or name.startswith("<frozen "):
                    return culprit
                taint(name)
                return ""
            return culprit if event.startswith("marshal") else ""
        if event == "open":
            path = args[0] if args else None
            if isinstance(path, int):
                return culprit  # an open file descriptor, e.g. the result channel
            path = os.fsdecode(path) if isinstance(path, (str, bytes)) else ""
            return (
                culprit if os.path.normpath(path).startswith(("/proc", "/dev/fd", "/sys")) else ""
            )
        return culprit

    def hook(event: str, args) -> None:
        if (
            event not in GUARDED_EVENTS
            and not event.startswith(GUARDED_PREFIXES)
            and event != "object.__getattr__"
        ):
            return
        ident = get_ident()
        if ident in busy:
            return
        busy.add(ident)
        try:
            culprit = refuse(event, args)
        finally:
            busy.discard(ident)
        if culprit:
            what = {
                "object.__getattr__": lambda: f"frame access ({args[1]})",
                "import": lambda: f"import {args[0]}",
                # never repr() an object the learner made: only plain paths are shown
                "open": lambda: (
                    f"open({args[0]!r})"[:80] if type(args[0]) in (str, bytes, int) else "open"
                ),
            }.get(event, lambda: event)()
            violations.append(what)
            raise PermissionError(
                f"grading does not allow {what} in an exercise's code (from {culprit})"
            )

    sys.addaudithook(hook)


def _interpreter_state(notebook: dict) -> dict:
    """What the checks rely on: watched modules' and classes' contents, the notebook's names,
    and global switches (sys hooks, torch modes, threads, signal handlers, environment)."""
    import atexit
    import gc

    import torch

    spaces = {"__main__": dict(notebook)}
    for name in list(WATCHED_MODULES) + [m for m in list(sys.modules) if m.startswith("tinyqwen")]:
        mod = sys.modules.get(name)
        if mod is not None:
            spaces[name] = dict(vars(mod))
            spaces[name]["<type>"] = type(mod)
    classes = [
        torch.Tensor,
        torch.nn.Module,
        torch.nn.Parameter,
        torch.autograd.Function,
        torch.no_grad,
        torch.inference_mode,
    ]
    for name, mod in list(sys.modules.items()):
        if name.startswith("tinyqwen"):
            classes += [
                v for v in vars(mod).values() if isinstance(v, type) and v.__module__ == name
            ]
    for cls in classes:
        spaces[f"{cls.__module__}.{cls.__qualname__}"] = dict(vars(cls))
    hooks = torch.nn.modules.module
    scalars = {
        # identities only: comparing the objects themselves could run their __eq__
        "sys.path": [id(p) for p in sys.path],
        "sys.meta_path": [id(f) for f in sys.meta_path],
        "sys.path_hooks": [id(h) for h in sys.path_hooks],
        "sys.modules": {k: id(v) for k, v in sys.modules.items()},
        "trace/profile function": (id(sys.gettrace()), id(sys.getprofile())),
        "threads": sorted(t.ident or 0 for t in threading.enumerate()),
        "torch function modes": torch._C._len_torch_function_stack(),
        "torch dispatch modes": torch._C._len_torch_dispatch_stack(),
        "torch default dtype": str(torch.get_default_dtype()),
        "torch grad mode": (torch.is_grad_enabled(), torch.is_inference_mode_enabled()),
        "torch threads": torch.get_num_threads(),
        "nn.Module global hooks": [
            len(v)
            for k, v in sorted(vars(hooks).items())
            if k.startswith("_global") and isinstance(v, dict)
        ],
        "gc callbacks": [id(c) for c in gc.callbacks],
        "atexit callbacks": atexit._ncallbacks(),
        "signal handlers": [
            id(signal.getsignal(s))
            for s in (
                signal.SIGALRM,
                signal.SIGVTALRM,
                signal.SIGPROF,
                signal.SIGINT,
                signal.SIGTERM,
                signal.SIGUSR1,
                signal.SIGUSR2,
            )
        ],
        "environment": dict(os.environ),
        "working directory": os.getcwd(),
    }
    return {"spaces": spaces, "scalars": scalars}


def _state_changes(before: dict, after: dict) -> list[str]:
    out = []
    for where, old in before["spaces"].items():
        new = after["spaces"].get(where, {})
        for key, value in old.items():
            if (where, key) in VOLATILE:
                continue
            if key not in new:
                out.append(f"removed {where}.{key}")
            elif new[key] is not value:
                out.append(f"changed {where}.{key}")
    for what, old in before["scalars"].items():
        new = after["scalars"][what]
        if what == "sys.modules":
            if any(new.get(k) != v for k, v in old.items()):
                out.append("replaced or removed a module in sys.modules")
        elif new != old:
            out.append(f"changed the {what}")
    return out


if __name__ == "__main__":
    if sys.argv[1:2] == ["_run"]:
        sys.exit(_runner(sys.argv[2:]))
    sys.exit(main())
