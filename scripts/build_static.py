#!/usr/bin/env python3
"""Build the browser client the hub serves (hub/static/hub.js and hub.d.ts) from its one source,
the npm package in js/packages/client: its core (src/client.js) and its custom elements
(src/elements.js) joined into one module, the elements' import of the core dropped.

    python3 scripts/build_static.py           # write hub/static/hub.js and hub.d.ts
    python3 scripts/build_static.py --check   # exit 1 when they differ from the package's

tests/test_js.py runs the check, so a change made to the package alone (or to the built files
alone) fails the suite until this script has been run.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "js" / "packages" / "client" / "src"
STATIC = ROOT / "hub" / "static"
# The elements' import of the core: one line, which the joined module does not need.
CORE_IMPORT = re.compile(r'^import (type )?\{[^}]*\} from "\./client\.js";\n', re.MULTILINE)
HEADER = (
    "// Built by scripts/build_static.py from js/packages/client/src/{core} and {elements}:\n"
    "// edit those, not this file ({name}, served by the hub at /static/{name}).\n\n"
)


def build() -> dict[str, str]:
    """The files of hub/static that come from the package, by name."""
    files = {}
    for name, core, elements in (
        ("hub.js", "client.js", "elements.js"),
        ("hub.d.ts", "client.d.ts", "elements.d.ts"),
    ):
        joined = (SOURCE / core).read_text() + "\n"
        joined += CORE_IMPORT.sub("", (SOURCE / elements).read_text(), count=1)
        header = HEADER.format(core=core, elements=elements, name=name)
        files[name] = header + joined
    return files


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for name, text in build().items():
        path = STATIC / name
        if path.exists() and path.read_text() == text:
            continue
        if check:
            stale.append(name)
        else:
            path.write_text(text)
            print(f"wrote {path.relative_to(ROOT)}")
    if stale:
        print(
            f"hub/static/{', '.join(stale)} differ from js/packages/client: "
            "run python3 scripts/build_static.py",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
