"""Job control the PyFlink JobClient does not offer correctly in 2.2."""

from __future__ import annotations

from pyflink.common.job_client import JobClient
from pyflink.java_gateway import get_gateway


def stop_with_savepoint(client: JobClient, directory: str, drain: bool = False, timeout_s: float = 120) -> str:
    """Stop the job and return the savepoint path; ``drain`` first advances event time to the
    end (all event-time timers fire: open sessions close), as ``flink stop --drain`` does.

    PyFlink 2.2's ``JobClient.stop_with_savepoint`` calls a Java overload that no longer exists
    (the savepoint format type became mandatory), so the Java client is called directly.
    """
    jvm = get_gateway().jvm
    canonical = jvm.org.apache.flink.core.execution.SavepointFormatType.CANONICAL
    future = client._j_job_client.stopWithSavepoint(drain, directory, canonical)
    return str(future.get(int(timeout_s * 1000), jvm.java.util.concurrent.TimeUnit.MILLISECONDS))
