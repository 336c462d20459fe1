"""What writing the per-user state costs: ``.venv/bin/python -m bench.state_codec``.

The user operator writes a user's whole ``UserState`` back to Flink state after every step. The
state is a graph of ~40 small dataclass objects (windows of buckets of accumulators). Until the
msgpack codec (``state.codec``) it was pickled, and pickle pays a Python ``__getstate__`` call and
a reduce per object (~14 % of the job's Python time by py-spy). This encodes the states of the
replay's users with the codec the job uses, pickles them as they were written before it, with the
interpreter's C ``__getstate__`` instead of the ``evolvable`` one (the pickled form then changes),
and as the same values in plain tuples, lists and dicts. Since ``state.user_store`` the codec leaves
a busy user's seen ids out (a step appends its id to a list state of their own): its row measures
the value without them (the parts kept apart since, ``codec.parts_apart``, stay in it), the
others the whole state.
"""

from __future__ import annotations

import dataclasses
import pickle
import statistics
import time
from collections.abc import Callable
from typing import Any

import click

from bench.run import workload
from personalization.config.settings import load_settings
from personalization.core.events import Event
from personalization.core.user import UserState
from personalization.wiring import user_logic
from personalization.config.rules import load_rules
from personalization.state.codec import IDS_APART, decode_user_state, encode_user_state, parts_apart


def user_states(size: int) -> list[UserState]:
    """The states of the users of ``size`` replay events, each after its last event (the default rules)."""
    settings = load_settings()
    logic = user_logic(settings, load_rules(settings))
    states: dict[str, UserState] = {}
    watermark = -(2**63)
    for payload in workload(size):
        event = Event.from_payload(payload)
        state = states.get(event.user_id) or states.setdefault(event.user_id, logic.new_state(event.user_id))
        watermark = max(watermark, event.ts - settings.time.out_of_orderness)
        logic.on_event(state, event, watermark)
    return list(states.values())


def plain(value: Any) -> Any:
    """The same values without a class of the project's: dataclasses and named tuples as tuples."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return tuple(plain(getattr(value, f.name)) for f in dataclasses.fields(value))
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(plain(v) for v in value) if not hasattr(value, "_fields") else tuple(map(plain, value))
    return value


def _classes(states: list[UserState]) -> set[type]:
    found: set[type] = set()

    def walk(value: Any) -> None:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            found.add(type(value))
            for f in dataclasses.fields(value):
                walk(getattr(value, f.name))
        elif isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, (list, tuple)):
            for v in value:
                walk(v)

    for state in states:
        walk(state)
    return found


def _us_per_call(fn: Callable[[Any], Any], values: list[Any], rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        for value in values:
            fn(value)
        best = min(best, (time.perf_counter() - started) / len(values) * 1e6)
    return best


def _dumps(value: Any) -> bytes:
    return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)  # as PyFlink's pickled state


def _measure(values: list[Any], rounds: int, encode: Callable[[Any], bytes] = _dumps,
             decode: Callable[[bytes], Any] | None = pickle.loads) -> tuple[float, float, float]:
    """µs per encoding, µs per decoding (NaN for ``decode=None``), mean bytes."""
    blobs = [encode(v) for v in values]
    return (_us_per_call(encode, values, rounds),
            float("nan") if decode is None else _us_per_call(decode, blobs, rounds), statistics.mean(map(len, blobs)))


@click.command()
@click.option("--events", default=20_000, show_default=True, help="replayed events whose users' states are pickled")
@click.option("--rounds", default=5, show_default=True, help="timed passes; the fastest is reported")
def main(events: int, rounds: int) -> None:
    states = user_states(events)
    results = {"msgpack, state.codec (the job's; no seen ids)": _measure(
                   states, rounds, encode=lambda state: encode_user_state(state, parts_apart(state) & IDS_APART),
                   decode=decode_user_state),
               "pickled objects (evolvable __getstate__)": _measure(states, rounds)}
    evolvable = {cls: cls.__dict__["__getstate__"] for cls in _classes(states) if "__getstate__" in cls.__dict__}
    try:
        for cls in evolvable:
            cls.__getstate__ = object.__getstate__
        # unpickling this form needs a __setstate__ that takes it: not measured
        results["the interpreter's C __getstate__"] = _measure(states, rounds, decode=None)
    finally:
        for cls, getstate in evolvable.items():
            cls.__getstate__ = getstate
    results["the same values as plain tuples, lists, dicts"] = _measure([plain(s) for s in states], rounds)
    click.echo(f"{len(states):,} user states of {events:,} replay events; µs per state (fastest of {rounds} passes):")
    click.echo(f"  {'form':48} {'encode':>8} {'decode':>9} {'bytes':>7}")
    for name, (write, read, size) in results.items():
        click.echo(f"  {name:48} {write:8.1f} {read:9.1f} {size:7.0f}")


if __name__ == "__main__":
    main()
