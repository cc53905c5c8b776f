"""The Lua scripts: which keys each one touches, how they are loaded, what they answer.

Every claim transition is one script (``hub/backends/lua/<name>.lua``), run after a prelude:

- the workspace scripts (:data:`WORKSPACE_SCRIPTS`) after ``_index.lua`` + ``_lib.lua``, with
  three constants put before them: ``PUBLISH`` (``SPUBLISH`` on a Redis Cluster: sharded
  pub/sub), ``VACATED_MS`` / ``HOOK_MAX`` (webhooks: the vacated delay, -1 when off, and the
  outbox bound) and ``TOMB_MS`` (how long an ended claim's last state is kept);
- the timer index scripts (:data:`INDEX_SCRIPTS`) after ``_index.lua``;
- the webhook outbox scripts (:data:`OUTBOX_SCRIPTS`) after ``_outbox.lua``.

The key table (``lua/_lib.lua`` documents each key's type and content): a workspace script
gets the twelve keys of its workspace (:func:`workspace_keys`), which share the hash tag
``{workspace_id}`` and so one Cluster slot, then, outside a Cluster only, the global keys it
writes in the same step (the outbox, its counter, the timer index) and, for the scripts that
make claims (:data:`CLAIMING`), the client's retirement and workspace index and the node's
workspace index (:func:`script_keys`). Its change feed is the channel :func:`channel`, in
the same slot; what it publishes there is :class:`~hub.backends.redis.messages.FeedMessage`.

Pure: names, key lists, text and answer decoding; registering the scripts on a client
(:func:`load`) sends nothing until a script runs.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import orjson
from redis.exceptions import ResponseError

from hub.errors import ClientRetired, Forbidden, HubError, NotAttached, Unavailable
from hub.presence import ClaimState, ClaimView, Snapshot, Viewer, Viewers

# -- global keys ---------------------------------------------------------------------------

TIMERS = "hub:timers"  # workspace -> its earliest hold or grace deadline (ms, Redis clock)
NODES = "hub:nodes"  # ids of the nodes that announced themselves
OUTBOX = "hub:webhooks"  # the webhook events of every workspace (a Redis Stream)
# The outbox, how many events were ever added to it, and what each receiver has read.
OUTBOX_KEYS = [OUTBOX, "hub:webhooks:n", "hub:webhooks:read"]

_WORKSPACE_KEYS = (
    "meta", "counts", "claims", "timers", "streams", "nodes", "retired", "users", "people",
    "arrive", "hooks", "gone",
)  # fmt: skip
CLAIMS_KEY = _WORKSPACE_KEYS.index("claims")  # where the claims hash is in workspace_keys()
STREAMS_KEY = _WORKSPACE_KEYS.index("streams")  # and the streams per node|client


def workspace_keys(workspace_id: str) -> list[str]:
    """The workspace's keys, in the order ``lua/_lib.lua`` reads them (KEYS[1..12])."""
    tag = f"hub:{{{workspace_id}}}:"
    return [tag + k for k in _WORKSPACE_KEYS]


def channel(workspace_id: str) -> str:
    """The workspace's change feed (the same slot as its keys)."""
    return f"hub:{{{workspace_id}}}:ch"


def workspace_of(channel_name: str) -> str:
    """The workspace whose change feed ``channel_name`` is (the inverse of :func:`channel`)."""
    return channel_name[len("hub:{") : -len("}:ch")]


def is_channel(channel_name: object) -> bool:
    """Whether ``channel_name`` is a workspace's change feed (not a node's own channel)."""
    return isinstance(channel_name, str) and channel_name.endswith("}:ch")


def retired_key(client_id: str) -> str:
    """Set while the client is retired (its TTL: the retirement's)."""
    return f"hub:retired:{client_id}"


def client_spaces(client_id: str) -> str:
    """The workspaces a client has had claims in (read by retire)."""
    return f"hub:client:{client_id}"


def node_key(node: str) -> str:
    """The node's heartbeat: present while the node is alive (refreshed with a TTL)."""
    return f"hub:node:{node}"


def node_cleared(node: str) -> str:
    """How many times a survivor cleared the node (read by the node at every heartbeat)."""
    return f"hub:node:{node}:cleared"


def node_spaces(node: str) -> str:
    """The workspaces a node has had streams in (read when it is cleared)."""
    return f"hub:node:{node}:spaces"


def node_channel(node: str) -> str:
    """The node's own channel: keeps its feed connection subscribed to something."""
    return f"hub:node:{node}:ch"


# -- the scripts -----------------------------------------------------------------------------

WORKSPACE_SCRIPTS = (
    "add_workspace", "attach", "detach", "expire", "hold", "release", "remove_workspace",
    "retire", "set_profile", "set_session", "set_streams", "snapshot", "viewers",
)  # fmt: skip
INDEX_SCRIPTS = ("arm", "due", "reindex")  # on TIMERS alone
OUTBOX_SCRIPTS = ("outbox_take", "outbox_keep", "outbox_ack")  # on OUTBOX_KEYS alone
# Scripts that may run twice with the same effect as once (tried again on a fresh connection).
IDEMPOTENT = frozenset(
    {
        "add_workspace",
        "expire",
        "hold",
        "release",
        "retire",
        "set_profile",
        "set_session",
        "snapshot",
        "viewers",
    }  # fmt: skip
)
# The scripts that make claims; outside a Cluster they index them themselves (lua/_lib.lua).
CLAIMING = frozenset({"attach", "hold"})


def script_keys(
    name: str, workspace_id: str, client_id: str, node: str, cluster: bool
) -> list[str]:
    """The keys of workspace script ``name`` (``client_id``: its first argument after the
    workspace, read only by the :data:`CLAIMING` ones). On a Cluster only the workspace's own
    keys: the global ones live in other slots, and the shell writes them around the script."""
    keys = workspace_keys(workspace_id)
    if not cluster:
        keys += [*OUTBOX_KEYS[:2], TIMERS]
        if name in CLAIMING:
            keys += [retired_key(client_id), client_spaces(client_id), node_spaces(node)]
    return keys


def lua(name: str) -> str:
    """The text of ``lua/<name>.lua``."""
    return (resources.files("hub.backends") / "lua" / f"{name}.lua").read_text()


def load(
    client: Any,
    *,
    cluster: bool,
    vacated_ms: int,
    hook_max: int,
    tomb_ms: int,
    clock_arg: bool = False,
) -> dict[str, Any]:
    """Every script registered on ``client`` (by name), each with its prelude; the workspace
    scripts publish the way the deployment listens (``cluster``: sharded pub/sub).
    ``clock_arg``: each script takes the time as its last argument instead of Redis's TIME
    (a backend given a clock, for tests)."""
    publish = "SPUBLISH" if cluster else "PUBLISH"
    # The timer index rule, of arm.lua, due.lua and the prelude alike; it tells the time.
    index = f"local CLOCK_ARG = {'true' if clock_arg else 'false'}\n" + lua("_index")
    lib = (
        f"local PUBLISH = '{publish}'\n"
        f"local VACATED_MS, HOOK_MAX = {vacated_ms}, {hook_max}\n"
        f"local TOMB_MS = {tomb_ms}\n" + index + lua("_lib")
    )
    preludes = (
        (lib, WORKSPACE_SCRIPTS),
        (index, INDEX_SCRIPTS),
        (lua("_outbox"), OUTBOX_SCRIPTS),
    )
    return {
        name: client.register_script(prelude + "\n" + lua(name))
        for prelude, names in preludes
        for name in names
    }


# -- what they answer ----------------------------------------------------------------------


def refusal(exc: ResponseError) -> HubError:
    """The hub's error for a script's refusal (``redis.error_reply`` in the Lua). A
    ``workspace_not_found`` is the shell's to handle first (the store may have it)."""
    text = str(exc)
    if "not_attached" in text:
        return NotAttached("client has no live stream in this workspace")
    if "HUB forbidden" in text:
        return Forbidden("this client id is in use by another user")
    if "HUB retired" in text:
        return ClientRetired("this client is retired")
    if "HUB stale" in text or "HUB late" in text:  # the node gave up on the write: its
        # generation moved on (nodes.Standing.suspect), or its deadline passed (lua/_lib.lua)
        return Unavailable("presence write arrived after its timeout")
    return Unavailable(f"presence refused: {exc}")


def pairs(flat: list[str]) -> dict[str, int]:
    """``[k1, n1, k2, n2, ...]`` as a dict of counts."""
    return {flat[i]: int(flat[i + 1]) for i in range(0, len(flat), 2)}


def strs(members: Any) -> set[str]:
    """A set reply (the client decodes responses to str)."""
    return {str(m) for m in members}


def snapshot_of(
    workspace_id: str, seq: Any, online: Any, flat: list[str], online_users: Any, users: list[str]
) -> Snapshot:
    """A snapshot from a script's ``{seq, online, flat counts, online_users, flat users}``."""
    return Snapshot(
        workspace_id, int(seq), int(online), pairs(flat), pairs(users), int(online_users)
    )


def viewers_of(
    workspace_id: str, session_id: str, seq: Any, total: Any, named: Any, flat: list[Any]
) -> Viewers:
    """viewers.lua's answer: ``{seq, total, named, flat [user, arrival, profile]...}``."""
    listed = [
        Viewer(flat[i], orjson.loads(flat[i + 2]) if flat[i + 2] else None, int(flat[i + 1]))
        for i in range(0, len(flat), 3)
    ]
    total = int(total)
    return Viewers(workspace_id, session_id, int(seq), total, total - int(named), listed)


def claim_view(client_id: str, text: str) -> ClaimView:
    """One claim as the claims hash holds it (``lua/_lib.lua``: s, n, r, h)."""
    c = orjson.loads(text)
    state = ClaimState.ATTACHED if c["n"] else ClaimState.HELD if c["h"] else ClaimState.GRACE
    return ClaimView(client_id, c["n"], c["s"], state, bool(c["r"]))
