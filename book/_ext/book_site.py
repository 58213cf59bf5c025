"""Small fixes to the generated pages, so that a fresh browser shows no console errors.

* sphinx-thebe registers its inline configuration script once per reading pass, and
  Jupyter Book's build emits that event twice: the page then declares the same `const`
  twice and the browser reports a SyntaxError. Identical scripts are kept once here.
* The widget manager typesets labels through MathJax 2's `MathJax.Hub`, which MathJax 3
  lacks (a TypeError on every page with widgets): `mathjax2-hub.js` forwards the calls.
  It is loaded before MathJax's own configuration (priority 500) so it sees every
  object that becomes `window.MathJax`. Hidden properties keep MathJax 3 from reading
  the forwarder as configuration.
"""


def _drop_repeated_scripts(app, pagename, templatename, context, doctree):
    seen, unique = set(), []
    for script in context.get("script_files", []):
        # the same file or inline body (an attribute), whatever priority each copy was given;
        # an inline script has filename None or "" depending on who added it
        key = (str(getattr(script, "filename", script) or ""), tuple(sorted(getattr(script, "attributes", {}).items())))
        if key not in seen:
            seen.add(key)
            unique.append(script)
    context["script_files"] = unique


def setup(app):
    app.add_js_file("mathjax2-hub.js", priority=200)
    app.connect("html-page-context", _drop_repeated_scripts, priority=900)  # after the others add theirs
    return {"parallel_read_safe": True, "parallel_write_safe": True}
