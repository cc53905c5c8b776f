"""Mutation check of the Redis scripts: does the replay (tests/test_replay.py) catch a broken one?

    .venv/bin/python scripts/mutate_lua.py                      # every mutation, 100 histories
    .venv/bin/python scripts/mutate_lua.py --examples 300 --only expire release

Each mutation changes one state-changing branch of one Lua transition (hub/backends/lua/): a
comparison flipped, a write dropped, a tombstone or retirement check skipped, a version that
does not move, a deadline off by a step. The sources are never touched: the hub package is
copied to a temporary folder, the mutation is applied to the copy, and ``scripts/replay.py
--kind redis`` runs (a copy of it, beside the copy of the hub, with the checkout's tests) on
the same seed for every mutation. Prints one line per mutation, then the table
"mutation -> caught / survived" (ERROR: the replay could not run, STALE: the mutation's text is
no longer in the script). A mutation marked ``equivalent`` cannot change what any caller of
the backend sees in the replay's topology (one Redis, no Cluster, the change feed not read);
its note says why. A mutation marked ``covered`` is out of the replay's reach (a call reaching
Redis late, an arm between a timer coming due and its sweep) and is caught by the test named;
``--covered`` runs that test on the mutated copy, and checks that it fails. Exits 1 when a
mutation neither equivalent nor covered survived.

    .venv/bin/python scripts/mutate_lua.py --covered          # the covering tests, mutated
    .venv/bin/python scripts/mutate_lua.py --only _index \\
        --command -m pytest tests/test_timer_index.py

``--command`` runs any command (python's arguments) in the mutated copy instead of the replay:
caught when it exits non-zero.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Mutation:
    """Replace ``old`` (found exactly once) by ``new`` in the Lua file ``script``."""

    name: str
    script: str
    old: str
    new: str
    equivalent: str = ""  # why no caller can tell (empty: it must be caught)
    covered: str = ""  # the test that catches it where the replay cannot reach (pytest node id)


M = Mutation
MUTATIONS = [
    # -- _lib.lua: the shared transitions ---------------------------------------------------
    M("remove_claim keeps the claim", "_lib.lua",
      "  redis.call('HDEL', CLAIMS, client)\n  redis.call('ZREM', TIMERS, client)",
      "  redis.call('ZREM', TIMERS, client)"),
    M("remove_claim leaves no tombstone", "_lib.lua",
      "  if not tomb then return false end", "  if true then return false end"),
    M("remove_claim keeps its user's profile", "_lib.lua",
      "    redis.call('HDEL', PEOPLE, 'm\\n' .. claim.u, 'p\\n' .. claim.u)",
      "    redis.call('HDEL', PEOPLE, 'm\\n' .. claim.u)"),
    M("tick does not move the version clock", "_lib.lua",
      "return int(redis.call('HINCRBY', META, 'ver', 1))",
      "return int(redis.call('HINCRBY', META, 'ver', 0))"),
    M("merge takes a session of the same version", "_lib.lua",
      "  if sv > version(claim.sv) then", "  if sv >= version(claim.sv) then",
      equivalent="each write of a session takes a new tick, so an equal version "
      "names the same write: the session taken is the one the claim has"),
    M("merge never takes a released mark", "_lib.lua",
      "  if rv > version(claim.rv) then", "  if false then"),
    M("merge leaves the version clock behind", "_lib.lua",
      "  if top > ver then redis.call('HSET', META, 'ver', int(top)) end", "",
      equivalent="a memory or tombstone carries only versions this Redis gave, "
      "never above its clock; a Redis restarted empty restarts the clock at its TIME in "
      "microseconds (ensure_workspace), above every version given before unless more than "
      "a million were given a second or Redis's clock went back, which no test reaches "
      "(test_backend's empty-Redis tests pass with it: --command)"),
    M("predates a memory with no birth", "_lib.lua",
      "  return cb > 0 and cb <= version(tomb.cb)", "  return cb <= version(tomb.cb)",
      equivalent="every node's memory learns its claim's birth at its attach, so a memory "
      "with none is never re-asserted in a history"),
    M("predates only a strictly older claim", "_lib.lua",
      "  return cb > 0 and cb <= version(tomb.cb)",
      "  return cb > 0 and cb < version(tomb.cb)"),
    M("a session written back never merges", "_lib.lua",
      "  if tomb.msv and cb < version(tomb.msv) then known.s, known.sv = tomb.ms, tomb.msv end\n",
      "",
      covered="tests/test_heal.py::test_every_heal_reaches_the_truth_on_the_scripted_histories"),
    M("merge never takes an earlier birth", "_lib.lua",
      "  if cb > 0 and (version(claim.cb) == 0 or cb < version(claim.cb)) then",
      "  if false then",
      covered="tests/test_heal.py::test_every_heal_reaches_the_truth_on_the_scripted_histories"),
    M("the last close of a released claim starts grace", "_lib.lua",
      "    if claim.r == 1 then\n      return remove_claim(client, claim, true)",
      "    if claim.r == 2 then\n      return remove_claim(client, claim, true)"),
    M("a grace claim stays marked held", "_lib.lua", "    claim.h = 0\n", ""),
    M("the grace is a millisecond longer", "_lib.lua",
      "    local deadline = now + grace_ms\n", "    local deadline = now + grace_ms + 1\n"),
    M("the first stream leaves the timer armed", "_lib.lua",
      "  if before == 0 and claim.n > 0 then\n    redis.call('ZREM', TIMERS, client)\n",
      "  if before == 0 and claim.n > 0 then\n",
      equivalent="expire.lua removes only a claim without streams, and the claim's next "
      "timer (its grace) is the same member, re-armed by ZADD: the stale entry fires into "
      "nothing or is moved"),
    M("a count at 0 stays in the counts", "_lib.lua",
      "  if n <= 0 then redis.call('HDEL', COUNTS, session) end",
      "  if n < 0 then redis.call('HDEL', COUNTS, session) end"),
    M("a user count at 0 stays", "_lib.lua",
      "    if u <= 0 then redis.call('HDEL', USERS, session) end",
      "    if u < 0 then redis.call('HDEL', USERS, session) end"),
    M("commit ignores a change of online alone", "_lib.lua",
      "  local moved = change.moved or change.online ~= change.online_before or",
      "  local moved = change.moved or"),
    M("occupied again on a return within the delay", "_lib.lua",
      "    elseif not state then\n      redis.call('HSET', HOOKS, field, 'o')",
      "    else\n      redis.call('HSET', HOOKS, field, 'o')"),
    M("a return within the delay keeps the vacated timer", "_lib.lua",
      "      redis.call('ZREM', TIMERS, '\\t' .. field)\n", "",
      equivalent="the stale vacated timer fires into nothing (expire.lua checks the "
      "state is vacating), and a new vacate re-arms the same member"),
    M("the vacated delay is a second longer", "_lib.lua",
      "    local deadline = now_ms() + VACATED_MS\n",
      "    local deadline = now_ms() + VACATED_MS + 1000\n"),
    M("the workspace never vacates", "_lib.lua",
      "  if change.online ~= change.online_before then occupancy('', change.online, s) end",
      "  if change.online ~= change.online_before and change.online > 0 then "
      "occupancy('', change.online, s) end"),
    M("a retirement that ended still refuses", "_lib.lua",
      "  if tonumber(untl) > now then return true end", "  if true then return true end",
      equivalent="a retirement lasts a day, past the end of every history; its end is "
      "Redis's key expiry (hub:retired:*), real time that the history's clock does not move"),
    M("a retirement in the workspace never refuses", "_lib.lua",
      "  if tonumber(untl) > now then return true end", "  if false then return true end"),
    M("the first stream of a user does not arrive", "_lib.lua",
      "    redis.call('ZADD', ARRIVE, 0, arrival_member(session, arrival, user))", ""),
    M("a call reaching Redis past its deadline is done", "_lib.lua",
      "    if now_ms() > tonumber(string.sub(last, 3)) then", "    if false then",
      covered="tests/test_backend.py::"
      "test_a_write_answered_unavailable_that_reaches_redis_late_is_refused"),
    M("a profile is never replaced", "_lib.lua",
      "  redis.call('HSET', PEOPLE, field, profile)\n",
      "  if redis.call('HEXISTS', PEOPLE, field) == 0 then "
      "redis.call('HSET', PEOPLE, field, profile) end\n"),
    # -- the scripts ------------------------------------------------------------------------
    M("attach: another user's client is let in", "attach.lua",
      "if claim.b == 1 and (claim.u or '') ~= user then", "if false then"),
    M("attach: the user is bound at every stream", "attach.lua",
      "if claim.b ~= 1 then bind(claim, user) end", "bind(claim, user)"),
    M("attach: the workspace's retirements are not read", "attach.lua",
      "if is_retired(client, now_ms()) then", "if false then",
      equivalent="outside a Cluster index_claim reads the client's hub:retired key in the "
      "same script, which a retire sets before the workspace's record"),
    M("detach: a stream the node does not hold detaches", "detach.lua",
      "if mine == 0 or not claim then", "if not claim then"),
    M("hold: the released mark stays", "hold.lua", "claim.r = 0\n", ""),
    M("hold: no new version of the released mark", "hold.lua", "claim.rv = tick()\n", ""),
    M("hold: a claim without streams is not held", "hold.lua", "  claim.h = 1\n", ""),
    M("hold: the hold is a second longer", "hold.lua",
      "  deadline = now_ms() + tonumber(ARGV[3])",
      "  deadline = now_ms() + tonumber(ARGV[3]) + 1000"),
    M("release: a claim without streams waits for a close", "release.lua",
      "  if claim.n > 0 then\n    save_claim(client, claim)",
      "  if claim.n >= 0 then\n    save_claim(client, claim)"),
    M("release: no new version of the released mark", "release.lua",
      "  claim.rv = tick()\n", ""),
    M("release: a claim gone leaves its tombstone unmarked", "release.lua",
      "tomb.r, tomb.rv = 1, tick()", "tomb.rv = tick()"),
    M("release: a claim gone marks no tombstone", "release.lua",
      "redis.call('HSET', GONE, client, cjson.encode(tomb))", ""),
    M("retire: an attached claim's count stays", "retire.lua",
      "if claim.n > 0 then count(claim.s, -1, claim.u) end", ""),
    M("retire: the claim stays", "retire.lua", "remove_claim(client, claim, false)", ""),
    M("retire: the node's streams stay", "retire.lua",
      "  redis.call('HDEL', STREAMS, node .. '|' .. client)", "",
      equivalent="the node's field only counts its streams of a claim; a retired client has "
      "none and gets none while retired (a day), and a re-assertion drops the field"),
    M("retire: the workspace does not record it", "retire.lua",
      "redis.call('HSET', RETIRED, client, now_ms() + tonumber(ARGV[4]))", ""),
    M("set_session: a first set of the same session takes no version", "set_session.lua",
      "if claim.s ~= session or version(claim.sv) == 0 then", "if claim.s ~= session then"),
    M("set_session: the session takes no version", "set_session.lua",
      "  claim.sv = tick()\n", ""),
    M("set_session: the counts do not move", "set_session.lua",
      "  if claim.s ~= session then switch(client, claim, session) end",
      "  if claim.s ~= session then claim.s = session end"),
    M("set_profile: a claim in grace takes a profile", "set_profile.lua",
      "if not claim or claim.n == 0 then", "if not claim then"),
    M("set_streams: a retired client comes back", "set_streams.lua",
      "  if is_retired(client, now) then", "  if false then"),
    M("set_streams: a claim brought back ignores its tombstone", "set_streams.lua",
      "      merge(client, claim, tomb)\n      marked(", "      marked("),
    M("set_streams: the tombstone outlives the claim brought back", "set_streams.lua",
      "      redis.call('HDEL', GONE, client)\n", "",
      equivalent="the claim brought back merged that tombstone, so holds every field at "
      "its version or a newer one, and merge takes only newer ones: while the claim stands "
      "the tombstone left (its timer is still removed) changes nothing, and every end of "
      "the claim replaces it (remove_claim) or deletes it (retire, remove_workspace)"),
    M("set_streams: a standing claim always merges its tombstone", "set_streams.lua",
      "      local changed = predates(recalled, tomb) and merge(client, claim, tomb)",
      "      local changed = merge(client, claim, tomb)"),
    M("set_streams: a standing claim never merges its tombstone", "set_streams.lua",
      "      local changed = predates(recalled, tomb) and merge(client, claim, tomb)",
      "      local changed = false"),
    M("set_streams: the node's memory is not merged", "set_streams.lua",
      "  local merged = target > 0 and merge(client, claim, recalled)",
      "  local merged = false"),
    M("set_streams: a claim brought back counts the node's old streams", "set_streams.lua",
      "    delta = target  -- whatever", "    -- whatever",
      equivalent="a node's field of a client exists only while its claim does (every "
      "script that moves a field moves the claim's streams by as much; a claim ends without "
      "streams, or in retire, which deletes the fields; a Redis that lost data lost both, "
      "one hash tag): a claim found gone has no old streams, and target - 0 = target"),
    M("set_streams: a profile of the memory is not restored", "set_streams.lua",
      "      profile = recalled.p or ''", "      profile = ''"),
    M("expire: a timer due this instant waits", "expire.lua",
      "ZRANGEBYSCORE', TIMERS, '-inf', now_ms())", "ZRANGEBYSCORE', TIMERS, '-inf', now_ms() - 1)"),
    M("expire: an expired claim leaves no tombstone", "expire.lua",
      "      remove_claim(member, claim, true)", "      remove_claim(member, claim, false)"),
    M("expire: an attached claim expires", "expire.lua",
      "    if claim and claim.n == 0 then", "    if claim then",
      equivalent="no attached claim has a timer: hold and move_streams arm one only at 0 "
      "streams, and the first stream removes it (move_streams). This check and that removal "
      "guard each other: each mutation alone is equivalent, see 'the first stream leaves "
      "the timer armed'"),
    M("expire: tombstones never go", "expire.lua",
      "    redis.call('HDEL', GONE, string.sub(member, 2))", ""),
    M("expire: a vacated timer of an occupied session fires", "expire.lua",
      "    if redis.call('HGET', HOOKS, field) == 'v' then", "    if true then",
      equivalent="a vacated timer exists only while its session is vacating: a return removes it"),
    M("expire: the vacated event names a later seq", "expire.lua",
      "local s = seq()\n", "local s = seq() + 1\n"),
    M("expire: the workspace vacates before its sessions", "expire.lua",
      "for _, session in ipairs(vacated) do emit('session_vacated', session, s) end\n"
      "if workspace then emit('workspace_vacated', nil, s) end",
      "if workspace then emit('workspace_vacated', nil, s) end\n"
      "for _, session in ipairs(vacated) do emit('session_vacated', session, s) end"),
    M("due: a workspace due this instant waits", "due.lua",
      "'-inf', now, 'WITHSCORES'", "'-inf', now - 1, 'WITHSCORES'"),
    M("index: an earlier deadline does not lower the entry", "_index.lua",
      "  if deadline < score then", "  if false then"),
    M("index: an entry already due is moved to the later deadline", "_index.lua",
      "    redis.call('ZADD', index, score - 1, workspace)",
      "    redis.call('ZADD', index, deadline, workspace)"),
    M("reindex: the entry is not moved to the next deadline", "reindex.lua",
      "    redis.call('ZADD', KEYS[1], next_deadline, ARGV[1])", "",
      equivalent="an entry left at a past deadline is due at every sweep (expire.lua "
      "runs for nothing) and is replaced by any timer armed later (index_timer): only extra work"),
]  # fmt: skip


def lua_file(hub: Path, script: str) -> Path:
    """The Lua file of that name in a copy of the hub package (wherever the backend keeps
    its ``lua`` folder)."""
    (found,) = [p for p in hub.rglob(script) if p.parent.name == "lua"]
    return found


def replay_command(examples: int, seed: int) -> list[str]:
    """The replay on Redis, in the copy: the scripted histories, then ``examples`` random ones."""
    return [
        "scripts/replay.py", "--kind", "redis",
        "--examples", str(examples), "--seed", str(seed), "--no-shrink",
    ]  # fmt: skip


def test_command(test: str) -> list[str]:
    """One test of the checkout's suite, run against the copy's (mutated) hub."""
    return ["-m", "pytest", "-x", "-q", "-p", "no:randomly", "-p", "no:cacheprovider", test]


def run(mutation: Mutation, tmp: Path, command: list[str], timeout: float) -> str:
    """Apply one mutation to the copy in ``tmp``, run ``command`` (python's arguments) there,
    put the copy back; ``caught`` (the command failed), ``survived``, ``ERROR`` (the replay
    could not run) or ``STALE``."""
    path = lua_file(tmp / "hub", mutation.script)
    original = path.read_text()
    if original.count(mutation.old) != 1:
        return "STALE"
    path.write_text(original.replace(mutation.old, mutation.new))
    try:
        env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": str(tmp)}
        try:
            done = subprocess.run(
                [sys.executable, *command],
                cwd=tmp,
                env=env,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            return "ERROR"
        if done.returncode == 0:
            return "survived"
        if command[0] != "scripts/replay.py" or (done.returncode == 1 and "FAILED" in done.stdout):
            return "caught"
        sys.stderr.write(done.stdout[-2000:] + done.stderr[-2000:])
        return "ERROR"
    finally:
        path.write_text(original)


def copy_checkout(tmp: Path) -> None:
    """The hub package copied (it is mutated), scripts/replay.py and the test settings
    (pyproject.toml) copied beside it (so that they import that copy), and the checkout's
    tests linked."""
    shutil.copytree(ROOT / "hub", tmp / "hub", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "replay.py", tmp / "scripts" / "replay.py")
    shutil.copy(ROOT / "pyproject.toml", tmp / "pyproject.toml")
    (tmp / "tests").symlink_to(ROOT / "tests", target_is_directory=True)


def mutate(
    mutations: list[Mutation],
    examples: int,
    seed: int,
    timeout: float = 600.0,
    command: list[str] | None = None,
) -> dict[str, str]:
    """Run each mutation under the replay (or ``command``, or with ``command == []`` its
    covering test); its outcome by name."""
    outcomes: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="hub-mutate-") as folder:
        tmp = Path(folder)
        copy_checkout(tmp)
        for mutation in mutations:
            if command == []:
                argv = test_command(mutation.covered)
            else:
                argv = command or replay_command(examples, seed)
            started = time.monotonic()
            outcome = run(mutation, tmp, argv, timeout)
            outcomes[mutation.name] = outcome
            took = time.monotonic() - started
            print(f"{mutation.script:16} {mutation.name:62} {outcome} ({took:.1f} s)", flush=True)
    return outcomes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=100, help="histories per mutation")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--only", nargs="*", default=[], help="scripts or names containing")
    parser.add_argument(
        "--covered", action="store_true", help="run each covered mutation's test, not the replay"
    )
    parser.add_argument(
        "--command", nargs=argparse.REMAINDER, help="python's arguments to run, not the replay"
    )
    args = parser.parse_args(argv)
    chosen = [
        m
        for m in MUTATIONS
        if (not args.only or any(w in m.script + m.name for w in args.only))
        and (m.covered or not args.covered)
    ]
    what = (
        "each under the test that covers it"
        if args.covered
        else f"each under: python {' '.join(args.command)}"
        if args.command
        else f"{args.examples} histories each (and the scripted ones), seed {args.seed}"
    )
    print(f"{len(chosen)} mutations, {what}")
    command = [] if args.covered else args.command
    outcomes = mutate(chosen, args.examples, args.seed, command=command)
    print("\nmutation -> outcome")
    bad = 0
    for m in chosen:
        outcome = outcomes[m.name]
        note = f"  (equivalent: {m.equivalent})" if m.equivalent else ""
        if m.covered and not args.covered:
            note = f"  (out of the replay's reach; caught by {m.covered}: see --covered)"
        print(f"{m.script}: {m.name} -> {outcome}{note}")
        marked = bool(m.equivalent or m.covered) and not (args.covered or args.command)
        if outcome != "caught" and not (outcome == "survived" and marked):
            bad += 1
    caught = sum(o == "caught" for o in outcomes.values())
    excused = sum(
        outcomes[m.name] == "survived" and bool(m.equivalent or m.covered) for m in chosen
    )
    print(
        f"\n{len(chosen)} mutations: {caught} caught, {excused} survived as marked "
        f"(equivalent or covered), {bad} need a look"
    )
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
