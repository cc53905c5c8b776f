"""The shared presence backend: claims in Redis, one atomic Lua script per transition.

Several hub processes ("nodes") share one Redis and show exactly the counts one process would.
How (docs/scaling.md has the whole picture), and the module that owns each part:

- :mod:`.scripts`: every claim transition of docs/protocol.md section 2 is one Lua script
  (``hub/backends/lua/*.lua``, each run after the shared prelude ``lua/_lib.lua``), over the
  keys of one workspace, which all share the hash tag ``{workspace_id}``. Two nodes can never
  interleave half-transitions. The key table (which keys each script touches) is there.
- :mod:`.messages`, :mod:`.feed`: a script that moves counts increments the workspace ``seq``
  and publishes the diff on the workspace's channel. A node subscribes to the channels of the
  workspaces it has sockets in and hands each message to the hub in order; a node that may
  have missed messages (it resubscribed after losing its connection) tells the hub to re-read
  the snapshot.
- :mod:`.nodes` (pure): streams are counted per node (``<node>|<client>`` in the workspace's
  ``streams`` hash), and every node refreshes a heartbeat key with a short TTL. A node whose
  heartbeat expired (it was killed) is cleared by whichever node notices first: its streams
  are detached, with grace. A node keeps its own truth (the streams its sockets hold, and the
  session of each of their claims) and writes it back whenever its heartbeat finds itself
  forgotten (Redis restarted empty, or this node was taken for dead: a survivor's clear count
  moved) or a write or a connection was lost; its stream writes are fenced by a generation.
- :mod:`.timers`: holds and graces are deadlines in a per-workspace sorted set, indexed
  cluster-wide in ``hub:timers``; every node sweeps the index, and the expiry script removes a
  claim at most once whichever node runs it first.
- :mod:`.connect`: one Redis, Sentinel (``redis+sentinel://``), or a Redis Cluster (found at
  start-up; sharded pub/sub, one feed connection per master). Every connection is checked.
- :mod:`.outbox`: webhooks (docs/protocol.md section 10): the scripts that move counts also
  decide occupied and vacated and append the events to one Redis Stream, ``hub:webhooks``,
  read by one consumer group per receiver. Not on a Redis Cluster.
- :mod:`.backend`: :class:`RedisBackend`, the thin shell that composes them. Redis
  unreachable: calls raise :class:`~hub.errors.Unavailable` (REST 503, close 1013) within the
  socket timeout.
"""

from hub.backends.redis.backend import RedisBackend
from hub.backends.redis.connect import parse_sentinel_url
from hub.backends.redis.outbox import WebhookStream
from hub.backends.redis.scripts import NODES, OUTBOX, OUTBOX_KEYS, TIMERS

__all__ = [
    "NODES",
    "OUTBOX",
    "OUTBOX_KEYS",
    "TIMERS",
    "RedisBackend",
    "WebhookStream",
    "parse_sentinel_url",
]
