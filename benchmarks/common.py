"""What the benchmark scripts share: their command line of size and repeat options.

``options(__doc__, hidden=512, steps=(10, "timed steps"), ...)`` is an ``ArgumentParser`` described
by the script docstring's first line, with one ``--name`` option per keyword (``kv_heads`` ->
``--kv-heads``) typed like its default; a ``(default, help)`` pair adds a help text.  Scripts add
their other options (choices, flags) to it.
"""
import argparse


def options(doc: str, **defaults) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    for name, spec in defaults.items():
        default, text = spec if isinstance(spec, tuple) else (spec, None)
        ap.add_argument("--" + name.replace("_", "-"), type=type(default), default=default, help=text)
    return ap
