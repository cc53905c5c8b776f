"""The docs held to the code, so that they cannot drift from it unnoticed.

- docs/settings.md against ``hub.settings.Settings`` and ``hub serve``'s flags: every setting has
  a row, every row is a setting, the flag and the default are the code's.
- Every relative link of README.md and docs/**/*.md points to a file that exists, and a link to
  a heading of a Markdown file (``page.md#heading``) to a heading that exists.
- The README stays a five-minute read, and the error tree drawn in hub/errors.py's docstring
  names every error the module exports.
"""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

import pytest

import hub.errors
from hub.cli import main
from hub.settings import _PARSERS, Settings

ROOT = Path(__file__).resolve().parent.parent
SETTINGS_DOC = ROOT / "docs" / "settings.md"


def _pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def _prose(text: str) -> str:
    """The text with fenced code blocks blanked (their lines kept, so line numbers hold)."""
    out, fenced = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            out.append("")
        else:
            out.append("" if fenced else line)
    return "\n".join(out)


# -- settings --------------------------------------------------------------------------------


def _settings_rows(text: str) -> dict[str, tuple[str, str]]:
    """``HUB_X`` -> (flag cell, default cell) of every four-column row of a settings page."""
    rows: dict[str, tuple[str, str]] = {}
    for line in _prose(text).splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 4 or not re.fullmatch(r"`HUB_[A-Z_]+`", cells[1]):
            continue
        env = cells[1].strip("`")
        assert env not in rows, f"{env} has two rows"
        rows[env] = (cells[0], cells[2])
    return rows


def _missing_and_extra(rows: dict[str, tuple[str, str]]) -> tuple[list[str], list[str]]:
    """Settings without a row, and rows that are no setting."""
    names = {"HUB_" + f.name.upper() for f in fields(Settings)}
    return sorted(names - rows.keys()), sorted(rows.keys() - names)


def _wrong_defaults(rows: dict[str, tuple[str, str]]) -> list[str]:
    """A default cell is ``unset`` (the setting's default is empty) or starts with a value in
    backquotes, which the setting's own parser must read as the dataclass default."""
    wrong, defaults = [], Settings()
    for f in fields(Settings):
        cell = rows["HUB_" + f.name.upper()][1]
        default = getattr(defaults, f.name)
        if cell.startswith("unset"):
            if default not in (None, ()):
                wrong.append(f"{f.name}: documented unset, default {default!r}")
            continue
        shown = re.match(r"`([^`]+)`", cell)
        if shown is None:
            wrong.append(f"{f.name}: no default in {cell!r}")
        elif _PARSERS[f.name]("docs/settings.md", shown.group(1)) != default:
            wrong.append(f"{f.name}: documented {shown.group(1)}, default {default!r}")
    return wrong


def _serve_flags(capsys: pytest.CaptureFixture[str]) -> set[str]:
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    return set(re.findall(r"--[a-z][a-z-]*", capsys.readouterr().out))


def test_every_setting_has_its_row_and_every_row_is_a_setting() -> None:
    assert _missing_and_extra(_settings_rows(SETTINGS_DOC.read_text())) == ([], [])


def test_each_row_names_the_flag_hub_serve_has(capsys: pytest.CaptureFixture[str]) -> None:
    rows, flags = _settings_rows(SETTINGS_DOC.read_text()), _serve_flags(capsys)
    assert "--detach-grace" in flags
    for f in fields(Settings):
        flag = "--" + f.name.replace("_", "-")
        cell = rows["HUB_" + f.name.upper()][0]
        assert cell == (f"`{flag}`" if flag in flags else "(environment only)"), f.name


def test_each_row_gives_the_default_of_the_code() -> None:
    assert _wrong_defaults(_settings_rows(SETTINGS_DOC.read_text())) == []


def test_the_settings_checks_catch_a_drift() -> None:
    """The checks above can fail: a changed default, a renamed row and a dropped row are each
    caught on a copy of the page."""
    text = SETTINGS_DOC.read_text()
    row = "| `--detach-grace` | `HUB_DETACH_GRACE` | `10` |"
    assert row in text
    changed = _settings_rows(text.replace(row, row.replace("`10`", "`11`")))
    assert _wrong_defaults(changed) == ["detach_grace: documented 11, default 10.0"]
    renamed = _settings_rows(text.replace("`HUB_DETACH_GRACE`", "`HUB_DETACH_GRACES`"))
    assert _missing_and_extra(renamed) == (["HUB_DETACH_GRACE"], ["HUB_DETACH_GRACES"])
    dropped = _settings_rows(text.replace(row, "| dropped |"))
    assert _missing_and_extra(dropped) == (["HUB_DETACH_GRACE"], [])


def test_the_protocols_table_of_limits_gives_the_defaults_of_the_code() -> None:
    """docs/protocol.md section 11 repeats the defaults a client can observe on the wire."""
    page = (ROOT / "docs" / "protocol.md").read_text()
    section = page.split("## 11. Limits and defaults", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([a-z_]+)` \| ([^|]+) \|", section, re.M)
    assert len(rows) >= 10
    defaults = Settings()
    for name, shown in rows:
        default = getattr(defaults, name)  # an AttributeError names a setting that is gone
        if default == ():
            assert shown.strip() == "loopback pages", name
        else:
            assert float(shown.strip().removesuffix(" s")) == default, name


def test_every_hub_variable_the_code_reads_is_documented() -> None:
    """A ``HUB_*`` name in the package's source is a setting or a row of "Other environment
    variables"; and each of those rows is read somewhere in the package."""
    source = "\n".join(
        p.read_text() for p in (ROOT / "hub").rglob("*") if p.suffix in (".py", ".c", ".lua")
    )
    used = set(re.findall(r"\bHUB_[A-Z][A-Z_]*[A-Z]\b", source))
    doc = SETTINGS_DOC.read_text()
    others = set(re.findall(r"^\| `(HUB_[A-Z_]+)` \|", doc.split("## Other environment")[1], re.M))
    settings = set(_settings_rows(doc))
    assert sorted(used - settings - others) == []
    assert sorted(others - used) == []


# -- links -----------------------------------------------------------------------------------

_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def _slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    for line in _prose(page.read_text()).splitlines():
        m = re.match(r"#{1,6} (.+)", line)
        if m:
            slug = _slug(m.group(1))
            n = seen.get(slug, 0)
            seen[slug] = n + 1
            anchors.add(slug if n == 0 else f"{slug}-{n}")
    return anchors


def _broken_links(pages: list[Path]) -> list[str]:
    broken = []
    for page in pages:
        for number, line in enumerate(_prose(page.read_text()).splitlines(), 1):
            for target in _LINK.findall(line):
                if re.match(r"[a-z][a-z0-9+.-]*:", target):
                    continue  # http:, https:, mailto: ...
                path, _, anchor = target.partition("#")
                where = f"{page.relative_to(ROOT)}:{number}: {target}"
                file = (page.parent / path).resolve() if path else page
                if not file.exists():
                    broken.append(where + " (no such file)")
                elif anchor and file.suffix == ".md" and anchor not in _anchors(file):
                    broken.append(where + " (no such heading)")
    return broken


def test_every_relative_link_of_the_docs_resolves() -> None:
    assert _broken_links(_pages()) == []


def test_the_link_check_finds_a_broken_file_and_a_broken_heading(tmp_path: Path) -> None:
    page = ROOT / "docs" / "_link_check_probe.md"
    page.write_text(
        "[ok](protocol.md#7-close-codes) [file](nowhere.md) [heading](protocol.md#no-such)\n"
        "```\n[in code](ignored.md)\n```\n# A heading: `here`\n[self](#a-heading-here)\n"
    )
    try:
        broken = _broken_links([page])
    finally:
        page.unlink()
    assert [b.split(": ", 1)[1] for b in broken] == [
        "nowhere.md (no such file)",
        "protocol.md#no-such (no such heading)",
    ]


# -- the README and the error tree -----------------------------------------------------------


def test_the_readme_is_a_five_minute_read() -> None:
    assert len((ROOT / "README.md").read_text().splitlines()) <= 200


def test_the_error_tree_drawing_names_every_error() -> None:
    drawing = hub.errors.__doc__ or ""
    for name in hub.errors.__all__:
        assert re.search(rf"^ *(?:[│├└─ ]+ )?{name}(?: |$)", drawing, re.M), name
