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


async def test_people(hub_client):
    ana_tab1, ana_tab2, bo = hub_client(user_id="ana"), hub_client(user_id="ana"), hub_client()
    ws = await bo.create_workspace("/people")
    async with ana_tab1.connect(ws["id"]) as a1, ana_tab2.connect(ws["id"]) as a2:
        async with bo.connect(ws["id"]) as b:
            await b.watch("S1")
            await a1.set_profile({"name": "Ana"})
            await a1.set_session("S1")
            await a2.set_session("S1")
            async for update in b:
                if [v["clients"] for v in b.viewers["S1"].values()] == [2]:
                    break
            assert b.viewers["S1"]["ana"]["profile"] == {"name": "Ana"}
            presence = await bo.presence(ws["id"])
            assert (presence["counts"], presence["users"]) == ({"S1": 2}, {"S1": 1})
            assert (await bo.viewers(ws["id"], "S1"))["total"] == 1
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
    result.assert_outcomes(passed=3)


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
    result.assert_outcomes(passed=4)
