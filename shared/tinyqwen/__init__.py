"""Build a small Qwen3-like language model from ten concepts, one chapter at a time.

Modules:

- `tinyqwen.course`: Course tooling for authors and instructors.
- `tinyqwen.runtime`: Runtime profiles let one notebook run everywhere.
- `tinyqwen.sources`: Text sources for the course: TinyStories, a local file, or offline synthetic stories."""

__version__ = "0.1.0"
