"""Carry a generator's markdown into its executed notebook, outputs kept: `../../.venv/bin/python prose.py nb04.py`.

For a change to prose only. The generator runs with `save` captured, so nothing is written unless every code cell
of the generated notebook equals the executed one's (a code change needs the notebook executed again).
"""
import os
import runpy
import sys

import nbformat

import common


def main(script):
    captured = {}

    def capture(path):
        captured["path"], captured["cells"] = path, list(common.CELLS)
        common.CELLS.clear()

    common.save = capture
    runpy.run_path(script, run_name="__main__")
    executed = nbformat.read(captured["path"], as_version=4)
    new = captured["cells"]
    layout = lambda cells: [(c.cell_type, c.source if c.cell_type == "code" else "") for c in cells]
    if layout(new) != layout(executed.cells):
        sys.exit(f"{script}: its cells (their kinds, order or code) differ from {captured['path']}'s: "
                 "execute the notebook instead")
    changed = 0
    for old, cell in zip(executed.cells, new):
        if cell.cell_type == "markdown" and old.source != cell.source:
            old.source, changed = cell.source, changed + 1
    if changed:
        nbformat.write(executed, f"{captured['path']}.tmp")  # then renamed, as common.save does
        os.replace(f"{captured['path']}.tmp", captured["path"])
    print(f"{captured['path']}: {changed} markdown cells updated, outputs kept")


if __name__ == "__main__":
    main(sys.argv[1])
