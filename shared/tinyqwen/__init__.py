"""Build a small Qwen3-like language model from ten concepts, one chapter at a time.

Modules:

- `tinyqwen.checks`: Exercise checks that test the learner's code, and only that.
- `tinyqwen.course`: Course tooling for authors and instructors.
- `tinyqwen.generate`: Write with a trained TinyQwen: ``python -m tinyqwen.generate RUN_OR_CHECKPOINT --prompt "..."``.
- `tinyqwen.grading`: Grade untrusted submissions: ``python -m tinyqwen.course grade SUBMISSIONS --source notebooks``.
- `tinyqwen.records`: Recorded results: what a chapter shows that its profile cannot measure live.
- `tinyqwen.runtime`: Runtime profiles let one notebook run everywhere.
- `tinyqwen.sources`: Text sources for the course: TinyStories, a local file, or offline synthetic stories."""

__version__ = "0.1.0"
