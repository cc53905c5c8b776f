"""Settings and the ``hub`` command: bad values are one clear line, never a traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest

from hub.cli import main
from hub.errors import ConfigError
from hub.settings import Settings


def test_defaults() -> None:
    s = Settings.from_env({})
    assert (s.host, s.port, s.database_url) == ("127.0.0.1", 8000, "sqlite:///hub.db")
    assert (s.create_grace, s.detach_grace, s.retire_ttl, s.coalesce_window) == (
        30,
        10,
        86400,
        0.05,
    )


def test_environment_then_flags() -> None:
    env = {"HUB_DETACH_GRACE": "1.5", "HUB_PORT": "9000", "HUB_COALESCE_WINDOW": "0"}
    s = Settings.from_env(env, port="9100", create_grace=None)
    assert (s.detach_grace, s.port, s.coalesce_window, s.create_grace) == (1.5, 9100, 0, 30)


@pytest.mark.parametrize(
    ("env", "flags", "named"),
    [
        ({"HUB_DETACH_GRACE": "soon"}, {}, "HUB_DETACH_GRACE"),
        ({"HUB_CREATE_GRACE": "-1"}, {}, "HUB_CREATE_GRACE"),
        ({"HUB_RETIRE_TTL": "nan"}, {}, "HUB_RETIRE_TTL"),
        ({"HUB_COALESCE_WINDOW": "inf"}, {}, "HUB_COALESCE_WINDOW"),
        ({"HUB_PORT": "70000"}, {}, "HUB_PORT"),
        ({"HUB_MAX_OUTBOX_BYTES": "0"}, {}, "HUB_MAX_OUTBOX_BYTES"),
        ({"HUB_DATABASE_URL": "mysql://x"}, {}, "HUB_DATABASE_URL"),
        ({"HUB_REDIS_URL": "http://x"}, {}, "HUB_REDIS_URL"),
        ({"HUB_NODE_TTL": "0.1"}, {}, "HUB_NODE_TTL"),
        ({"HUB_LOG_LEVEL": "loud"}, {}, "HUB_LOG_LEVEL"),
        ({"HUB_LOOP": "trio"}, {}, "HUB_LOOP"),
        ({}, {"port": "http"}, "--port"),
        ({"HUB_DETACH_GRACE": "1"}, {"detach_grace": "x"}, "--detach-grace"),
    ],
)
def test_bad_values_name_the_setting(
    env: dict[str, str], flags: dict[str, str], named: str
) -> None:
    with pytest.raises(ConfigError, match=named):
        Settings.from_env(env, **flags)


def test_main_reports_a_bad_setting_with_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--detach-grace", "abc"], environ={}) == 2
    err = capsys.readouterr().err
    assert err.startswith("hub: error: --detach-grace") and "Traceback" not in err


def test_the_installed_command_fails_cleanly_on_a_bad_environment() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "hub", "serve"],
        env={"HUB_CREATE_GRACE": "later", "PATH": ""},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert "HUB_CREATE_GRACE" in proc.stderr and "Traceback" not in proc.stderr


def test_the_settings_page_lists_every_setting() -> None:
    """docs/settings.md names every setting (tests/test_docs.py checks its rows in full)."""
    from dataclasses import fields
    from pathlib import Path

    page = (Path(__file__).resolve().parent.parent / "docs" / "settings.md").read_text()
    for f in fields(Settings):
        assert f"`HUB_{f.name.upper()}`" in page, f.name
