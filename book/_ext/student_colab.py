"""Sphinx extension: the rocket menu's Colab button opens the student edition.

sphinx-book-theme builds the Colab launch link as
``{colab_url}/github/{org}/{repo}/blob/{branch}/{path}`` with ``branch`` taken from
``html_theme_options.repository_branch`` (Jupyter Book's ``repository.branch``). That branch also
names what the setup cells install and where an edit or source link points, so it stays ``main``;
this extension rewrites only the Colab link, to the branch the publish workflow fills with student
editions (``tinyqwen.course.STUDENT_BRANCH``), the same address as each chapter's Colab badge.
"""

from __future__ import annotations

import re

_COLAB_BLOB = re.compile(r"^(?P<head>.+/github/[^/]+/[^/]+/blob/)[^/]+/(?P<path>.+)$")


def _student_colab(app, pagename, templatename, context, doctree):
    from tinyqwen.course import STUDENT_BRANCH

    colab = app.config.html_theme_options.get("launch_buttons", {}).get("colab_url", "")
    if not colab:
        return
    for group in context.get("header_buttons", []):
        for button in group.get("buttons", []):
            url = button.get("url", "")
            match = _COLAB_BLOB.match(url) if url.startswith(colab.rstrip("/")) else None
            if match:
                button["url"] = f"{match['head']}{STUDENT_BRANCH}/{match['path']}"


def setup(app):
    # after sphinx-book-theme's add_launch_buttons (priority 501); the page renders after both
    app.connect("html-page-context", _student_colab, priority=600)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
