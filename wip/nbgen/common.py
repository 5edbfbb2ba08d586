"""Helpers that write a notebook as a list of markdown/code cells (the generators in wip/nbgen; not run by tests)."""
import os
import textwrap

import nbformat

CELLS = []


def md(text):
    CELLS.append(nbformat.v4.new_markdown_cell(textwrap.dedent(text).strip("\n")))


def code(text):
    CELLS.append(nbformat.v4.new_code_cell(textwrap.dedent(text).strip("\n")))


def save(path):
    nb = nbformat.v4.new_notebook()
    nb.cells = list(CELLS)
    nb.metadata = {
        "kernelspec": {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"},
        "language_info": {"name": "python"},
    }
    nbformat.validate(nb)
    nbformat.write(nb, f"{path}.tmp")  # then renamed: an error mid-write leaves the notebook whole
    os.replace(f"{path}.tmp", path)
    lines = sorted(len(c.source.splitlines()) for c in nb.cells if c.cell_type == "code")
    print(f"{path}: {len(nb.cells)} cells, {len(lines)} code, median code lines {lines[len(lines) // 2]}, "
          f"max {lines[-1]}")
    CELLS.clear()
