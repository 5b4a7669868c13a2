# Hand-written support module (teaches nothing): course tooling for authors and instructors.
"""Course tooling for authors and instructors.

    python -m tinyqwen.course check notebooks/01_tokenization.ipynb   # what a chapter lacks
    python -m tinyqwen.course student notebooks/*.ipynb --out dist/student
    python -m tinyqwen.course stage-book --out _build/book-src       # make book builds it
    python -m tinyqwen.course stage-student-branch --out DIR         # the student branch's tree
    python -m tinyqwen.course grade submissions/ --csv grades.csv --json grades.json

``student`` writes the student edition with nbgrader's own preprocessors (solutions replaced by
``raise NotImplementedError()``, hidden tests removed, outputs cleared). Staging commands make
their output folder anew and replace only a folder they made themselves. ``grade`` is
``tinyqwen.grading``: it grades untrusted submissions, each in its own sandbox.
"""

from __future__ import annotations

import argparse
import ast
import copy
import os
import re
import sys
import time
from pathlib import Path

import nbformat

# The skeleton's sections, in order; each must be a Markdown heading containing the word.
SECTIONS = ("Build", "Verify", "See", "Measure", "Exercises", "Summary")
MIN_EXERCISES = 3
BEGIN_SOLUTION, END_SOLUTION = "### BEGIN SOLUTION", "### END SOLUTION"
BEGIN_HIDDEN, END_HIDDEN = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"
# A chapter reveals code in small steps: a piece, its output, the next piece.
MAX_CODE_LINES = 60
MAX_PROSE_WORDS = 400


# The branch the publish workflow fills with the student edition of every notebook (solutions
# removed, checks kept): the chapters' Colab badges open it, so a learner never starts from the
# instructor edition.
STUDENT_BRANCH = "student"


def colab_url(repo_url: str, branch: str, notebook: str) -> str:
    """Colab's address for ``notebooks/<notebook>`` of a GitHub repository at ``branch``."""
    owner_repo = repo_url.rstrip("/").removeprefix("https://github.com/")
    return (
        f"https://colab.research.google.com/github/{owner_repo}/blob/{branch}/notebooks/{notebook}"
    )


def nbgrader_meta(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {})


def is_solution(cell) -> bool:
    return cell.cell_type == "code" and bool(nbgrader_meta(cell).get("solution"))


def is_graded(cell) -> bool:
    return cell.cell_type == "code" and bool(nbgrader_meta(cell).get("grade"))


def _headings(nb) -> list[tuple[int, str]]:
    out = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "markdown":
            out += [(i, m.group(1)) for m in re.finditer(r"^#{1,4}\s+(.+)$", cell.source, re.M)]
    return out


def grade_id_prefix(name: str) -> str:
    """'04_rmsnorm.ipynb' -> 'ch04-'; the second notebook of chapter 11 -> 'ch11t-'."""
    stem = Path(name).stem
    if stem == "11_train_on_gpu":
        return "ch11t-"
    return f"ch{stem[:2]}-" if stem[:2].isdigit() else "tpl-"


def notebook_problems(nb, name: str, repo_url: str, branch: str) -> list[str]:
    """Everything in chapter notebook ``nb`` (file name ``name``) that breaks the skeleton."""
    problems = []
    cells = nb.cells
    code = [c for c in cells if c.cell_type == "code"]
    if not cells or cells[0].cell_type != "markdown" or not cells[0].source.startswith("# "):
        problems.append("the first cell must be Markdown starting with a '# Title'")
    elif colab_url(repo_url, STUDENT_BRANCH, name) not in cells[0].source:
        problems.append(
            "the first cell must carry an Open-in-Colab badge to the student edition: "
            f"{colab_url(repo_url, STUDENT_BRANCH, name)}"
        )

    heads = _headings(nb)
    if not any(re.search(r"objectives", h, re.I) for _, h in heads):
        problems.append("no 'Learning objectives' heading")
    pos = -1
    for section in SECTIONS:
        found = [i for i, h in heads if re.search(rf"\b{section}", h, re.I) and i > pos]
        if not found:
            problems.append(f"no '{section}' section heading after the previous section")
        else:
            pos = found[0]

    setup = [c for c in code if "from tinyqwen.runtime import setup" in c.source]
    if not setup:
        problems.append("no setup cell (from tinyqwen.runtime import setup; rt = setup(...))")
    elif f"tinyqwen[notebooks] @ git+{repo_url}@{branch}" not in setup[0].source:
        problems.append(
            f"the setup cell must install 'tinyqwen[notebooks] @ git+{repo_url}@{branch}' in Colab"
        )
    elif f'chapter="{Path(name).stem}"' not in setup[0].source:
        problems.append(
            f'the setup cell must call setup(..., chapter="{Path(name).stem}") to state the time'
        )
    if not any(c.source.startswith("#| default_exp ") for c in code):
        problems.append("no '#| default_exp <module>' cell")
    if not any(c.source.startswith("#| export") for c in code):
        problems.append("no '#| export' cell")
    if not any(re.search(r"\bplt\.(subplots|figure|show|imshow|plot)\(", c.source) for c in code):
        problems.append("no figure (matplotlib) cell")
    if not any(re.search(r"assert|testing\.assert_close", c.source) for c in code):
        problems.append("no verification cell (assert / torch.testing.assert_close)")

    ids = [nbgrader_meta(c).get("grade_id") for c in cells if nbgrader_meta(c)]
    if len(ids) != len(set(ids)):
        problems.append("nbgrader grade_id values are not unique")
    prefix = grade_id_prefix(name)
    wrong = [i for i in ids if not str(i).startswith(prefix)]
    if wrong:
        problems.append(f"grade ids must start with {prefix!r} (unique across the course): {wrong}")
    n_ok = 0
    for i, cell in enumerate(code):
        if not is_solution(cell):
            continue
        meta = nbgrader_meta(cell)
        if meta.get("grade") or meta.get("locked") or meta.get("schema_version") != 3:
            problems.append(
                f"solution cell {meta.get('grade_id')}: must be grade=false, locked=false, schema_version=3"
            )
        if BEGIN_SOLUTION not in cell.source or END_SOLUTION not in cell.source:
            problems.append(
                f"solution cell {meta.get('grade_id')}: missing {BEGIN_SOLUTION} / {END_SOLUTION}"
            )
        nxt = code[i + 1] if i + 1 < len(code) else None
        if nxt is None or not is_graded(nxt):
            problems.append(
                f"solution cell {meta.get('grade_id')} is not followed by a graded test cell"
            )
            continue
        g = nbgrader_meta(nxt)
        if not g.get("locked") or not g.get("points", 0) > 0 or g.get("solution"):
            problems.append(
                f"graded cell {g.get('grade_id')}: must be locked, solution=false, points > 0"
            )
            continue
        n_ok += 1
    if n_ok < MIN_EXERCISES:
        problems.append(
            f"{n_ok} exercise(s) with a graded check; at least {MIN_EXERCISES} are required"
        )
    problems += cell_size_problems(nb)
    problems += check_cell_problems(nb)
    problems += [
        f"solution of {gid} is visible elsewhere in the student edition: {line!r}"
        for gid, lines in solution_leaks(nb).items()
        for line in lines
    ]
    problems += [f"prose quotes a number no cell produced: {hit}" for hit in unsourced_numbers(nb)]
    problems += broken_display_math(nb)
    return problems


def broken_display_math(nb) -> list[str]:
    """Display math that shows as raw TeX: a line inside a $$ ... $$ block that Markdown reads
    as a list item ('+ x', '- x', '1. x'), which cuts the formula in two, or a block that opens
    mid-paragraph and spans lines, which MyST leaves as text."""
    out = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "markdown":
            continue
        inside, previous = False, ""
        for line in cell.source.splitlines():
            if inside and re.match(r"^\s*([-+*]|\d+[.)])\s", line):
                out.append(
                    f"cell {i}: a line of display math starts like a list item: {line.strip()[:50]!r}"
                )
            if not inside and line.count("$$") % 2 == 1 and previous.strip():
                out.append(
                    f"cell {i}: display math opens mid-paragraph (put a blank line before it): "
                    f"{line.strip()[:50]!r}"
                )
            inside ^= line.count("$$") % 2 == 1
            previous = line
    return out


def cell_size_problems(nb) -> list[str]:
    """Code cells over MAX_CODE_LINES lines and prose cells over MAX_PROSE_WORDS words."""
    out = []
    for i, cell in enumerate(nb.cells):
        first = cell.source.strip().splitlines()[0][:60] if cell.source.strip() else ""
        if cell.cell_type == "code" and len(cell.source.splitlines()) > MAX_CODE_LINES:
            out.append(
                f"cell {i} has {len(cell.source.splitlines())} lines of code "
                f"(at most {MAX_CODE_LINES}): {first!r}"
            )
        if cell.cell_type == "markdown" and len(cell.source.split()) > MAX_PROSE_WORDS:
            out.append(
                f"cell {i} has {len(cell.source.split())} words of prose "
                f"(at most {MAX_PROSE_WORDS}): {first!r}"
            )
    return out


# --------------------------------------------------------------------------------------------
# Exercises: what the solution defines, what the student edition shows, what checks may call
# --------------------------------------------------------------------------------------------


def region_lines(source: str, begin: str, end: str) -> list[str]:
    """The lines strictly between ``begin`` and ``end`` markers (every such region)."""
    lines, inside = [], False
    for line in source.splitlines():
        if begin in line:
            inside = True
        elif end in line:
            inside = False
        elif inside:
            lines.append(line)
    return lines


def without_region(source: str, begin: str, end: str) -> str:
    """``source`` with every ``begin`` … ``end`` region (markers included) removed."""
    out, inside = [], False
    for line in source.splitlines():
        if begin in line:
            inside = True
        elif end in line:
            inside = False
        elif not inside:
            out.append(line)
    return "\n".join(out)


def solution_names(cell) -> set[str]:
    """Top-level names a solution cell defines (functions, classes, assignments)."""
    try:
        tree = ast.parse(cell.source)
    except SyntaxError:
        return set()
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
    return names


def _normalise(text: str) -> str:
    return " ".join(text.split())


_TRIVIAL = re.compile(
    r"^(import |from \S+ import |#|return \w+$|pass$|else:$|try:$|finally:$|\W*$|"
    r"raise NotImplementedError)"
)
MIN_LEAK_CHARS = 12


def solution_leaks(nb) -> dict[str, list[str]]:
    """grade_id -> solution lines that the student edition still shows somewhere else.

    The student edition is every cell with solution regions and hidden tests removed. A line
    counts when it is not trivial (imports, comments, ``return name``, punctuation) and at least
    MIN_LEAK_CHARS long; it leaks when its whitespace-normalised text occurs in any other cell.
    """
    visible = []
    for cell in nb.cells:
        text = without_region(cell.source, BEGIN_SOLUTION, END_SOLUTION)
        text = without_region(text, BEGIN_HIDDEN, END_HIDDEN)
        visible.append(_normalise(text))
    leaks: dict[str, list[str]] = {}
    for i, cell in enumerate(nb.cells):
        if not is_solution(cell):
            continue
        gid = nbgrader_meta(cell).get("grade_id", f"cell {i}")
        for line in region_lines(cell.source, BEGIN_SOLUTION, END_SOLUTION):
            norm = _normalise(line)
            if len(norm) < MIN_LEAK_CHARS or _TRIVIAL.match(norm):
                continue
            if any(norm in text for j, text in enumerate(visible) if j != i):
                leaks.setdefault(gid, []).append(norm)
    return leaks


def _calls_learner_call(node) -> bool:
    func = node.func if isinstance(node, ast.Call) else None
    return (isinstance(func, ast.Name) and func.id == "learner_call") or (
        isinstance(func, ast.Attribute) and func.attr == "learner_call"
    )


def _unguarded_uses(tree, names: set[str]) -> list[str]:
    """Loads of ``names`` that are not inside the first argument of a learner_call(...)."""
    guarded = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and _calls_learner_call(node) and node.args:
            guarded |= {id(n) for n in ast.walk(node.args[0])}
    return sorted(
        {
            n.id
            for n in ast.walk(tree)
            if isinstance(n, ast.Name) and n.id in names and id(n) not in guarded
        }
    )


def check_cell_problems(nb) -> list[str]:
    """Rules for graded cells: learner code runs only through learner_call, checks are
    independent of each other, grade ids carry the chapter's prefix."""
    out = []
    cells = nb.cells
    defined_outside_checks: set[str] = set()
    assigned_in: dict[int, set[str]] = {}
    for i, cell in enumerate(cells):
        if cell.cell_type != "code":
            continue
        try:
            tree = ast.parse(_strip_magics(cell.source))
        except SyntaxError:
            continue
        names = {
            n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)
        }
        names |= {
            n.name
            for n in ast.walk(tree)
            if isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))
        }
        names |= {
            (a.asname or a.name).split(".")[0]
            for n in ast.walk(tree)
            if isinstance(n, (ast.Import, ast.ImportFrom))
            for a in n.names
        }
        if is_graded(cell):
            assigned_in[i] = names
        else:
            defined_outside_checks |= names
    for i, cell in enumerate(cells):
        if not is_graded(cell):
            continue
        gid = nbgrader_meta(cell).get("grade_id")
        j = i - 1
        while j >= 0 and not (cells[j].cell_type == "code"):
            j -= 1
        learner_names = solution_names(cells[j]) if j >= 0 and is_solution(cells[j]) else set()
        try:
            tree = ast.parse(_strip_magics(cell.source))
        except SyntaxError as exc:
            out.append(f"graded cell {gid} does not parse: {exc}")
            continue
        bad = _unguarded_uses(tree, learner_names)
        if bad:
            out.append(
                f"graded cell {gid} uses {', '.join(bad)} outside learner_call(...): "
                "run the learner's code only through tinyqwen.checks.learner_call"
            )
        if learner_names and not any(
            isinstance(n, ast.Call) and _calls_learner_call(n) for n in ast.walk(tree)
        ):
            out.append(f"graded cell {gid} never calls learner_call")
        loads = {
            n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)
        }
        others = (
            set().union(*(v for k, v in assigned_in.items() if k != i)) if assigned_in else set()
        )
        borrowed = sorted(
            (loads & others) - defined_outside_checks - assigned_in[i] - learner_names
        )
        if borrowed:
            out.append(
                f"graded cell {gid} uses {', '.join(borrowed)} defined only in another graded "
                "cell: each check must run on its own"
            )
    return out


def _strip_magics(source: str) -> str:
    return "\n".join(
        "" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines()
    )


# --------------------------------------------------------------------------------------------
# What a notebook imports, against what the Colab setup cell installs
# --------------------------------------------------------------------------------------------


def notebook_imports(nb) -> set[str]:
    """Top-level module names imported by the code cells of ``nb``."""
    found = set()
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        try:
            tree = ast.parse(_strip_magics(cell.source))
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return found


def installed_by_colab_cell(pyproject: dict) -> set[str]:
    """Distributions `pip install tinyqwen[notebooks]` brings: the dependencies and the extra."""
    project = pyproject["project"]
    reqs = project["dependencies"] + project["optional-dependencies"]["notebooks"]
    return {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower().replace("_", "-") for r in reqs}


def uncovered_imports(nb, pyproject: dict) -> list[str]:
    """Modules ``nb`` imports that neither Python, tinyqwen[notebooks] nor Colab provides."""
    from importlib.metadata import packages_distributions

    from tinyqwen.runtime import COLAB_PREINSTALLED

    dists = packages_distributions()
    covered = installed_by_colab_cell(pyproject)
    missing = []
    for module in sorted(notebook_imports(nb)):
        if (
            module in sys.stdlib_module_names
            or module == "tinyqwen"
            or module in COLAB_PREINSTALLED
        ):
            continue
        names = {d.lower().replace("_", "-") for d in dists.get(module, [module])}
        if not names & covered:
            missing.append(f"{module} (from {', '.join(sorted(names))})")
    return missing


# --------------------------------------------------------------------------------------------
# Numbers in prose
# --------------------------------------------------------------------------------------------

# A ratio, a duration, a throughput or a utilisation: what only a measurement can say.
_MEASURED = re.compile(
    r"(?<![\w.$])(\d(?:[\d,]*\d)?(?:\.\d+)?)\s*"
    r"(?:(?:×|x\b)(?!\s*\d)|times (?:faster|slower|more|less|as)|"
    r"(?:ms|µs|us|ns|s|sec|seconds?|min|minutes?|h|hours?)\b(?!\w)|"
    r"(?:tok(?:ens)?/s|tokens per second|it/s|steps/s|GB/s|TFLOP/?s|GFLOP/?s)|"
    r"%\s*(?:MFU|faster|slower|of (?:the )?time))",
    re.IGNORECASE,
)
# A paragraph may quote numbers it does not measure when it says where they come from.
_SOURCED = re.compile(r"\{cite[:\w]*\}|\{glue[:\w]*\}|<!--\s*not measured", re.IGNORECASE)


def unsourced_numbers(nb) -> list[str]:
    """Measured-looking numbers typed into Markdown cells.

    Numbers in prose must come from a cell's output (a cell that prints or displays Markdown) or
    from the recorded results. A paragraph that cites its source ({cite}), inserts a value
    ({glue}) or states why the number is not a measurement (``<!-- not measured: … -->``) is
    exempt. Math ($…$), inline code and code blocks are not prose.
    """
    hits = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "markdown":
            continue
        text = re.sub(r"```.*?```", " ", cell.source, flags=re.S)
        text = re.sub(r"\$\$.*?\$\$|\$[^$\n]+\$|`[^`\n]+`", " ", text, flags=re.S)
        for para in re.split(r"\n\s*\n", text):
            if _SOURCED.search(para):
                continue
            for m in _MEASURED.finditer(para):
                start = max(0, m.start() - 30)
                hits.append(f"cell {i}: …{_normalise(para[start : m.end() + 10])}…")
    return hits


# --------------------------------------------------------------------------------------------
# Student edition
# --------------------------------------------------------------------------------------------


def student_edition(nb):
    """A copy of instructor notebook ``nb`` with solutions, hidden tests and outputs removed.

    Uses nbgrader's own preprocessors, so the result is what ``nbgrader generate_assignment``
    would release (minus its checksums and database bookkeeping).
    """
    from nbgrader.preprocessors import ClearHiddenTests, ClearOutput, ClearSolutions

    nb = copy.deepcopy(nb)
    resources: dict = {}
    for pre in (ClearSolutions(), ClearHiddenTests(), ClearOutput()):
        nb, resources = pre.preprocess(nb, resources)
    return nb


def reader_edition(nb):
    """A copy of instructor notebook ``nb`` as the published book shows it: hidden tests removed
    (nbgrader's ClearHiddenTests), solutions and outputs kept. Solution cells stay collapsed in
    the book by their ``hide-input`` tag."""
    from nbgrader.preprocessors import ClearHiddenTests

    nb, _ = ClearHiddenTests().preprocess(copy.deepcopy(nb), {})
    return nb


def write_student_editions(paths: list[Path], out_dir: Path) -> list[Path]:
    """Write the student edition of each notebook into ``out_dir`` (same file names); files of
    other names in ``out_dir`` are left alone."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for path in paths:
        target = out_dir / path.name
        nbformat.write(student_edition(nbformat.read(path, as_version=4)), target)
        written.append(target)
    return written


# --------------------------------------------------------------------------------------------
# Staged folders: built complete beside their destination, swapped in, and only ever replacing
# a folder that this module made (it carries STAGE_MARKER)
# --------------------------------------------------------------------------------------------

STAGE_MARKER = ".tinyqwen-staged"
_MARKER_TEXT = (
    "made by tinyqwen.course: a staged copy that the next staging command replaces as a whole.\n"
    "Do not keep your own files in this folder.\n"
)


class StagingRefused(Exception):
    """A staging command would have to replace a folder that it did not make."""


def made_by_course(folder: Path) -> bool:
    """Whether ``folder`` carries the marker that a staging command of this module writes."""
    marker = Path(folder) / STAGE_MARKER
    try:
        return marker.is_file() and marker.read_text().startswith("made by tinyqwen.course")
    except OSError:
        return False


def stage_folder(
    dest: Path, fill, *, not_inside: tuple[Path, ...] = (), not_around: tuple[Path, ...] = ()
) -> Path:
    """Make ``dest`` anew with ``fill(folder)``, never losing anything that was not ours.

    ``fill`` writes into a new sibling folder (``.<name>.staging-*``), which gets STAGE_MARKER
    first. Only when ``fill`` has returned is ``dest`` swapped for it; an existing ``dest`` is
    replaced only when it carries the marker (or is an empty folder), otherwise StagingRefused
    is raised before anything is written. When ``fill`` fails, its half-made folder (which we
    created) is removed and ``dest`` is untouched. ``dest`` may not be or lie inside a folder
    of ``not_inside`` (what ``fill`` copies recursively), nor be or contain one of
    ``not_around`` (the source itself).
    """
    import shutil
    import tempfile

    dest = Path(dest).absolute()
    for src in map(Path.absolute, map(Path, not_inside)):
        if dest.is_relative_to(src):
            raise StagingRefused(f"{dest} lies in {src}, which is copied into it")
    for src in map(Path.absolute, map(Path, not_around)):
        if src.is_relative_to(dest):
            raise StagingRefused(f"{dest} holds {src}, the sources it would be staged from")
    if dest.is_symlink() or (dest.exists() and not dest.is_dir()):
        raise StagingRefused(f"{dest} exists and is not a folder; refusing to replace it")
    if dest.exists() and any(dest.iterdir()) and not made_by_course(dest):
        raise StagingRefused(
            f"{dest} exists and was not made by tinyqwen.course (it has no {STAGE_MARKER} "
            "file), so it is left as it is: choose another output folder, or move that one away"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    new = Path(tempfile.mkdtemp(prefix=f".{dest.name}.staging-", dir=dest.parent))
    umask = os.umask(0o022)
    os.umask(umask)
    new.chmod(0o777 & ~umask)  # mkdtemp's folder is private; a staged folder is an ordinary one
    try:
        (new / STAGE_MARKER).write_text(_MARKER_TEXT)
        fill(new)
    except BaseException:
        shutil.rmtree(new, ignore_errors=True)
        raise
    if not dest.exists():
        new.rename(dest)
        return dest
    old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old-", dir=dest.parent))
    old.rmdir()  # only its unique name is wanted
    dest.rename(old)
    try:
        new.rename(dest)
    except BaseException:
        old.rename(dest)
        shutil.rmtree(new, ignore_errors=True)
        raise
    shutil.rmtree(old)
    return dest


def _edition(make, nb, name: str):
    """``make(nb)``, with the notebook's name on nbgrader's complaints (they name no notebook)."""
    try:
        return make(nb)
    except RuntimeError as exc:
        raise ValueError(f"{name}: {exc}") from exc


# What the book's sources are, besides the chapter notebooks.
BOOK_SOURCES = ("_toc.yml", "book", "benchmarks/results")


def stage_book(
    root: Path, dest: Path, *, student: bool = False, executed: dict | None = None
) -> Path:
    """Stage the book's sources in ``dest`` for ``jupyter-book build``.

    The published book (default) shows each chapter's :func:`reader_edition`: solutions kept
    (collapsed), hidden tests removed. ``student=True`` stages :func:`student_edition` instead:
    graded check cells are tagged ``raises-exception`` (they fail without solutions) and
    ``remove-output``, and sphinx-exercise's ``hide_solutions`` is on. ``executed`` maps a
    chapter's file name to an already executed instructor notebook to use (reader edition only);
    execution is then switched off. The staged ``_config.yml`` keeps the execution cache and the
    scripts fetched from npm (book/_ext/offline_assets.py) in ``root/_build``, so restaging does
    not throw them away.
    """
    import shutil

    import yaml

    root = Path(root).absolute()
    if student and executed:
        raise ValueError("the student edition clears outputs: stage it from the sources")

    def fill(folder: Path) -> None:
        for name in BOOK_SOURCES:
            src = root / name
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (shutil.copytree if src.is_dir() else shutil.copy2)(src, folder / name)
        config = yaml.safe_load((root / "_config.yml").read_text())
        execution = config.setdefault("execute", {})
        execution["cache"] = str(root / "_build" / ".jupyter_cache")
        sphinx = config.setdefault("sphinx", {}).setdefault("config", {})
        sphinx["offline_vendor_dir"] = str(root / "_build" / "vendor")
        if student:
            config["title"] += " (student edition)"
            sphinx["hide_solutions"] = True
        if executed:
            execution["execute_notebooks"] = "off"
        (folder / "_config.yml").write_text(yaml.safe_dump(config, sort_keys=False))
        (folder / "notebooks").mkdir()
        for path in sorted((root / "notebooks").glob("[0-9][0-9]_*.ipynb")):
            nb = (executed or {}).get(path.name) or nbformat.read(path, as_version=4)
            nb = _edition(student_edition if student else reader_edition, nb, path.name)
            for cell in nb.cells if student else ():
                if is_graded(cell):
                    tags = cell.metadata.setdefault("tags", [])
                    tags += [t for t in ("raises-exception", "remove-output") if t not in tags]
            nbformat.write(nb, folder / "notebooks" / path.name)

    copied = tuple(root / name for name in (*BOOK_SOURCES, "notebooks"))
    return stage_folder(dest, fill, not_inside=copied, not_around=(root,))


def stage_student_book(root: Path, dest: Path) -> Path:
    """The book's sources with every chapter replaced by its student edition (``make
    book-student`` builds it)."""
    return stage_book(root, dest, student=True)


# Left out of the student branch: GitHub refuses workflow files pushed with the workflow's own
# token, and main's workflows (tests that need the solutions) must not run there.
NOT_ON_STUDENT_BRANCH = (".github/",)
STUDENT_README_NOTE = """> **Student edition.** This branch is generated from `main` by the publish workflow: every
> notebook in `notebooks/` is its student edition (exercises unsolved, checks kept, no hidden
> tests, no outputs). The package is the same as on `main`. Do not commit here; work on `main`.

"""


def tracked_files(root: Path) -> list[str]:
    """The repository's files as git sees them: tracked, plus untracked ones it does not ignore."""
    import subprocess

    try:
        out = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=root,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise StagingRefused(
            f"{root} must be a git checkout to stage the student branch: {exc}"
        ) from exc
    return sorted(set(filter(None, out.split("\0"))))


def stage_student_branch(root: Path, dest: Path) -> Path:
    """Stage in ``dest`` the tree that branch STUDENT_BRANCH carries.

    It is the whole repository (git's files, less NOT_ON_STUDENT_BRANCH) with every notebook in
    ``notebooks/`` replaced by its :func:`student_edition` and a note atop README.md, so Colab
    opens unsolved chapters and ``pip install git+…@student`` installs the same package as main.
    The publish workflow commits ``dest`` (without STAGE_MARKER) and force-pushes it.
    """
    import shutil

    root, dest = Path(root).absolute(), Path(dest).absolute()
    files = [
        f
        for f in tracked_files(root)
        if not f.startswith(NOT_ON_STUDENT_BRANCH) and not (root / f).is_relative_to(dest)
    ]

    def fill(folder: Path) -> None:
        for rel in files:
            src, target = root / rel, folder / rel
            if not (src.exists() or src.is_symlink()):
                continue  # deleted in the working tree, not yet in git
            target.parent.mkdir(parents=True, exist_ok=True)
            if rel.startswith("notebooks/") and rel.endswith(".ipynb") and not src.is_symlink():
                nb = _edition(student_edition, nbformat.read(src, as_version=4), rel)
                nbformat.write(nb, target)
            else:
                shutil.copy2(src, target, follow_symlinks=False)
        readme = folder / "README.md"
        if readme.exists():
            readme.write_text(STUDENT_README_NOTE + readme.read_text())

    return stage_folder(dest, fill, not_around=(root,))


# --------------------------------------------------------------------------------------------
# Executing and grading
# --------------------------------------------------------------------------------------------

# No MPLBACKEND here: the kernel's inline backend is what puts figures into executed notebooks.
# OMP_WAIT_POLICY=PASSIVE: OpenMP threads that spin while waiting multiply run time on a busy machine.
OFFLINE_ENV = {
    "TINYQWEN_PROFILE": "ci",
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "OMP_WAIT_POLICY": "PASSIVE",
}


def execute(
    nb,
    cwd: Path,
    *,
    timeout: int = 300,
    allow_errors: bool = False,
    profile: str = "ci",
    extra: list | None = None,
) -> float:
    """Execute ``nb`` in place in a fresh kernel, offline under ``profile``; returns seconds.

    With ``allow_errors`` a failing or timed-out cell is recorded and execution goes on. Each
    cell's start and end times land in its ``metadata.execution``. ``extra``: more code cells
    (not part of ``nb``) run afterwards in the same kernel, errors recorded in their outputs,
    never raised; the exercise probes use it.
    """
    from nbclient import NotebookClient
    from nbclient.util import ensure_async, run_sync

    class Client(NotebookClient):
        seconds = 0.0

        async def async_execute(self, reset_kc: bool = False, **kwargs):
            self.reset_execution_trackers()
            async with self.async_setup_kernel(**kwargs):
                reply = await self.async_wait_for_reply(await ensure_async(self.kc.kernel_info()))
                if reply is not None and "language_info" in reply["content"]:
                    self.nb.metadata["language_info"] = reply["content"]["language_info"]
                start = time.perf_counter()
                for index, cell in enumerate(self.nb.cells):
                    await self.async_execute_cell(
                        cell, index, execution_count=self.code_cells_executed + 1
                    )
                self.seconds = time.perf_counter() - start
                self.set_widgets_metadata()  # as nbclient does: the book renders saved widgets
                self.allow_errors = True
                # nbclient stores each executed cell at its index: give the extra cells their
                # own places after the notebook's, then take them out again
                n_cells = len(self.nb.cells)
                self.nb.cells.extend(extra or [])
                try:
                    for k, cell in enumerate(extra or []):
                        await self.async_execute_cell(cell, n_cells + k, store_history=False)
                finally:
                    del self.nb.cells[n_cells:]
            return self.nb

        execute = run_sync(async_execute)

    env = {**OFFLINE_ENV, "TINYQWEN_PROFILE": profile}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        client = Client(
            nb,
            timeout=timeout,
            kernel_name="python3",
            allow_errors=allow_errors,
            interrupt_on_timeout=allow_errors,
            record_timing=True,
            resources={"metadata": {"path": str(cwd)}},
        )
        client.execute()
        return client.seconds
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def exercise_table(paths: list[Path]) -> str:
    """Markdown table of every graded exercise (notebook, grade_id, points, first sentence)."""
    rows = []
    for path in paths:
        cells = nbformat.read(path, as_version=4).cells
        for i, cell in enumerate(cells):
            if not is_graded(cell):
                continue
            j = i - 1
            while j >= 0 and not is_solution(cells[j]):
                j -= 1
            k = j - 1
            while k >= 0 and cells[k].cell_type != "markdown":
                k -= 1
            text = cells[k].source if k >= 0 else ""
            m = re.search(r"\*\*Exercise[^*]*\*\*\s*(.*)", text, re.S)
            body = re.sub(r"\s+", " ", (m.group(1) if m else text).strip())
            first = re.split(r"(?<=[.?])\s", body, maxsplit=1)[0]
            if len(first) > 120:
                first = first[:117].rsplit(" ", 1)[0] + " …"
            meta = nbgrader_meta(cell)
            rows.append((path.name, meta["grade_id"], meta["points"], first.replace("|", "\\|")))
    lines = ["| notebook | graded cell | points | what it asks |", "|---|---|---|---|"]
    lines += [f"| `{n}` | `{g}` | {pt} | {w} |" for n, g, pt, w in rows]
    lines += ["", f"In total {sum(r[2] for r in rows)} points in {len(rows)} exercises."]
    return "\n".join(lines)


def _repo_from_config(root: Path) -> tuple[str, str]:
    import yaml

    repo = yaml.safe_load((root / "_config.yml").read_text())["repository"]
    return repo["url"], repo.get("branch", "main")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tinyqwen.course", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    chk = sub.add_parser("check", help="check chapter notebooks against the skeleton")
    chk.add_argument("notebooks", nargs="+", type=Path)
    stu = sub.add_parser("student", help="write student editions (nbgrader preprocessors)")
    stu.add_argument("notebooks", nargs="+", type=Path)
    stu.add_argument("--out", type=Path, default=Path("dist/student"))
    tab = sub.add_parser("exercise-table", help="the exercises table of book/instructors.md")
    tab.add_argument("notebooks", nargs="+", type=Path)
    stg = sub.add_parser(
        "stage-book", help="stage the book's sources (hidden tests removed) for jupyter-book build"
    )
    stg.add_argument("--out", type=Path, default=Path("_build/book-src"))
    stg.add_argument("--student", action="store_true", help="stage the student edition")
    stb = sub.add_parser("stage-student-book", help="stage-book --student")
    stb.add_argument("--out", type=Path, default=Path("_build/student-src"))
    sbr = sub.add_parser(
        "stage-student-branch",
        help=f"stage the repository as branch {STUDENT_BRANCH!r} carries it (student editions)",
    )
    sbr.add_argument("--out", type=Path, default=Path("_build/student-branch"))
    sub.add_parser(
        "grade",
        help="grade untrusted submissions in a sandbox (python -m tinyqwen.course grade --help)",
        add_help=False,
    )
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["grade"]:
        from tinyqwen.grading import main as grade_main

        return grade_main(argv[1:])
    args = parser.parse_args(argv)
    if args.cmd == "student":
        for p in write_student_editions(args.notebooks, args.out):
            print(f"wrote {p}")
        return 0
    if args.cmd == "exercise-table":
        print(exercise_table(args.notebooks))
        return 0
    stage = {
        "stage-book": lambda: stage_book(Path.cwd(), args.out, student=args.student),
        "stage-student-book": lambda: stage_student_book(Path.cwd(), args.out),
        "stage-student-branch": lambda: stage_student_branch(Path.cwd(), args.out),
    }
    if args.cmd in stage:
        try:
            print(f"staged {args.cmd.removeprefix('stage-')} in {stage[args.cmd]()}")
        except (StagingRefused, ValueError) as exc:  # refused, or a notebook nbgrader rejects
            print(f"error: {exc}", file=sys.stderr)
            return 2
        return 0
    bad = 0
    for path in args.notebooks:
        url, branch = _repo_from_config(path.resolve().parent.parent)
        problems = notebook_problems(nbformat.read(path, as_version=4), path.name, url, branch)
        print(f"{path}: {'ok' if not problems else ''}")
        for p in problems:
            print(f"  - {p}")
        bad += bool(problems)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
