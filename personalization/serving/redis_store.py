"""The Redis key schema (v2) and the versioned, idempotent writes.

Key schema (``<prefix>`` defaults to ``pz:v2``; ``{...}`` is a Redis Cluster hash tag: keys with
the same tag live in one slot, so one script can touch them atomically). ``<user>``, ``<anonymous
id>`` and ``<segment>`` stand for the id as ``encode_id`` writes it (below):

- ``<prefix>:{<user>}:profile``  hash, one field per profile attribute (JSON-encoded values)
  plus ``version`` (per-user, increases with every applied update) and ``updated_at``
  (wall-clock ms of the write: the only field that differs between two runs of the same input).
- ``<prefix>:{<user>}:predictions``  hash of the online models' outputs (``serving.model_store``).
- ``<prefix>:{segment-changes}``  stream of segment changes (enter/exit), one entry per change,
  trimmed to about ``rules.stream_maxlen`` entries (``MAXLEN ~``).
- ``<prefix>:{segment-changes}:user:<user>``  string: the ``seq`` of the user's newest change
  already in the stream (deduplication under replay; expires with the profile).
- ``<prefix>:segment:{<segment>}:members``  set of the user ids currently in a segment.
- ``<prefix>:{<user>}:segments``  set: every segment the user entered (erasure index: the audience
  sets an erasure must ``SREM`` the user from; written in the same pipeline as the ``SADD``, never
  shrunk by an exit, no TTL, like the audience sets).
- ``<prefix>:{segment-changes}:entries:<user>``  list: the stream ids of the user's entries, oldest
  first (erasure index: the entries an erasure ``XDEL``s; appended by the same script as the
  entries, and its ids older than the stream's oldest entry dropped there; no TTL).
- ``<prefix>:{<anonymous id>}:alias``  string: the user id an anonymous id was stitched into
  (``core.identity``); written when its profile hash is deleted, expires like a profile.
- ``<prefix>:model``  hash of the shared models' state (``serving.model_store``).
- ``<prefix>:experiment:{<experiment>}:users``  hash, one field per exposed user (the id) whose
  value is the user's outcome record in the experiment (JSON, ``core.experiments.outcome_record``),
  overwritten by every write of the user's profile: a replay or restore ends in the same hash. No
  TTL (the report needs every exposed user); an erasure deletes the user's fields.
- ``<prefix>:{<user>}:recommendations``  hash of the user's top-N items (``serving.reco_store``):
  ``items`` (JSON list of ``{"item", "source"}``), ``model_version``, ``item`` (the interaction it
  answers), ``at`` (its event time), ``version`` (the user's request number, compare-and-set) and
  ``updated_at``; expires ``recommendations.ttl`` after its last write.

Ids in keys are percent-encoded (``encode_id``): the UTF-8 bytes of every character but
``A-Z a-z 0-9 - _ . ~`` become ``%XX``, and the empty id is ``%``. So an encoded id holds no
``{``, ``}`` (the hash tag stays the id's), no ``:`` (the key's parts cannot shift) and no glob
character, and two ids never give the same key (v1 wrote ids raw: the profile key of one id could
be another user's ``segment-changes`` key, and the script then failed with WRONGTYPE). Values
(set members, the alias target, stream fields) are the ids themselves.

Three steps per update, sent in one round trip (a pipeline): (1) the profile compare-and-set
in the user's slot; (2) the changes appended to the stream by a script that skips every
change whose ``seq`` (the user's change number) is not above the one it recorded for the user,
in the stream's slot; (3) ``SADD``/``SREM`` on the audience sets, each its own slot. On Redis Cluster
the three are necessarily separate (a script cannot span slots), so each is idempotent by
itself: after a crash and restore, the replayed updates carry the same versions and the same
numbered changes in the same order, (1) and (2) refuse what they already hold, and (3) converges to the same
sets because it replays the same per-user sequence of adds and removes.

Updates of many users go out together, one pipeline per batch (``WriteBehind``; recommendations:
``reco_store.HeldRecommendations``): a round trip per batch instead of per event.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import islice
from typing import Any, NamedTuple
from urllib.parse import quote, unquote

import orjson
import redis
import tenacity
from redis.cluster import ClusterNode, RedisCluster

from personalization.config.settings import RedisConfig, redis_password
from personalization.core.dead_letter import OUTPUT_TOO_LARGE

log = logging.getLogger(__name__)

# Compare-and-set in one server-side step: a write whose version is not newer than the stored
# one is refused, so a replay after recovery can never move a profile backwards.
_APPLY_PROFILE = """
local stored = tonumber(redis.call('HGET', KEYS[1], 'version'))
local incoming = tonumber(ARGV[1])
if stored and stored >= incoming then return 0 end
redis.call('HSET', KEYS[1], 'version', ARGV[1], unpack(ARGV, 3))
if tonumber(ARGV[2]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 1
"""

# A versioned hash (KEYS[1]) replaced by a tombstone that keeps only its version, raised to at least
# ARGV[1]: a write of that version or older (an answer still on its way) is refused by the script
# above. It lives as long as the longer of the key's time to live and ARGV[2] ms. Nothing is written
# where nothing can be on its way (no hash, a floor of 0). Returns 1 when a hash with content went.
_TOMBSTONE = """
local stored = redis.call('HGET', KEYS[1], 'version')
local floor = ARGV[1]
if not stored and tonumber(floor) <= 0 then return 0 end
if stored and tonumber(stored) > tonumber(floor) then floor = stored end
local had = redis.call('HLEN', KEYS[1]) > 1 and 1 or 0
local ttl = math.max(redis.call('PTTL', KEYS[1]), tonumber(ARGV[2]))
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'version', floor)
if ttl > 0 then redis.call('PEXPIRE', KEYS[1], ttl) end
return had
"""


def tombstone(client: redis.Redis | redis.client.Pipeline, key: str, floor: int, ttl_ms: int = 0):
    """Replace a versioned hash by its tombstone (``_TOMBSTONE``; on a pipeline, queue it): what an
    erasure leaves of a user's recommendations, so that no answer computed before it lands after."""
    return client.execute_command("EVAL", _TOMBSTONE, 1, key, floor, ttl_ms)  # a cluster pipeline has no .eval

# Append a user's changes to the stream, skipping those already there: ``KEYS[2]`` remembers the
# seq of the user's newest change appended (same hash tag as the stream: works on a cluster too).
# ``KEYS[3]`` lists the ids of the user's entries (the erasure index); ids the stream has trimmed
# leave it from the head, so it never holds more than the stream does (amortized O(1) per entry).
# ARGV: maxlen, ttl ms, pairs per entry, then per change: seq and the entry's field/value pairs.
_APPEND_CHANGES = """
local function older(a, b)
  local ams, aseq = string.match(a, '(%d+)-(%d+)')
  local bms, bseq = string.match(b, '(%d+)-(%d+)')
  ams, aseq, bms, bseq = tonumber(ams), tonumber(aseq), tonumber(bms), tonumber(bseq)
  return ams < bms or (ams == bms and aseq < bseq)
end
local last = tonumber(redis.call('GET', KEYS[2]) or '0')
local maxlen, ttl, width = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local added = 0
for i = 4, #ARGV, width + 1 do
  local seq = tonumber(ARGV[i])
  if seq > last then
    local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', maxlen, '*', unpack(ARGV, i + 1, i + width))
    redis.call('RPUSH', KEYS[3], id)
    last = seq
    added = added + 1
  end
end
if added > 0 then
  if ttl > 0 then redis.call('SET', KEYS[2], last, 'PX', ttl) else redis.call('SET', KEYS[2], last) end
  local oldest = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)[1][1]
  local head = redis.call('LINDEX', KEYS[3], 0)
  while head and older(head, oldest) do
    redis.call('LPOP', KEYS[3])
    head = redis.call('LINDEX', KEYS[3], 0)
  end
end
return added
"""
# The anonymous id's profile (KEYS[1]) becomes an alias (KEYS[2], same slot) to ARGV[1]; ARGV[2]: ttl ms.
_HAND_OVER = """
redis.call('DEL', KEYS[1])
if tonumber(ARGV[2]) > 0 then redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
else redis.call('SET', KEYS[2], ARGV[1]) end
"""
Write = tuple[dict[str, Any], list[dict[str, Any]]]  # (profile, its segment changes)
CHANGE_FIELDS = ("user_id", "segment", "action", "event_time", "rules_version", "seq", "cause")


EMPTY_ID = "%"  # the empty id's encoding: percent-encoding never writes a lone %


def encode_id(value: str) -> str:
    """An id as it is written in keys: injective, and free of ``{}:`` and glob characters."""
    return quote(value, safe="", errors="surrogatepass") or EMPTY_ID


def decode_id(encoded: str) -> str:
    """The id ``encode_id`` wrote."""
    return "" if encoded == EMPTY_ID else unquote(encoded, errors="surrogatepass")


def user_scoped_key(prefix: str, user_id: str, name: str) -> str:
    """A key of one user's: every one carries the user's encoded id as its hash tag, so all of a
    user's keys are in one Redis Cluster slot (one MULTI, one erasure pipeline)."""
    return f"{prefix}:{{{encode_id(user_id)}}}:{name}"


def profile_key(prefix: str, user_id: str) -> str:
    return user_scoped_key(prefix, user_id, "profile")


def profile_key_pattern(prefix: str, id_start: str = "") -> str:
    """A SCAN/PSUBSCRIBE pattern of the profile keys of every id that starts with ``id_start``."""
    return f"{prefix}:{{{encode_id(id_start) if id_start else ''}*}}:profile"


def predictions_key(prefix: str, user_id: str) -> str:
    return user_scoped_key(prefix, user_id, "predictions")


def recommendations_key(prefix: str, user_id: str) -> str:
    return user_scoped_key(prefix, user_id, "recommendations")


def model_key(prefix: str) -> str:
    return f"{prefix}:model"


def changes_key(prefix: str) -> str:
    return f"{prefix}:{{segment-changes}}"


def streamed_version_key(prefix: str, user_id: str) -> str:
    return f"{prefix}:{{segment-changes}}:user:{encode_id(user_id)}"


def entries_index_key(prefix: str, user_id: str) -> str:
    """The list of the stream ids of the user's change entries (erasure index)."""
    return f"{prefix}:{{segment-changes}}:entries:{encode_id(user_id)}"


def segments_index_key(prefix: str, user_id: str) -> str:
    """The set of the segments the user entered (erasure index of the audience sets)."""
    return user_scoped_key(prefix, user_id, "segments")


def alias_key(prefix: str, anonymous_id: str) -> str:
    return user_scoped_key(prefix, anonymous_id, "alias")


def members_key(prefix: str, segment: str) -> str:
    return f"{prefix}:segment:{{{encode_id(segment)}}}:members"


def experiment_key(prefix: str, experiment: str) -> str:
    return f"{prefix}:experiment:{{{encode_id(experiment)}}}:users"


def members_key_pattern(prefix: str) -> str:
    """A SCAN pattern of every audience set."""
    return f"{prefix}:segment:{{*}}:members"


def segment_of(members_key_name: str, prefix: str) -> str:
    """The segment an audience set's key names."""
    return decode_id(members_key_name.removeprefix(f"{prefix}:segment:{{").removesuffix("}:members"))


def batched(iterable: Iterable, size: int) -> Iterator[list]:
    """Lists of ``size`` items (the last shorter): keys sent a bounded number per command."""
    iterator = iter(iterable)
    while chunk := list(islice(iterator, size)):
        yield chunk


def encode_change(record: dict[str, Any]) -> list[bytes]:
    """A change record as stream field/value pairs: plain values, ``cause`` as JSON."""
    out: list[bytes] = []
    for name in CHANGE_FIELDS:
        value = record[name]
        out += [name.encode(), orjson.dumps(value) if name == "cause" else str(value).encode()]
    return out


def decode_change(fields: dict[bytes, bytes]) -> dict[str, Any]:
    record = {name.decode(): value.decode() for name, value in fields.items()}
    record["cause"] = orjson.loads(record["cause"])
    for name in ("event_time", "seq"):
        record[name] = int(record[name])
    return record


def encode_profile(profile: dict[str, Any]) -> list[bytes]:
    """Flatten to HSET arguments; every value is JSON so readers in any language can decode it."""
    fields: list[bytes] = []
    for name, value in profile.items():
        if name != "version":
            fields += [name.encode(), orjson.dumps(value)]
    return fields


def decode_profile(raw: dict[bytes, bytes]) -> dict[str, Any]:
    return {name.decode(): orjson.loads(value) for name, value in raw.items()}


# What a server says while it cannot take writes for a while, not about the write itself: a
# restart or lost connection, a load from disk (BusyLoadingError is a ConnectionError), a replica
# after a failover (READONLY), memory full under ``noeviction`` (OOM), a cluster resharding or
# without a majority (CLUSTERDOWN, TRYAGAIN, a MOVED/ASK or a slot without a node still there once
# the client's own redirections are used up: ClusterError, AskError, SlotNotCoveredError). Wrong
# credentials are a ConnectionError too, and never retried.
TRANSIENT_ERRORS = (redis.ConnectionError, redis.TimeoutError, redis.exceptions.ReadOnlyError,
                    redis.exceptions.OutOfMemoryError, redis.exceptions.TryAgainError,
                    redis.exceptions.ClusterError, redis.exceptions.AskError,
                    redis.exceptions.SlotNotCoveredError)
RETRY_FIRST_WAIT_S = 0.05


def is_transient(error: BaseException) -> bool:
    return isinstance(error, TRANSIENT_ERRORS) and not isinstance(error, redis.AuthenticationError)


def retry_while_down(send, backoff_max_ms: int):
    """``send()`` until Redis takes it, for as long as a transient error lasts: the caller
    blocks, Flink back-pressures the sources, nothing is dropped. Waits grow exponentially from
    50 ms up to ``backoff_max_ms``, each drawn at random below that bound (full jitter: tasks
    that lost Redis together do not come back in step). Only for idempotent sends (a retry may
    repeat one that reached Redis); other errors are raised at once."""
    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception(is_transient),
        wait=tenacity.wait_random_exponential(multiplier=RETRY_FIRST_WAIT_S, max=backoff_max_ms / 1000),
        stop=tenacity.stop_never, before_sleep=_log_retry, reraise=True)
    return retrying(send)


def _log_retry(state: tenacity.RetryCallState) -> None:
    log.warning("redis cannot take writes (%s): retry %d in %.2f s; back-pressuring, nothing dropped",
                state.outcome.exception(), state.attempt_number, state.next_action.sleep)


class VersionedHashWriter:
    """Compare-and-set writes of per-user versioned hashes (recommendations, predictions), many
    in one pipelined round trip, retried while Redis is down: a write whose version is not above
    the stored one is refused by the script, so a replay after a restore rewrites nothing newer."""

    def __init__(self, client: redis.Redis, ttl_ms: int, backoff_max_ms: int = 5_000) -> None:
        self._client = client
        self._ttl_ms = ttl_ms
        self._backoff_max_ms = backoff_max_ms
        self._script = client.register_script(_APPLY_PROFILE)

    def write(self, hashes: Sequence[tuple[str, int, dict[str, Any]]],
              extra: Callable[[Any, int], None] | None = None) -> None:
        """``hashes``: (key, version, fields); ``extra(pipe, now_ms)`` adds idempotent commands
        to the same round trip. Raises the first error Redis answered."""
        if hashes or extra:
            retry_while_down(lambda: self._send(hashes, extra), self._backoff_max_ms)

    def erase(self, key: str, floor: int) -> None:
        """Replace the hash at ``key`` by its tombstone of version ``floor`` at least (``tombstone``),
        living at least this writer's TTL: no write of that version or older lands afterwards."""
        retry_while_down(lambda: tombstone(self._client, key, floor, self._ttl_ms), self._backoff_max_ms)

    def _send(self, hashes: Sequence[tuple[str, int, dict[str, Any]]],
              extra: Callable[[Any, int], None] | None) -> None:
        now = int(time.time() * 1000)
        pipe = self._client.pipeline(transaction=False)
        for key, version, fields in hashes:  # by SHA alone: see ProfileWriter._send
            pipe.execute_command("EVALSHA", self._script.sha, 1, key, version, self._ttl_ms,
                                 b"updated_at", now, *encode_profile(fields))
        if extra:
            extra(pipe, now)
        results = pipe.execute(raise_on_error=False)
        if any(isinstance(result, redis.exceptions.NoScriptError) for result in results):
            # a cluster pipeline does not load scripts first, and a promoted replica has none
            self._client.script_load(self._script.script)
            return self._send(hashes, extra)
        for result in results:
            if isinstance(result, Exception):
                raise result


REDIS_WRITE_REFUSED = "redis_write_refused"  # DLQ reason: Redis refused a command of the write
LARGEST_FIELDS = 5                           # an oversized profile's dead letter names its largest fields


class Refusal(NamedTuple):
    """A user's write not carried out, as its dead letter tells it."""

    reason: str    # REDIS_WRITE_REFUSED or OUTPUT_TOO_LARGE
    detail: str    # what Redis answered, or the size and the cap
    value: bytes   # the dead letter's value (JSON; an oversized profile is summarized, it would not fit)


class Written(NamedTuple):
    applied: int                  # profiles applied (the others: Redis held this or a newer version)
    refused: dict[str, Refusal]   # user -> why the user's write was not carried out


class WriteRefused(redis.ResponseError):
    """A write not carried out for a reason of the write's own (not an outage)."""

    def __init__(self, refused: dict[str, Refusal]) -> None:
        super().__init__("; ".join(f"{user}: {refusal.detail}" for user, refusal in refused.items()))
        self.refused = refused


def _oversized(profile: dict[str, Any], fields: list[bytes], size: int, cap: int) -> Refusal:
    """The dead letter of a profile too large to write: its id, version, size and largest fields."""
    sizes = {fields[i].decode(): len(fields[i + 1]) for i in range(0, len(fields), 2)}
    largest = dict(sorted(sizes.items(), key=lambda item: -item[1])[:LARGEST_FIELDS])
    summary = {"user_id": profile["user_id"], "version": profile["version"], "bytes": size, "largest_fields": largest}
    return Refusal(OUTPUT_TOO_LARGE, f"profile of {size} bytes, above redis.max_value_bytes ({cap}); not written",
                   orjson.dumps(summary))


def _refused(writes: Sequence[Write], user: str, error: str) -> Refusal:
    """The dead letter of a write Redis refused: the profile and its changes, whole."""
    profile, changes = next(write for write in writes if write[0]["user_id"] == user)
    return Refusal(REDIS_WRITE_REFUSED, error, orjson.dumps({"profile": profile, "segment_changes": changes}))


class ProfileWriter:
    """Writes profiles (compare-and-set) and segment changes; one instance per parallel task.

    While Redis cannot take writes (down, read-only after a failover, out of memory) the write is
    retried with capped, jittered exponential backoff, forever (``retry_while_down``): the
    operator blocks, Flink back-pressures the sources, and nothing is dropped. The job catches
    up when Redis returns (the scripts are re-loaded after a restart, see ``_send``). Retrying a
    write is safe: every step of it is idempotent (see the module docstring).
    """

    def __init__(self, client: redis.Redis, prefix: str, ttl_ms: int, backoff_max_ms: int = 5_000,
                 stream_maxlen: int = 100_000, max_value_bytes: int = 1 << 20) -> None:
        self._client = client
        self._max_value_bytes = max_value_bytes
        self._prefix = prefix
        self._ttl_ms = ttl_ms
        self._backoff_max_s = backoff_max_ms / 1000
        self._stream_maxlen = stream_maxlen
        self._script = client.register_script(_APPLY_PROFILE)
        self._append = client.register_script(_APPEND_CHANGES)
        self._hand_over = client.register_script(_HAND_OVER)

    def write(self, profile: dict[str, Any], changes: list[dict[str, Any]] = ()) -> bool:
        """Write the profile and the segment changes (records with ``seq``) that led to it.

        True if the profile was applied, False if Redis already holds this or a newer version;
        raises ``WriteRefused`` if Redis refused a command of it or the profile is too large.
        """
        written = self.write_many([(profile, list(changes))])
        if written.refused:
            raise WriteRefused(written.refused)
        return written.applied == 1

    def write_many(self, writes: Sequence[Write]) -> Written:
        """Write ``(profile, changes)`` pairs of different users in one pipeline (one round trip).

        A command Redis refuses for a reason of its own (e.g. ``WRONGTYPE``: a key of another
        type under the name) fails that user's write only: the others are applied and the
        refusal is reported in ``Written.refused``. So is a profile whose encoded fields exceed
        ``max_value_bytes`` (not sent: a huge value would stall Redis and every reader of it);
        its segment changes are written all the same. A transient error retries the whole batch."""
        return retry_while_down(lambda: self._send(writes), round(self._backoff_max_s * 1000))

    def hand_over(self, anonymous_id: str, user_id: str) -> None:
        """The anonymous id's profile hash is replaced by an alias to ``user_id`` (one slot: one
        script, atomic on a cluster too, where redis-py has no MULTI). Idempotent, like every
        write here."""
        retry_while_down(lambda: self._hand_over(keys=[profile_key(self._prefix, anonymous_id),
                                                       alias_key(self._prefix, anonymous_id)],
                                                 args=[user_id, self._ttl_ms]),
                         round(self._backoff_max_s * 1000))

    def drop_aliases(self, anonymous_ids: Sequence[str]) -> None:
        """Delete alias keys (one command each: on a cluster they live in different slots)."""
        def send() -> None:
            pipe = self._client.pipeline(transaction=False)
            for anonymous_id in anonymous_ids:
                pipe.delete(alias_key(self._prefix, anonymous_id))
            pipe.execute()
        retry_while_down(send, round(self._backoff_max_s * 1000))

    def _send(self, writes: Sequence[Write]) -> int:
        """One round trip. The scripts are called by their SHA alone: a pipeline that carries
        script objects asks ``SCRIPT EXISTS`` first, a second round trip per batch (and through
        ``execute_command``: redis-py's cluster pipeline blocks its ``evalsha`` method, not the
        command, which it routes by the script's keys). A server
        that lost its scripts (a restart, ``SCRIPT FLUSH``) answers NOSCRIPT: load them and
        send the batch again, which is safe because every write in it is idempotent."""
        pipe = self._client.pipeline(transaction=False)
        now = int(time.time() * 1000)
        profile_calls, users = [], []  # the index of each profile's command; the user of each command
        refused: dict[str, Refusal] = {}
        for profile, changes in writes:
            user = profile["user_id"]
            fields = encode_profile(profile)
            size = sum(map(len, fields))
            if size > self._max_value_bytes:
                refused[user] = _oversized(profile, fields, size, self._max_value_bytes)
            else:
                profile_calls.append(len(pipe))
                pipe.execute_command("EVALSHA", self._script.sha, 1, profile_key(self._prefix, user),
                                     profile["version"], self._ttl_ms, b"updated_at", now, *fields)
            if changes:
                self._changes(pipe, user, changes)
            for experiment, record in profile.get("experiments", {}).items():
                if record["exposed_at"] is not None:  # an exposed user's outcome (core.experiments)
                    pipe.hset(experiment_key(self._prefix, experiment), user, orjson.dumps(record))
            users += [user] * (len(pipe) - len(users))
        results = pipe.execute(raise_on_error=False)
        if any(isinstance(result, redis.exceptions.NoScriptError) for result in results):
            for script in (self._script, self._append):
                self._client.script_load(script.script)
            return self._send(writes)
        for user, result in zip(users, results):
            if isinstance(result, Exception):
                if is_transient(result):
                    raise result
                if user not in refused:
                    refused[user] = _refused(writes, user, f"{type(result).__name__}: {result}")
        applied = sum(1 for i in profile_calls if results[i] and not isinstance(results[i], Exception))
        return Written(applied, refused)

    def _changes(self, pipe, user_id: str, changes: list[dict[str, Any]]) -> None:
        args: list = [self._stream_maxlen, self._ttl_ms, 2 * len(CHANGE_FIELDS)]
        for record in changes:
            args += [record["seq"], *encode_change(record)]
        pipe.execute_command("EVALSHA", self._append.sha, 3, changes_key(self._prefix),
                             streamed_version_key(self._prefix, user_id), entries_index_key(self._prefix, user_id),
                             *args)
        for record in changes:
            key = members_key(self._prefix, record["segment"])
            if record["action"] == "enter":
                pipe.sadd(segments_index_key(self._prefix, user_id), record["segment"])  # before the set it indexes
                pipe.sadd(key, user_id)
            else:
                pipe.srem(key, user_id)


class WriteBehind:
    """Holds writes back for a batch: one pending write per user (the newest replaces an older
    one), all sent in one pipeline when ``max_batch`` users are pending or when the owner calls
    ``flush`` (the user operator does within ``redis.batch_delay``).

    Everything held back, segment changes included, is a pure function of the user's
    checkpointed state (the changes are kept in ``UserState.unwritten_changes`` until their
    batch went out), so the owner can re-derive it after a restore (see
    ``operators.user_profile``). A write carries every change of the user not yet known to be
    written; ``unwritten`` tells the owner which of them a flushed batch has covered.

    What is held is the user's *source* (the live state), rendered to the profile by ``render``
    only when the batch goes out: a user who steps several times within the delay is rendered
    once, not once per step. The owner keeps a held source unchanged except by its own later
    steps (whose profile is the newer one anyway), and flushes before ``render`` changes meaning.
    """

    MAX_TRACKED = 100_000  # users whose last written change is remembered; beyond, re-sends (no-ops)

    def __init__(self, writer: ProfileWriter, max_batch: int,
                 render: Callable[[Any], dict[str, Any]] = lambda profile: profile) -> None:
        self._writer = writer
        self._max_batch = max_batch
        self._render = render
        self._pending: dict[str, tuple[Any, list[dict[str, Any]]]] = {}  # user -> (source, changes)
        self._written_through: dict[str, int] = {}  # user -> seq of the last change sent
        self._refused: list[tuple[Write, Refusal]] = []

    def put(self, user: str, source: Any, changes: list[dict[str, Any]]) -> bool:
        """True when this write starts a held-back write for its user: the one the owner must
        see flushed within the delay (a newer profile for a user already held back is not).
        ``changes``: all of the user's unwritten changes, oldest first (a superset of the
        pending write's, which it replaces)."""
        started = user not in self._pending
        self._pending[user] = (source, changes)
        if len(self._pending) >= self._max_batch:
            self.flush()
            return False
        return started

    def unwritten(self, user_id: str, changes: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Of ``changes`` (a user's unwritten changes as kept in state), those no flushed batch
        has carried yet."""
        through = self._written_through.pop(user_id, None)
        return changes if through is None else [c for c in changes if c["seq"] > through]

    def take_refused(self) -> list[tuple[Write, Refusal]]:
        """The writes not carried out since the last call, each with why."""
        refused, self._refused = self._refused, []
        return refused

    def is_pending(self, user_id: str) -> bool:
        return user_id in self._pending

    def discard(self, user_id: str) -> None:
        """Drop the user's held-back write, unsent (the user was erased)."""
        self._pending.pop(user_id, None)

    def flush(self) -> int:
        """Send every pending write; the number of users written. A write Redis refused is not
        retried (its changes count as sent): the owner takes it from ``take_refused``."""
        writes = [(self._render(source), changes) for source, changes in self._pending.values()]
        if writes:
            refused = self._writer.write_many(writes).refused
            self._refused += [(write, refused[write[0]["user_id"]]) for write in writes
                              if write[0]["user_id"] in refused]
            self._pending.clear()
            if len(self._written_through) > self.MAX_TRACKED:
                self._written_through.clear()
            for profile, changes in writes:
                if changes:
                    self._written_through[profile["user_id"]] = changes[-1]["seq"]
        return len(writes)


def connect(config: RedisConfig) -> redis.Redis | RedisCluster:
    """The one place clients are made: the single server at ``host:port``, or a Redis Cluster
    client (slot routing, MOVED/ASK, pipelines split per node: redis-py's) when
    ``redis.cluster_nodes`` lists startup nodes. Same credentials and TLS either way."""
    options = dict(username=config.username or None, password=redis_password(),
                   ssl=config.tls, ssl_ca_certs=config.tls_ca_file or None,
                   socket_connect_timeout=5, socket_timeout=10)
    if config.cluster_nodes:
        nodes = [ClusterNode(host, int(port)) for host, port in (node.rsplit(":", 1) for node in config.cluster_nodes)]
        return RedisCluster(startup_nodes=nodes, **options)
    return redis.Redis(host=config.host, port=config.port, db=config.db, **options)


def check_connection(client: redis.Redis, config: RedisConfig) -> None:
    """Raise a readable error for refused credentials, naming where the secret comes from
    (never the secret itself)."""
    where = (f"redis cluster {','.join(config.cluster_nodes)}" if config.cluster_nodes
             else f"redis {config.host}:{config.port}")
    try:
        client.ping()
    except (redis.AuthenticationError, redis.ResponseError) as err:
        if isinstance(err, redis.ResponseError) and "NOAUTH" not in str(err):
            raise
        if redis_password() is None:
            raise PermissionError(f"{where}: a password is required: set PZ_REDIS_PASSWORD "
                                  "or PZ_REDIS_PASSWORD_FILE") from None
        raise PermissionError(f"{where}: authentication failed for user {config.username or 'default'!r} "
                              "(password from PZ_REDIS_PASSWORD/PZ_REDIS_PASSWORD_FILE)") from None
