"""Hostile submissions of the template assignment (notebooks/_template.ipynb), for the grader's
tests. Each entry says what the submission does and how many points each of the template's three
exercises must earn: only those it really solved."""

from __future__ import annotations

import copy

import nbformat
from nbformat.v4 import new_code_cell

from tinyqwen.course import is_graded, is_solution, nbgrader_meta, student_edition

VAR, MAX, COUNT = "tpl-ex1-var", "tpl-ex2-max", "tpl-ex3-count"
CHECKS = ["tpl-ex1-var-check", "tpl-ex2-max-check", "tpl-ex3-count-check"]

# Correct answers written the way a learner might (not the reference's text).
SOLVED = {
    VAR: "def var_last(x):\n    m = x.mean(-1, keepdim=True)\n    return ((x - m) ** 2).mean(-1)\n",
    MAX: "def max_last(x):\n    return x.sort(-1).values[..., -1]\n",
    COUNT: "def numel_234():\n    return 24\n",
}

# A hook that empties every later cell: with it, unsolved checks would "pass".
TRANSFORMER = "get_ipython().input_transformers_post.append(lambda lines: ['pass\\n'])\n"


def build(instructor, spec: dict):
    """The student edition with ``spec['solutions']`` put into solution cells (by grade id),
    then ``spec['edit'](nb)`` applied."""
    nb = student_edition(instructor)
    for cell in nb.cells:
        gid = nbgrader_meta(cell).get("grade_id")
        if is_solution(cell) and gid in spec.get("solutions", {}):
            cell.source = spec["solutions"][gid]
    if "edit" in spec:
        spec["edit"](nb)
    return nb


def _add_graded_cell(nb):
    cell = new_code_cell("print('100 free points')")
    cell.metadata["nbgrader"] = {
        "grade": True, "grade_id": "tpl-bonus", "locked": True, "points": 100,
        "schema_version": 3, "solution": False, "task": False,
    }  # fmt: skip
    nb.cells.append(cell)


def _checks_to_pass(nb):
    for cell in nb.cells:
        if is_graded(cell):
            cell.source = "pass"


def _delete_first_check(nb):
    nb.cells = [c for c in nb.cells if nbgrader_meta(c).get("grade_id") != CHECKS[0]]


def _foreign_ids(nb):
    for cell in nb.cells:
        meta = nbgrader_meta(cell)
        if meta.get("grade_id"):
            meta["grade_id"] = "hw9-" + meta["grade_id"]


def specs(paths: dict) -> dict:
    """name -> spec; ``paths`` holds 'source', 'repo', 'submissions', 'neighbour' (absolute)."""
    src, repo, subs, neighbour = (paths[k] for k in ("source", "repo", "submissions", "neighbour"))
    return {
        "correct": {"solutions": SOLVED, "points": [1, 1, 1]},
        "partial": {"solutions": {VAR: SOLVED[VAR]}, "points": [1, 0, 0]},
        "input_transformer": {
            # exercise 1 solved; the transformer at the top level is not carried
            "solutions": {VAR: TRANSFORMER + SOLVED[VAR]},
            "points": [1, 0, 0],
        },
        "transformer_in_function": {
            # no shell runs the checks; the function makes one and hooks it
            "solutions": {
                VAR: (
                    "def var_last(x):\n"
                    "    from IPython.core.interactiveshell import InteractiveShell\n"
                    "    shell = InteractiveShell.instance()\n"
                    "    shell.input_transformers_post.append(lambda lines: ['pass\\n'])\n"
                    "    return x[..., 0]\n"
                ),
                COUNT: SOLVED[COUNT],
            },
            "points": [0, 0, 1],
        },
        "extra_graded_cell": {
            "solutions": {COUNT: SOLVED[COUNT]},
            "edit": _add_graded_cell,
            "points": [0, 0, 1],
        },
        "_template (1)": {"edit": _checks_to_pass, "points": [0, 0, 0]},
        "deleted_check": {
            "solutions": {VAR: SOLVED[VAR]},
            "edit": _delete_first_check,
            "points": [1, 0, 0],
        },
        "reads_instructor_notebook": {
            "solutions": {
                VAR: (
                    "import json\n"
                    "def var_last(x):\n"
                    f"    for path in [{str(src / '_template.ipynb')!r}, {str(repo / 'notebooks' / '_template.ipynb')!r}]:\n"
                    "        try:\n"
                    "            cells = json.load(open(path))['cells']\n"
                    "        except OSError:\n"
                    "            continue\n"
                    "        ns = {}\n"
                    "        exec(''.join(cells[15]['source']), ns)\n"
                    "        return ns['var_last'](x)\n"
                    "    raise FileNotFoundError('no instructor notebook in sight')\n"
                ),
            },
            "points": [0, 0, 0],
        },
        "writes_neighbours": {
            "solutions": {
                # at the top level (not carried) and inside the function (no such files there)
                VAR: (
                    f"open({str(neighbour)!r}, 'w').write('{{}}')\n"
                    "def var_last(x):\n"
                    f"    open({str(neighbour)!r}, 'w').write('{{}}')\n"
                    f"    open({str(subs / 'planted.ipynb')!r}, 'w').write('{{}}')\n"
                    "    return x.var(-1, unbiased=False)\n"
                ),
                COUNT: SOLVED[COUNT],
            },
            "points": [0, 0, 1],
        },
        "hangs": {
            "solutions": {
                VAR: "def var_last(x):\n    while True:\n        try:\n            pass\n        except KeyboardInterrupt:\n            pass\n",
                MAX: "def max_last(x):\n    while True:\n        try:\n            pass\n        except BaseException:\n            pass\n",
                COUNT: SOLVED[COUNT],
            },
            "points": [0, 0, 1],
        },
        "fork_bomb": {
            "solutions": {
                VAR: "import os\ndef var_last(x):\n    while True:\n        os.fork()\n",
                MAX: (
                    "import threading, time\n"
                    "def max_last(x):\n"
                    "    while True:\n"
                    "        threading.Thread(target=time.sleep, args=(600,)).start()\n"
                ),
                COUNT: SOLVED[COUNT],
            },
            "points": [0, 0, 1],
        },
        "memory_bomb": {
            "solutions": {
                VAR: "def var_last(x):\n    hog = []\n    while True:\n        hog.append(bytearray(2**28))\n",
                MAX: "import torch\ndef max_last(x):\n    return torch.empty(2**40, dtype=torch.uint8)\n",
                COUNT: SOLVED[COUNT],
            },
            "points": [0, 0, 1],
        },
        "network": {
            "solutions": {
                VAR: (
                    "import socket\n"
                    "def var_last(x):\n"
                    "    socket.create_connection(('1.1.1.1', 80), timeout=3).close()\n"
                    "    return x.var(-1, unbiased=False)\n"
                ),
                # CPython's test module reads and writes raw memory
                MAX: "def max_last(x):\n    import _testcapi\n    return x.amax(-1)\n",
                COUNT: SOLVED[COUNT],
            },
            "points": [0, 0, 1],
        },
        "patches_checker": {
            "solutions": {
                VAR: (
                    "import torch\n"
                    "import tinyqwen.checks\n"
                    "def var_last(x):\n"
                    "    torch.allclose = lambda *a, **k: True\n"
                    "    tinyqwen.checks.assert_close = lambda *a, **k: None\n"
                    "    return x[..., 0]\n"
                ),
                MAX: (
                    "import tinyqwen.checks\n"
                    "def max_last(x):\n"
                    "    tinyqwen.checks.assert_close.__code__ = (lambda *a, **k: None).__code__\n"
                    "    return x[..., 0]\n"
                ),
                COUNT: SOLVED[COUNT],
            },
            "points": [0, 0, 1],
        },
        "leaves_a_thread": {
            "solutions": {
                VAR: (
                    "import threading, time\n"
                    "def var_last(x):\n"
                    "    def later():\n"
                    "        time.sleep(0.5)\n"
                    "        import tinyqwen.checks\n"
                    "        tinyqwen.checks._fail = lambda *a: None\n"
                    "    threading.Thread(target=later, daemon=True).start()\n"
                    "    return x[..., 0]\n"
                ),
                COUNT: SOLVED[COUNT],
            },
            "points": [0, 0, 1],
        },
        "reads_expected": {
            "solutions": {
                # the expected values live in the check's frame and namespace
                VAR: (
                    "import sys\n"
                    "def var_last(x):\n"
                    "    frame = sys._getframe(1)\n"
                    "    while 'expected' not in frame.f_globals:\n"
                    "        frame = frame.f_back\n"
                    "    return frame.f_globals['expected']\n"
                ),
                MAX: (
                    "import gc\n"
                    "def max_last(x):\n"
                    "    for d in gc.get_objects():\n"
                    "        if type(d) is dict and 'expected' in d:\n"
                    "            return d['expected']\n"
                ),
                COUNT: (
                    "import __main__\n"
                    "def numel_234():\n"
                    "    import __main__\n"
                    "    return __main__.expected\n"
                ),
            },
            "points": [0, 0, 0],
        },
        "unmatched": {"solutions": SOLVED, "edit": _foreign_ids, "points": None},
    }


def write_all(instructor, paths: dict) -> dict:
    """Write every hostile submission (and a corrupt file) into paths['submissions'];
    name -> expected points per exercise (None: refused)."""
    expected = {}
    for name, spec in specs(paths).items():
        nbformat.write(
            build(copy.deepcopy(instructor), spec), paths["submissions"] / f"{name}.ipynb"
        )
        expected[name] = spec["points"]
    (paths["submissions"] / "corrupt.ipynb").write_bytes(b'{"cells": [ this is not JSON')
    expected["corrupt"] = None
    return expected
