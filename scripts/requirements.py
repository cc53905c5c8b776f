"""Print the requirements of the project with its dev extra, one a line (the project itself,
and the extras it names of itself, expanded), from pyproject.toml: for scripts/lock and the
separate venvs of ``scripts/test --newest`` and ``--python``, which install what the project
needs without installing the project (the tests run the tree's own code). With ``compat``: the
project's own requirements and only the dev ones that scripts/compat's subset imports."""

import re
import sys
import tomllib
from pathlib import Path

project = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())[
    "project"
]
extras = project["optional-dependencies"]


def expand(requirements: list[str]) -> list[str]:
    out = []
    for requirement in requirements:
        own = re.fullmatch(r"presence-hub\[([^\]]+)\]", requirement.strip())
        if own is None:
            out.append(requirement)
        else:
            for extra in own.group(1).split(","):
                out += expand(extras[extra.strip()])
    return out


# What the fast-path checks and the short end-to-end subset of scripts/compat import (the dev
# tools, the browser and the schema fuzzer are not needed there, and are most of the install).
COMPAT = ("pytest", "pytest-asyncio", "httpx", "wsproto", "uvloop", "redis")


def name(requirement: str) -> str:
    return re.split(r"[\[<>=!~ ;]", requirement.strip(), maxsplit=1)[0].lower()


extra = sys.argv[1] if len(sys.argv) > 1 else "dev"
if extra == "compat":
    dev = [r for r in expand(extras["dev"]) if name(r) in COMPAT]
    chosen = expand(project["dependencies"]) + dev
else:
    chosen = expand(project["dependencies"] + extras[extra])
print("\n".join(dict.fromkeys(chosen)))
