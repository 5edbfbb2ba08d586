"""Carry a generator's markdown into its executed notebook, outputs kept: `../../.venv/bin/python prose.py nb04.py`.

For a change to prose only. The generator runs with `save` captured, so nothing is written unless every code cell
of the generated notebook equals the executed one's (a code change needs the notebook executed again).

`--code 45,54` also carries the code of those cells (indices in the notebook), for an edit that cannot change what
the cell prints: an added assert that holds on the outputs shown, a constant written as the setting it equals. Say
in the commit why each one cannot; CI executes every notebook again and proves the asserts on its machine.
"""
import os
import runpy
import sys

import nbformat

import common


def main(script, carried=()):
    captured = {}

    def capture(path):
        captured["path"], captured["cells"] = path, list(common.CELLS)
        common.CELLS.clear()

    common.save = capture
    runpy.run_path(script, run_name="__main__")
    executed = nbformat.read(captured["path"], as_version=4)
    new = captured["cells"]
    layout = lambda cells: [(c.cell_type, c.source if c.cell_type == "code" and i not in carried else "")
                            for i, c in enumerate(cells)]
    if layout(new) != layout(executed.cells):
        sys.exit(f"{script}: its cells (their kinds, order or code) differ from {captured['path']}'s: "
                 "execute the notebook instead")
    changed = 0
    for i, (old, cell) in enumerate(zip(executed.cells, new)):
        if (cell.cell_type == "markdown" or i in carried) and old.source != cell.source:
            old.source, changed = cell.source, changed + 1
    if changed:
        nbformat.write(executed, f"{captured['path']}.tmp")  # then renamed, as common.save does
        os.replace(f"{captured['path']}.tmp", captured["path"])
    print(f"{captured['path']}: {changed} cells updated, outputs kept")


if __name__ == "__main__":
    codes = sys.argv[sys.argv.index("--code") + 1] if "--code" in sys.argv else ""
    main(sys.argv[1], {int(i) for i in codes.split(",") if i})
