"""Sphinx extension: drop repeated inline <script> entries from each page.

sphinx-thebe 0.3.1 and sphinx-togglebutton register their inline configuration scripts a second
time (once with filename None, once with ''), so Sphinx does not see them as equal; the second
copy re-declares `const THEBE_JS_URL` and the browser reports a SyntaxError on every page.
"""


def _dedupe(app, pagename, templatename, context, doctree):
    seen, unique = set(), []
    for script in context.get("script_files", []):
        attributes = getattr(script, "attributes", {})
        key = (str(getattr(script, "filename", script) or ""), tuple(sorted(attributes.items())))
        if key not in seen:
            seen.add(key)
            unique.append(script)
    context["script_files"] = unique


def setup(app):
    app.connect("html-page-context", _dedupe, priority=900)  # after the themes add theirs
    return {"parallel_read_safe": True, "parallel_write_safe": True}
