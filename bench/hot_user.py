"""One hot user against everyone else (issue 19, point 5): ``.venv/bin/python -m bench.hot_user``.

The user operator's per-event work (``UserLogic.on_event``, then the profile built and encoded for
every applied event, which the operator's write-behind does at most once per ``redis.batch_delay``
per user, so an upper bound; the default rules) on one thread, as at
parallelism 1 where every user shares the task: first ``--ordinary`` real replay events alone,
then the same events with ``--hot`` events of one crawler interleaved in event-time order
(product views and add-to-carts of thousands of categories and items, spread over the same
span). Timers fire as in the job; their work counts to their user. Reports the ordinary users' events/s in both runs (their events over the whole run's
time: what they get from a task the hot user shares), the cost of an ordinary event alone, and
the hot user's cost per event, first and last 10 % of its events (a cost that grows with its
history shows there), with the caps' drop counts. Writes ``bench/results/hot-user.md``.
"""

from __future__ import annotations

import heapq
import statistics
import time
from collections import Counter
from collections.abc import Iterator

import click
import orjson

from bench.run import RESULTS, RUNS, job_profiles, remove_runs, workload
from personalization.config.settings import Settings, load_settings
from personalization.core.events import Event
from personalization.wiring import user_logic
from personalization.config.rules import load_rules
from personalization.topics.records import topic_size

HOT = "hot-crawler"


def hot_payloads(count: int, start: int, end: int) -> Iterator[dict]:
    """A crawler: ``count`` contract events evenly over [start, end), 5,000 categories, 50,000 items."""
    step = max((end - start) // count, 1)
    for n in range(count):
        yield {"schema_version": 1, "event_id": f"hot-{n}", "ts": start + n * step, "user_id": HOT,
               "event_type": "add_to_cart" if n % 10 == 0 else "product_view",
               "item_id": f"item-{n % 50_000}", "category_id": f"cat-{n % 5_000}"}


def hot_events(count: int, start: int, end: int) -> Iterator[Event]:
    return map(Event.from_payload, hot_payloads(count, start, end))


def run(logic, events: list[Event], out_of_orderness: int) -> dict:
    """Feed ``events`` (in order) through the logic, with each user's event-time timers fired as
    the watermark passes them (as Flink does: at most one per user and time); time per event,
    its timers included, split by hot / ordinary."""
    states, dropped, timers, armed = {}, Counter(), [], set()
    watermark = -(2**63)
    ordinary_s, hot_timers_s, hot_times = 0.0, 0.0, []

    def carry_out(state, result) -> None:
        if result.profile_changed:
            orjson.dumps(logic.profile(state))
        dropped.update(result.dropped)
        if result.next_timer is not None and (result.next_timer, state.user_id) not in armed:
            armed.add((result.next_timer, state.user_id))
            heapq.heappush(timers, (result.next_timer, state.user_id))

    started = time.perf_counter()
    for event in events:
        watermark = max(watermark, event.ts - out_of_orderness)
        while timers and timers[0][0] <= watermark:
            t0 = time.perf_counter()
            armed.discard(due := heapq.heappop(timers))
            carry_out(states[due[1]], logic.on_timer(states[due[1]], watermark))
            if due[1] == HOT:
                hot_timers_s += time.perf_counter() - t0
            else:
                ordinary_s += time.perf_counter() - t0
        t0 = time.perf_counter()
        state = states.get(event.user_id) or states.setdefault(event.user_id, logic.new_state(event.user_id))
        carry_out(state, logic.on_event(state, event, watermark))
        spent = time.perf_counter() - t0
        if event.user_id == HOT:
            hot_times.append(spent)
        else:
            ordinary_s += spent
    return {"total_s": time.perf_counter() - started, "ordinary_s": ordinary_s, "hot_times": hot_times,
            "hot_timers_s": hot_timers_s,
            "dropped": dict(dropped), "hot_state": states.get(HOT)}


def job_run(settings: Settings, payloads: list[dict]) -> dict:
    """One bounded run of the whole job (default config) over ``payloads``: the span from the
    first profile write to the last, the events the ordinary users' and the hot user's profiles
    counted, and the records of the run's ``late`` and DLQ topics (where events not counted went),
    read before the run's topics are deleted."""
    profiles, span_s = job_profiles(settings, payloads, {})
    run = RUNS[-1]  # the settings (topics) of the run job_profiles just made
    counted = Counter()
    for profile in profiles:
        counted["hot" if profile["user_id"] == HOT else "ordinary"] += profile["events_total"]
    return {"span_s": span_s, "ordinary": counted["ordinary"], "hot": counted["hot"],
            "late": topic_size(run, run.kafka.topics.late), "dlq": topic_size(run, run.kafka.topics.dlq)}


def job_main(settings: Settings, ordinary: int, hot: int, rounds: int) -> str:
    """The whole job, alone and with the hot user, in alternated pairs (``--job``)."""
    base = sorted(workload(ordinary), key=lambda e: e["ts"])
    merged = sorted([*base, *hot_payloads(hot, base[0]["ts"], base[-1]["ts"])], key=lambda e: e["ts"])
    rows = [f"# One hot user, the whole job (`python -m bench.hot_user --job --ordinary {ordinary} --hot {hot} "
            f"--rounds {rounds}`)", "",
            "| run | wall s (first to last profile write) | ordinary events counted | ordinary events/s "
            "| hot events counted | hot events/s | late, DLQ records |", "|---|---|---|---|---|---|---|"]
    try:
        for _ in range(rounds):  # alternated: the load of a shared machine drifts between runs
            for name, payloads in (("ordinary users alone", base), (f"with the hot user's {hot:,} events", merged)):
                r = job_run(settings, payloads)
                rows.append(f"| {name} | {r['span_s']:,.1f} | {r['ordinary']:,} | {r['ordinary'] / r['span_s']:,.0f} "
                            f"| {r['hot']:,} | {r['hot'] / r['span_s']:,.0f} | {r['late']:,}, {r['dlq']:,} |")
                click.echo(rows[-1])
    finally:
        remove_runs()
    return "\n".join([*rows, ""])


@click.command()
@click.option("--ordinary", default=100_000, show_default=True, help="Real replay events of ordinary users.")
@click.option("--hot", default=1_000_000, show_default=True, help="Events of the one hot user.")
@click.option("--rounds", default=2, show_default=True, help="Pairs of runs (alone, with the hot user).")
@click.option("--job", is_flag=True, help="Run the whole job on the local stack instead of the user logic alone "
              "(bench/results/hot-user-job.md).")
def main(ordinary: int, hot: int, rounds: int, job: bool) -> None:
    settings = load_settings()
    if job:
        report = job_main(settings, ordinary, hot, rounds)
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "hot-user-job.md").write_text(report)
        click.echo(report)
        return
    logic = user_logic(settings, load_rules(settings))
    base = [Event.from_payload(payload) for payload in workload(ordinary)]
    base.sort(key=lambda e: e.ts)
    merged = sorted([*base, *hot_events(hot, base[0].ts, base[-1].ts)], key=lambda e: e.ts)
    lag = settings.time.out_of_orderness
    runs = []
    for _ in range(rounds):  # alternated: the load of a shared machine drifts between runs
        runs.append(("ordinary users alone", run(logic, base, lag)))
        runs.append((f"with the hot user's {hot:,} events", run(logic, merged, lag)))
    alone, shared = runs[-2][1], runs[-1][1]
    hot_us = [t * 1e6 for t in shared["hot_times"]]
    tenth = max(len(hot_us) // 10, 1)
    state = shared["hot_state"]
    rows = [
        f"# One hot user (`python -m bench.hot_user --ordinary {ordinary} --hot {hot} --rounds {rounds}`)", "",
        "| run | ordinary events/s (over the run) | µs per ordinary event (its own work, timers included) |",
        "|---|---|---|",
        *(f"| {name} | {ordinary / r['total_s']:,.0f} | {r['ordinary_s'] / ordinary * 1e6:.1f} |" for name, r in runs),
        "",
        f"- event time: the ordinary events span {(base[-1].ts - base[0].ts) / 60_000:,.0f} min; the hot user's "
        "events are spread evenly over it",
        f"- hot user: {statistics.mean(hot_us):.1f} µs per event on average; first 10 % of its events "
        f"{statistics.mean(hot_us[:tenth]):.1f} µs, last 10 % {statistics.mean(hot_us[-tenth:]):.1f} µs, "
        f"slowest {max(hot_us) / 1000:.1f} ms (includes the interpreter's garbage collections); its timers "
        f"{shared['hot_timers_s']:.1f} s in all (last run)",
        f"- hot user's state at the end: {len(state.session_state.events):,} held session events, "
        f"{len(state.categories):,} categories, {len(state.seen_event_ids):,} seen ids, "
        f"{sum(map(len, state.segments.armed.values())) if state.segments else 0:,} armed deadlines",
        f"- dropped by the caps (metrics state_dropped_<cap>): ordinary users alone {alone['dropped'] or 'nothing'}; "
        f"with the hot user {shared['dropped'] or 'nothing'}", ""]
    report = "\n".join(rows)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "hot-user.md").write_text(report)
    click.echo(report)


if __name__ == "__main__":
    main()
