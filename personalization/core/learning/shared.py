"""The shared models as one object, its bytes for Flink state, and snapshot files for operators.

``SharedModels.snapshot()`` is what goes into checkpointed state: pickled together with the
counters, so a restore brings back the model and the number of examples it has learned as
one unit. Snapshot files add a header so an operator can choose one without unpickling it:

    PZMODELS\\n
    {"format": 1, "created_at": ..., "examples_learned": ..., "metrics": {...}, ...}\\n
    <pickle payload>

``created_at`` is event time (the caller's watermark or newest event), so the files of a
replay sort the same way as the files of the live run. Files are written atomically. Loading
checks the magic, format, payload digest and River version (a pickle is only safe to load
with the library version that wrote it). A pickle can run code when loaded: only load files
from a directory the operators control.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from river.__version__ import __version__ as river_version

from personalization.core.learning.clusters import Clusters
from personalization.core.learning.propensity import Propensity
from personalization.core.learning.trending import Trending

MAGIC = b"PZMODELS\n"
FORMAT = 1
SUFFIX = ".pzm"


class SnapshotError(Exception):
    """A snapshot file that cannot be used, with the file and the reason."""


@dataclass(slots=True)
class SharedModels:
    propensity: Propensity = field(default_factory=Propensity)
    clusters: Clusters = field(default_factory=Clusters)
    trending: Trending = field(default_factory=Trending)

    def snapshot(self) -> bytes:
        return pickle.dumps(self, protocol=pickle.HIGHEST_PROTOCOL)

    @classmethod
    def restore(cls, data: bytes) -> SharedModels:
        models = pickle.loads(data)
        if not isinstance(models, cls):
            raise TypeError(f"expected a {cls.__name__} snapshot, got {type(models).__name__}")
        return models

    def metrics(self) -> dict[str, Any]:
        return {"propensity": self.propensity.metrics(), "clusters": self.clusters.summary()}


def export_snapshot(models: SharedModels, directory: str | Path, created_at: int) -> Path:
    """Write ``models-<created_at>-<examples>.pzm`` (names sort by event time) and return its path."""
    payload = models.snapshot()
    header = {
        "format": FORMAT,
        "created_at": created_at,
        "examples_learned": models.propensity.learned,
        "metrics": models.propensity.metrics(),
        "river": river_version,
        "python": platform.python_version(),
        "payload_bytes": len(payload),
        "sha256": hashlib.sha256(payload).hexdigest(),
    }
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"models-{created_at:015d}-{models.propensity.learned:012d}{SUFFIX}"
    partial = path.with_suffix(".partial")
    with open(partial, "wb") as f:
        f.write(MAGIC + json.dumps(header, sort_keys=True).encode() + b"\n" + payload)
        f.flush()
        os.fsync(f.fileno())
    os.replace(partial, path)
    return path


def read_header(path: str | Path) -> dict[str, Any]:
    with open(path, "rb") as f:
        return _read_header(f, Path(path))


def import_snapshot(path: str | Path) -> SharedModels:
    """Load a snapshot file to start from it or roll back to it."""
    path = Path(path)
    with open(path, "rb") as f:
        header = _read_header(f, path)
        payload = f.read()
    if len(payload) != header["payload_bytes"] or hashlib.sha256(payload).hexdigest() != header["sha256"]:
        raise SnapshotError(f"{path}: payload does not match its header (truncated or corrupted)")
    if header["river"] != river_version:
        raise SnapshotError(f"{path}: written with river {header['river']}, this job runs river {river_version}")
    return SharedModels.restore(payload)


def list_snapshots(directory: str | Path) -> list[tuple[Path, dict[str, Any]]]:
    """Snapshot files with their headers, oldest event time first: the rollback menu."""
    found = [(path, read_header(path)) for path in Path(directory).glob(f"*{SUFFIX}")]
    return sorted(found, key=lambda item: (item[1]["created_at"], item[1]["examples_learned"], item[0].name))


def _read_header(f: BinaryIO, path: Path) -> dict[str, Any]:
    if f.read(len(MAGIC)) != MAGIC:
        raise SnapshotError(f"{path}: not a model snapshot (bad magic)")
    try:
        header: dict[str, Any] = json.loads(f.readline())
    except ValueError as error:
        raise SnapshotError(f"{path}: unreadable header: {error}") from None
    if header.get("format") != FORMAT:
        raise SnapshotError(f"{path}: snapshot format {header.get('format')}, expected {FORMAT}")
    return header
