"""The model trainer: a thin adapter from Flink state, timers and metrics onto core.learning.trainer.

How the shared models are held in a keyed job: the user tasks send their learning records
(``core.learning.feed``) to this operator, keyed by one constant key at parallelism 1. The
models live in memory, in a ``Trainer``. PyFlink's thread mode gives a Python function no hook
before a checkpoint, and pickling River models into state on every record would cost more
than the rest of the job, so the state is kept as a snapshot plus a log:

- every operation (a record received, or the watermark advanced to W) is appended to a
  ListState log (one short string: cheap), then applied to the in-memory trainer;
- every ``learning.checkpoint_every`` operations the trainer is pickled into a ValueState, the
  labels of the users that changed since are put into (or removed from) a MapState, one entry
  per user, and the log cleared;
- after a restore, at the first record or timer, the snapshot and the labels are loaded and the
  log replayed.

A checkpoint therefore holds exactly the trainer of the last operation before the barrier: no
model is lost and no example learned twice. The trainer is deterministic, so the replay
rebuilds it exactly; Redis writes are not repeated by the replay (each operation's writes
are sent, synchronously, before the operation ends, so they are in Redis before any later
barrier).
"""

from __future__ import annotations

import logging
import time

import orjson
from pyflink.datastream import KeyedProcessFunction, RuntimeContext

from personalization.config.settings import Settings
from personalization.core.learning.shared import export_snapshot, import_snapshot, read_header
from personalization.core.learning.trainer import END_OF_INPUT, Outputs, Trainer
from personalization.serving.model_store import ModelWriter
from personalization.serving.redis_store import check_connection, connect
from personalization.state.descriptors import MODEL_LABELS, MODEL_LOG, MODEL_STATE
from personalization.wiring import new_models, trainer_rules

log = logging.getLogger(__name__)

PUBLISH_EVERY_S = 1.0         # model keys and gauges at most this often (and at the end of input)
SIZE_EVERY_S = 60.0           # the models' pickled size at most this often (and at the end of input)
GAUGES = ("examples_learned", "labels", "model_bytes", "roc_auc_ppm", "log_loss_ppm",
          "recent_roc_auc_ppm", "recent_log_loss_ppm")


UNDEFINED_PPM = -1  # the gauge of a metric that is undefined (e.g. ROC AUC over one class)


def gauge_values(trainer: Trainer, model_bytes: int) -> dict[str, int]:
    """Flink gauges are integers here: the float metrics are in parts per million."""
    m = trainer.models.propensity.metrics()
    ppm = {f"{name}_ppm": UNDEFINED_PPM if m[name] is None else round(m[name] * 1e6)
           for name in ("roc_auc", "log_loss", "recent_roc_auc", "recent_log_loss")}
    return {"examples_learned": m["examples_learned"], "labels": m["labels"], "model_bytes": model_bytes,
            **ppm}


class ModelTrainer(KeyedProcessFunction):
    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    def open(self, runtime_context: RuntimeContext) -> None:
        self._state = runtime_context.get_state(MODEL_STATE)
        self._log = runtime_context.get_list_state(MODEL_LOG)
        self._labels = runtime_context.get_map_state(MODEL_LABELS)
        self._rules = trainer_rules(self._settings)
        self._trainer: Trainer | None = None
        self._ops = 0
        self._timer: int | None = None
        self._published = 0.0
        self._model_bytes, self._sized = 0, float("-inf")
        cfg = self._settings.redis
        client = connect(cfg)
        check_connection(client, cfg)
        self._writer = ModelWriter(client, cfg.key_prefix, cfg.profile_ttl, cfg.retry_backoff_max)
        group = runtime_context.get_metrics_group().add_group("personalization")
        self._gauges = {name: group.distribution(f"model_{name}") for name in GAUGES}

    def close(self) -> None:
        if self._trainer is not None:
            self._publish()

    def process_element(self, value: str, ctx: KeyedProcessFunction.Context):
        trainer = self._load()
        self._log.add("r" + value)
        yield from self._carry_out(trainer.receive(value), ctx)

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext):
        trainer = self._load()
        watermark = max(timestamp, ctx.timer_service().current_watermark())
        self._log.add(f"w{watermark}")
        self._timer = None
        yield from self._carry_out(trainer.advance(watermark), ctx, watermark >= END_OF_INPUT)

    # --- state ---------------------------------------------------------------------------------

    def _load(self) -> Trainer:
        """The trainer in memory; after a (re)start: the snapshot in state with its log replayed."""
        if self._trainer is not None:
            return self._trainer
        data = self._state.value()
        trainer = (Trainer(self._rules, new_models(self._settings)) if data is None
                   else Trainer.restore(data, self._labels.items(), self._rules))
        for op in self._log.get() or ():   # also when no snapshot was taken yet: the log alone
            trainer.receive(op[1:]) if op[0] == "r" else trainer.advance(int(op[1:]))
            self._ops += 1
        if data is not None or self._ops:
            log.info("trainer restored: %d records processed, %d examples learned, %d operations replayed",
                     trainer.processed, trainer.models.propensity.learned, self._ops)
        self._trainer = trainer
        path = self._settings.learning.start_from_path
        if path is not None:
            digest = read_header(path)["sha256"]
            if trainer.origin != digest:   # a new start_from: start from it, or roll back to it
                trainer.adopt(import_snapshot(path), digest)
                log.warning("models replaced by the snapshot %s (%d examples learned)", path,
                            trainer.models.propensity.learned)
                self._snapshot()
        return trainer

    def _snapshot(self) -> None:
        self._trainer.sweep()
        snapshot = self._trainer.snapshot()
        # One put per user, not put_all: PyFlink 2.2's process-mode put_all unpacks a dict's keys
        # as pairs. In thread mode a put costs 2.1 us against put_all's 0.9 per entry: at most
        # ~1 us per operation at learning.checkpoint_every 20,000, against ~2 ms per event.
        for user, labels in snapshot.labels.items():
            if labels is None:
                self._labels.remove(user)
            else:
                self._labels.put(user, labels)
        self._state.update(snapshot.trainer)
        self._log.clear()
        self._ops = 0

    # --- outputs -------------------------------------------------------------------------------

    def _carry_out(self, out: Outputs, ctx, end: bool = False):
        trainer = self._trainer
        if end and self._settings.learning.export_every:   # end of input (bounded, or stop --drain): a file too
            out.export_at = trainer.final_export() or out.export_at
        if out.export_at is not None:
            path = export_snapshot(trainer.models, self._settings.learning.snapshot_dir, out.export_at)
            log.info("model snapshot written: %s", path)
        now = time.monotonic()
        publish = end or (out.processed and now - self._published >= PUBLISH_EVERY_S)
        self._writer.write(out.writes, self._model_view(end) if publish else None, out.erased)
        if publish:
            self._published = now
        nxt = trainer.next_time()
        if nxt is not None and (self._timer is None or nxt < self._timer):
            ctx.timer_service().register_event_time_timer(nxt)
            self._timer = nxt
        self._ops += 1
        if self._ops >= self._settings.learning.checkpoint_every:
            self._snapshot()
        for example in out.examples:
            yield orjson.dumps(example).decode()

    def _model_view(self, final: bool = False) -> dict:
        """The model key's content. The models' size is a pickle round trip of all of them, too
        dear for every publish: measured at most every ``SIZE_EVERY_S``, and at the end of input."""
        now = time.monotonic()
        if final or now - self._sized >= SIZE_EVERY_S:
            self._model_bytes, self._sized = self._trainer.model_bytes(), now
        view = self._trainer.view()
        gauges = gauge_values(self._trainer, self._model_bytes)
        for name, value in gauges.items():
            self._gauges[name].update(value)
        return {**view, "model_bytes": gauges["model_bytes"]}

    def _publish(self) -> None:
        self._writer.write({}, self._model_view(final=True))
