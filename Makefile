# TinyQwen: `make test` and `make book` set up everything they need on a fresh machine.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.tinyqwen-installed
# Which PyTorch to install. CI pins the CPU build it finds on local disk (see .ci/run).
TORCH_SPEC ?= torch>=2.4
EXTRAS ?= book,test,instructor
BOOK_FLAGS ?= -W -n --keep-going

.PHONY: help install export test test-fast book book-clean lint clean

help:
	@echo "make test    set up .venv and run the test suite (executes every notebook, profile ci)"
	@echo "make book    set up .venv, execute every notebook and build the HTML book in _build/html"
	@echo "make export  regenerate shared/tinyqwen/ from the notebooks (nbdev)"
	@echo "make lint    ruff on the package, tests and benchmarks"
	@echo "make student       student editions of every chapter in dist/student/"
	@echo "make book-student  the book with solutions removed, in _build/student-src/_build/html"
	@echo "make student-branch DIR=...  the repository with student editions, as branch student has it"
	@echo "make bench         every benchmark, results in benchmarks/results/latest.{json,md}"
	@echo "make bench-quick   a smaller run (under 5 minutes on 2 CPU cores)"
	@echo "make notebook-times PROFILE=cpu  time every chapter (ci, cpu; gpu: measured on a GPU, else a T4 estimate)"
	@echo "make gpu-check     GPU evidence in one command (under 8 minutes on one GPU)"

$(PY):
	python3 -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

install: $(STAMP)

export: $(STAMP)
	cd notebooks && ../$(VENV)/bin/nbdev-export

test: $(STAMP)
	TINYQWEN_PROFILE=ci HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 OMP_WAIT_POLICY=PASSIVE $(PY) -m pytest -q -ra $(PYTEST_ARGS)

test-fast: $(STAMP)
	TINYQWEN_PROFILE=ci HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 OMP_WAIT_POLICY=PASSIVE $(PY) -m pytest -q -ra -m "not notebook and not browser" $(PYTEST_ARGS)

OFFLINE := TINYQWEN_PROFILE=ci HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 OMP_WAIT_POLICY=PASSIVE

# The published book: built from a staged copy of the sources whose chapters have their hidden
# tests removed (solutions stay, collapsed), executed there under the ci profile. The HTML lands
# in _build/html, the execution cache in _build/.jupyter_cache, MathJax (npm) in _build/vendor.
book: $(STAMP)
	$(PY) -m tinyqwen.course stage-book --out _build/book-src
	$(OFFLINE) $(VENV)/bin/jupyter-book build _build/book-src --path-output . $(BOOK_FLAGS)

book-clean:
	rm -rf _build

# Exported modules keep the notebooks' formatting; the format check covers hand-written code.
lint: $(STAMP)
	$(VENV)/bin/ruff check shared tests benchmarks
	$(VENV)/bin/ruff format --check tests benchmarks $(addprefix shared/tinyqwen/,runtime.py sources.py course.py checks.py records.py grading.py generate.py)

clean:
	rm -rf _build dist .pytest_cache

.PHONY: student book-student student-branch bench bench-quick notebook-times gpu-check
student: $(STAMP)
	$(PY) -m tinyqwen.course student notebooks/[0-9][0-9]_*.ipynb --out dist/student

book-student: $(STAMP)
	$(PY) -m tinyqwen.course stage-student-book --out _build/student-src
	$(OFFLINE) $(VENV)/bin/jupyter-book build _build/student-src $(BOOK_FLAGS)
	@echo "student book: _build/student-src/_build/html/index.html"

# The tree that branch `student` carries (the publish workflow commits and force-pushes it).
DIR ?= _build/student-branch
student-branch: $(STAMP)
	$(PY) -m tinyqwen.course stage-student-branch --out $(DIR)

bench: $(STAMP)
	$(PY) -m benchmarks.run

bench-quick: $(STAMP)
	$(PY) -m benchmarks.run --quick

# Wall time per chapter and its slowest cells, in benchmarks/results/notebook-times-$(PROFILE).json;
# each chapter's setup cell states its time from there.
PROFILE ?= cpu
notebook-times: $(STAMP)
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 OMP_WAIT_POLICY=PASSIVE $(PY) -m benchmarks.notebook_times --profile $(PROFILE)

gpu-check: $(STAMP)
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(PY) -m benchmarks.gpu_check
