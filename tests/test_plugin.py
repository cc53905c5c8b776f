"""The pytest plugin, used the way a project of our users would (through pytester)."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

EXAMPLE = """
async def test_two_viewers(hub_client, hub_url, hub_ws_url):
    assert hub_url.startswith("http://127.0.0.1:") and hub_ws_url.startswith("ws://")
    alice, bob = hub_client(), hub_client()
    ws = await alice.create_workspace("/doc")
    async with alice.connect(ws["id"]) as a, bob.connect(ws["id"]) as b:
        await a.set_session("S1")
        await b.set_session("S1")
        assert (await alice.presence(ws["id"]))["counts"] == {"S1": 2}


def test_server_is_the_url(hub_server, hub_url):
    assert hub_server == hub_url
"""

INI = """
[pytest]
asyncio_mode = auto
asyncio_default_fixture_loop_scope = function
"""


def test_the_fixtures_give_a_working_hub(pytester: pytest.Pytester) -> None:
    pytester.makeini(INI)
    pytester.makepyfile(test_example=EXAMPLE)
    result = pytester.runpytest_subprocess("-q")
    result.assert_outcomes(passed=2)


def test_hub_url_points_the_fixtures_at_an_external_hub(
    pytester: pytest.Pytester, hub_url: str
) -> None:
    pytester.makeini(INI)
    pytester.makepyfile(
        test_external=f"""
def test_uses_the_given_hub(hub_url):
    assert hub_url == "{hub_url}"
"""
        + EXAMPLE
    )
    result = pytester.runpytest_subprocess("-q", f"--hub-url={hub_url}")
    result.assert_outcomes(passed=3)
