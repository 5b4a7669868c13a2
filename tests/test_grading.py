"""The grader: every submission is untrusted (book/instructors.md, "Grading").

One batch grades the hostile submissions of tests/hostile/submissions.py together with a correct
neighbour and a partly solved one, two at a time; each must earn exactly what it solved.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hostile.submissions import CHECKS, specs, write_all

from tinyqwen.checks import TamperingError, learner_call
from tinyqwen.grading import (
    Submission,
    carry,
    detect_sandbox,
    load_assignments,
    match_assignment,
)

from conftest import NOTEBOOKS, ROOT, read_nb

TEMPLATE = NOTEBOOKS / "_template.ipynb"
ENV = {
    **os.environ,
    "TINYQWEN_PROFILE": "ci",
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "OMP_WAIT_POLICY": "PASSIVE",
}
SANDBOX = detect_sandbox()
needs_bubblewrap = pytest.mark.skipif(
    not SANDBOX.isolated,
    reason=f"no working bubblewrap here ({SANDBOX.description}); apt-get install bubblewrap "
    "(.ci/run installs it)",
)
NAMES = list(specs({k: Path("/x") for k in ("source", "repo", "submissions", "neighbour")}))


def grade_cli(*args, timeout=900) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tinyqwen.course", "grade", *map(str, args)],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=timeout,
    )


# --------------------------------------------------------------------------------------------
# The hostile batch
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    root = tmp_path_factory.mktemp("grading")
    subs = root / "submissions"
    subs.mkdir()
    paths = {
        "source": NOTEBOOKS,
        "repo": ROOT,
        "submissions": subs,
        "neighbour": subs / "correct.ipynb",
    }
    expected = write_all(read_nb(TEMPLATE), paths)
    files = {p.name: p.read_bytes() for p in subs.iterdir()}
    start = time.monotonic()
    out = grade_cli(
        subs, "--source", NOTEBOOKS, "--jobs", 2, "--timeout", 20, "--memory-gb", 2,
        "--csv", root / "grades.csv", "--json", root / "grades.json",
    )  # fmt: skip
    seconds = time.monotonic() - start
    print(f"\nthe hostile batch took {seconds:.0f} s\n{out.stdout}")
    results = json.loads((root / "grades.json").read_text())
    rows = list(csv.DictReader(io_text(root / "grades.csv")))
    return {
        "out": out,
        "results": {Path(r["submission"]).stem: r for r in results},
        "rows": rows,
        "expected": expected,
        "files": files,
        "subs": subs,
        "seconds": seconds,
    }


def io_text(path: Path):
    import io

    return io.StringIO(path.read_text())


@needs_bubblewrap
@pytest.mark.parametrize("name", NAMES + ["corrupt"])
def test_each_submission_earns_exactly_what_it_solved(batch, name):
    res, want = batch["results"][name], batch["expected"][name]
    assert res["submission"] == str(batch["subs"] / f"{name}.ipynb")
    if want is None:
        assert res["status"] in ("unmatched", "unreadable"), res
        assert res["points"] == 0 and res["exercises"] == []
        return
    assert res["status"] == "graded", res
    assert res["assignment"] == "_template.ipynb"
    got = {e["grade_id"]: e["points"] for e in res["exercises"]}
    assert got == dict(zip(CHECKS, want, strict=True)), res["exercises"]
    assert res["points"] == sum(want) and res["max_points"] == 3


@needs_bubblewrap
def test_refused_submissions_are_named_and_fail_the_exit_code(batch):
    assert batch["out"].returncode == 1, batch["out"].stderr
    assert batch["results"]["unmatched"]["status"] == "unmatched"
    assert "match no instructor notebook" in batch["results"]["unmatched"]["error"]
    assert batch["results"]["corrupt"]["status"] == "unreadable"
    for name in ("unmatched", "corrupt"):
        row = next(r for r in batch["rows"] if Path(r["submission"]).stem == name)
        assert row["status"] in ("unmatched", "unreadable") and row["points"] == "0"
        assert name in batch["out"].stdout


@needs_bubblewrap
def test_every_submission_is_in_the_csv_with_the_sandbox_it_ran_in(batch):
    assert {Path(r["submission"]).stem for r in batch["rows"]} == set(NAMES) | {"corrupt"}
    assert all(r["sandbox"].startswith("bubblewrap") for r in batch["rows"])
    assert all(r["sandbox"].startswith("bubblewrap") for r in batch["results"].values())
    assert batch["out"].stdout.startswith("Sandbox: bubblewrap")
    graded = [r for r in batch["rows"] if r["status"] == "graded"]
    assert len(graded) == 3 * (len(NAMES) - 1)  # one row per exercise


@needs_bubblewrap
def test_no_submission_changed_any_file(batch):
    now = {p.name: p.read_bytes() for p in batch["subs"].iterdir()}
    assert now == batch["files"]  # the neighbour is intact, nothing was planted


@needs_bubblewrap
def test_what_was_left_out_and_tried_is_reported(batch):
    r = batch["results"]
    notes = r["input_transformer"]["exercises"][0]["notes"]
    assert any("line 1 is not carried to grading" in n for n in notes), notes
    assert any("IPython" in f for f in r["input_transformer"]["flags"])
    assert any("tpl-bonus" in n for n in r["extra_graded_cell"]["notes"])
    assert "frame introspection" in " ".join(r["reads_expected"]["flags"])
    assert "sys._getframe" in r["reads_expected"]["exercises"][0]["error"]
    assert "TamperingError" in r["patches_checker"]["exercises"][0]["error"]
    assert "object.__setattr__" in r["patches_checker"]["exercises"][1]["error"]
    assert "thread" in r["leaves_a_thread"]["exercises"][0]["error"]
    assert "import _testcapi" in r["network"]["exercises"][1]["error"]
    assert "time limit" in r["hangs"]["exercises"][0]["error"]
    assert r["hangs"]["restarts"] == 2 and r["patches_checker"]["restarts"] == 2
    assert r["transformer_in_function"]["restarts"] == 1  # a shell made inside the function
    assert r["correct"]["restarts"] == 0 and r["correct"]["flags"] == []


# --------------------------------------------------------------------------------------------
# The sandbox, and grading without it
# --------------------------------------------------------------------------------------------


@needs_bubblewrap
def test_the_sandbox_hides_the_repository_and_the_network(tmp_path):
    scratch = tmp_path / "scratch"
    scratch.mkdir(mode=0o700)
    if SANDBOX.setpriv:
        os.chown(scratch, 65534, 65534)
    secret = tmp_path / "submissions"
    secret.mkdir()
    probe = f"""
import os, socket
seen = {{}}
for path in [{str(NOTEBOOKS)!r}, {str(ROOT / "tests")!r}, {str(secret)!r}]:
    seen[path] = os.path.exists(path)
seen["home"] = os.listdir({str(Path.home())!r}) if os.path.isdir({str(Path.home())!r}) else []
try:
    socket.create_connection(("1.1.1.1", 80), timeout=2)
    seen["network"] = True
except OSError:
    seen["network"] = False
for path in ["/usr/evil", {str(NOTEBOOKS / "evil")!r}, "/tmp/ok", "ok"]:
    try:
        open(path, "w").write("x")
        seen["wrote " + path] = True
    except OSError:
        seen["wrote " + path] = False
seen["uid"] = os.getuid()
print(seen)
"""
    from tinyqwen.grading import _sandbox_env

    cmd, cwd = SANDBOX.command(scratch, 65534, [sys.executable, "-I", "-c", probe])
    out = subprocess.run(
        cmd,
        cwd=cwd,
        env=_sandbox_env(SANDBOX, scratch),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    seen = eval(out.stdout)  # noqa: S307 - our own probe's dict
    assert not any(seen[p] for p in (str(NOTEBOOKS), str(ROOT / "tests"), str(secret))), seen
    # The home directory shows at most the way to a read-only Python prefix inside it.
    home = str(Path.home())
    if seen["home"]:
        ways = {
            Path(p).relative_to(home).parts[0] for p in SANDBOX.readonly if p.startswith(home + "/")
        }
        assert set(seen["home"]) <= ways, seen["home"]
    assert seen["network"] is False
    assert seen["wrote /tmp/ok"] and seen["wrote ok"]
    assert not seen["wrote /usr/evil"] and not seen[f"wrote {NOTEBOOKS / 'evil'}"]
    assert (scratch / "ok").exists() and not (NOTEBOOKS / "evil").exists()
    if os.geteuid() == 0:
        assert seen["uid"] == 65534


def test_without_bubblewrap_grading_says_so_loudly(tmp_path):
    import nbformat

    sub = tmp_path / "mine.ipynb"
    nbformat.write(read_nb(TEMPLATE), sub)  # the instructor's own answers: full marks
    out = grade_cli(
        sub,
        "--source",
        NOTEBOOKS,
        "--bwrap",
        tmp_path / "no-bwrap",
        "--timeout",
        60,
        "--json",
        tmp_path / "g.json",
    )
    assert out.returncode == 0, out.stderr
    assert "GRADING WITHOUT A SANDBOX" in out.stderr
    assert out.stdout.startswith("!!! NO SANDBOX: none: bubblewrap not found")
    (res,) = json.loads((tmp_path / "g.json").read_text())
    assert res["sandbox"].startswith("none: bubblewrap not found")
    assert res["points"] == 3


# --------------------------------------------------------------------------------------------
# Matching and carrying definitions (no sandbox needed)
# --------------------------------------------------------------------------------------------


def test_submissions_are_matched_by_grade_ids_never_by_file_name():
    assignments = load_assignments(NOTEBOOKS)
    ids = {"tpl-ex1-var", "tpl-ex2-max", "tpl-ex3-count"}
    assignment, _ = match_assignment(Submission(Path("04_rmsnorm (1).ipynb"), ids=ids), assignments)
    assert assignment.name == "_template.ipynb"
    none, why = match_assignment(Submission(Path("_template.ipynb"), ids={"hw9-x"}), assignments)
    assert none is None and "match no instructor notebook" in why


def test_only_definitions_are_carried():
    c = carry(
        "import math\n"
        "from torch import nn\n"
        "EPS = 1e-6\n"
        "get_ipython().input_transformers_post.append(print)\n"
        "for i in range(3):\n    pass\n"
        "exec('x = 1')\n"
        "def f(x, eps=1e-5, dtype=torch.float64):\n"
        "    while True:\n        exec('anything, at call time')\n"
        "class Norm(nn.Module):\n    '''doc'''\n    scale = 2.0\n    def forward(self, x):\n        return x\n"
        "var_last = f\n"
    )
    assert not c.error
    assert [n.split(" is")[0] for n in c.notes] == ["line 4", "line 5", "line 7"]
    assert "get_ipython" not in c.source and "range(3)" not in c.source
    assert "exec('anything, at call time')" in c.source  # bodies run only inside learner_call
    assert c.binds == ["EPS", "f", "Norm", "var_last", "math", "nn"]  # an alias is a name too


@pytest.mark.parametrize(
    "source, why",
    [
        ("@print\ndef f(): pass", "decorator @print"),
        ("def f(x=print('now')): pass", "default value"),
        ("class A(metaclass=type): pass", "metaclass"),
        ("class A(make_base()): pass", "base class must be a name"),
        ("class A:\n    def __del__(self): pass", "__del__ could run outside the checks"),
        ("class A:\n    def __eq__(self, o): return True", "__eq__"),
        ("class A:\n    def __torch_function__(self, *a): pass", "__torch_function__"),
        ("class A:\n    x = print('now')", "class attributes must be literals"),
        ("class A:\n    for i in range(3): pass", "a class body may hold only"),
        ("def __getattr__(name): pass", "names like __this__"),
    ],
)
def test_definitions_that_could_run_code_are_not_carried(source, why):
    c = carry(source)
    assert c.error.startswith("not carried") and why in c.error, c.error


def test_a_cell_magic_is_dropped_and_its_body_kept():
    c = carry("%%time\ndef f(x):\n    return x\nprint(f(1))\n")
    assert not c.error and c.binds == ["f"]
    assert c.notes[0] == "line 1: the cell magic %%time is not carried"
    assert c.notes[1].startswith("line 4 is not carried")


def test_allowed_decorators_become_the_runners_own():
    c = carry(
        "import functools, torch\n"
        "@torch.no_grad()\ndef f(x): return x\n"
        "@functools.lru_cache(maxsize=8)\ndef g(n): return n\n"
        "class A:\n    @staticmethod\n    def h(): return 1\n"
    )
    assert not c.error, c.error
    assert "__tinyqwen_decorator__('no_grad')" in c.source
    assert "__tinyqwen_decorator__('lru_cache', maxsize=8)" in c.source
    assert "__tinyqwen_decorator__('staticmethod')" in c.source


# --------------------------------------------------------------------------------------------
# learner_call watches what the grader relies on
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        lambda: sys.path.append("/tmp/anywhere"),
        lambda: sys.modules.__setitem__("json", sys.modules["math"]),
        lambda: torch.set_default_dtype(torch.float64),
        lambda: torch.set_grad_enabled(False),
        lambda: torch.nn.modules.module.register_module_forward_hook(lambda *a: None),
        lambda: signal.signal(signal.SIGALRM, lambda *a: None),
        lambda: signal.setitimer(signal.ITIMER_REAL, 30),
    ],
    ids=[
        "sys.path", "sys.modules", "default dtype", "grad mode", "global module hook",
        "signal handler", "interval timer",
    ],
)  # fmt: skip
def test_learner_call_puts_back_and_reports_global_changes(change):
    import json as json_module

    before = (list(sys.path), torch.get_default_dtype(), torch.is_grad_enabled())
    with pytest.raises(TamperingError):
        learner_call(lambda: change() and None)
    assert (list(sys.path), torch.get_default_dtype(), torch.is_grad_enabled()) == before
    assert sys.modules["json"] is json_module
    assert not torch.nn.modules.module._global_forward_hooks
    assert signal.getsignal(signal.SIGALRM) is signal.SIG_DFL
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
