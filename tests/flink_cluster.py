"""A real standalone Flink cluster on loopback, started with the pyflink distribution's own scripts.

One JobManager and TaskManagers as separate JVM processes, each with the Prometheus reporter;
jobs are submitted with ``flink run`` exactly as docs/operations.md documents.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pyflink
import yaml

from personalization.config.settings import REPO_ROOT, Settings
from personalization.pipelines.job import EMBEDDED_STARTUP
from personalization.tools.monitor import FlinkRest
from tests.support import wait_until, write_config

FLINK_HOME = Path(pyflink.__file__).parent
CONNECTOR_JAR = REPO_ROOT / ".stack" / "jars" / "flink-sql-connector-kafka-5.0.0-2.2.jar"
PROMETHEUS_PORTS = "9250-9270"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class FlinkCluster:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.conf_dir = workdir / "conf"
        self.log_dir = workdir / "log"
        self.rest_port = _free_port()
        self.taskmanagers: list[int] = []
        self.conf_dir.mkdir(parents=True)
        self.log_dir.mkdir()
        base = yaml.safe_load((FLINK_HOME / "conf" / "config.yaml").read_text())
        base.update({
            "jobmanager": {"bind-host": "127.0.0.1", "rpc": {"address": "127.0.0.1", "port": _free_port()},
                           "memory": {"process": {"size": "1024m"}}},
            "taskmanager": {"bind-host": "127.0.0.1", "host": "127.0.0.1", "numberOfTaskSlots": 1,
                            "memory": {"process": {"size": "1280m"}}},
            "rest": {"address": "127.0.0.1", "bind-address": "127.0.0.1", "port": self.rest_port},
            "blob": {"server": {"port": "0"}},
            "heartbeat": {"interval": 1000, "timeout": 6000},
            "metrics": {"reporter": {"prom": {
                "factory": {"class": "org.apache.flink.metrics.prometheus.PrometheusReporterFactory"},
                "port": PROMETHEUS_PORTS}}},
            "python": {"executable": sys.executable, "client": {"executable": sys.executable}},
        })
        (self.conf_dir / "config.yaml").write_text(yaml.safe_dump(base))
        for name in ("log4j.properties", "log4j-cli.properties", "log4j-console.properties"):
            (self.conf_dir / name).write_text((FLINK_HOME / "conf" / name).read_text())
        # A cluster needs flink-python on its own classpath (the distribution keeps it in opt/,
        # as Flink's docs say to copy it to lib/): a lib folder of links, the distribution untouched.
        lib_dir = workdir / "lib"
        lib_dir.mkdir()
        for jar in [*(FLINK_HOME / "lib").glob("*.jar"), *(FLINK_HOME / "opt").glob("flink-python-*.jar")]:
            (lib_dir / jar.name).symlink_to(jar)
        self.env = {
            **os.environ,
            "FLINK_CONF_DIR": str(self.conf_dir),
            "FLINK_LOG_DIR": str(self.log_dir),
            "FLINK_PID_DIR": str(workdir),
            "FLINK_LIB_DIR": str(lib_dir),
            "FLINK_IDENT_STRING": "pz",
            # Thread mode embeds Python in the TaskManager JVM: give it the venv and the project.
            "PYTHONPATH": os.pathsep.join([str(EMBEDDED_STARTUP), *__import__("site").getsitepackages(), str(REPO_ROOT)]),
        }

    def _script(self, name: str, *args: str) -> None:
        subprocess.run(["bash", str(FLINK_HOME / "bin" / name), *args], env=self.env, check=True,
                       cwd=self.workdir, stdout=subprocess.DEVNULL)

    def rest(self, path: str):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.rest_port}{path}", timeout=10) as response:
            return json.load(response)

    def _rest_or_none(self, path: str):
        try:
            return self.rest(path)
        except OSError:
            return None

    def start_jobmanager(self) -> None:
        self._script("jobmanager.sh", "start")
        wait_until(lambda: self._rest_or_none("/overview"), 90, "the JobManager's REST API")

    def start_taskmanager(self) -> int:
        """Start one more TaskManager and return its pid (found by its own log file name)."""
        index = len(self.taskmanagers)
        self._script("taskmanager.sh", "start")
        marker = str(self.log_dir / f"flink-pz-taskexecutor-{index}-")
        found = wait_until(lambda: subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True)
                           .stdout.split(), 30, f"TaskManager {index}'s process")
        pid = int(found[0])
        self.taskmanagers.append(pid)
        wait_until(lambda: (self._rest_or_none("/overview") or {}).get("taskmanagers") == len(self.taskmanagers),
                   90, f"{len(self.taskmanagers)} registered TaskManagers")
        return pid

    def kill_taskmanager(self, pid: int) -> None:
        os.kill(pid, signal.SIGKILL)
        self.taskmanagers.remove(pid)

    def submit(self, settings: Settings, savepoint: str | None = None) -> str:
        """``flink run`` with the Python entry point, the connector jar and the project files."""
        config = write_config(settings, self.workdir / f"job-{_free_port()}.yaml")
        command = [str(FLINK_HOME / "bin" / "flink"), "run", "--detached", "-m", f"127.0.0.1:{self.rest_port}",
                   *(["--fromSavepoint", savepoint] if savepoint else []),
                   "--python", str(REPO_ROOT / "personalization" / "pipelines" / "main.py"),
                   "--pyFiles", str(REPO_ROOT / "personalization"),
                   "--jarfile", str(CONNECTOR_JAR),
                   "--config", str(config)]
        result = subprocess.run(command, env={**self.env, "PYTHONPATH": self.env["PYTHONPATH"]}, cwd=REPO_ROOT,
                                capture_output=True, text=True, timeout=180)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        jobs = wait_until(lambda: [j for j in self.rest("/jobs")["jobs"] if j["status"] == "RUNNING"],
                          90, "the submitted job to run")
        return jobs[0]["id"]

    def stop(self, job_id: str, directory: str, drain: bool) -> str:
        """Stop with a savepoint (``flink stop [--drain]``) and return its path."""
        return FlinkRest(f"http://127.0.0.1:{self.rest_port}").stop(job_id, directory, drain)

    def scrape(self) -> str:
        """Every Prometheus endpoint of the cluster's processes, concatenated."""
        low, high = (int(p) for p in PROMETHEUS_PORTS.split("-"))
        text = ""
        for port in range(low, high + 1):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
                    text += response.read().decode()
            except OSError:
                continue
        return text

    def shutdown(self) -> None:
        for name in ("taskmanager.sh", "jobmanager.sh"):
            subprocess.run(["bash", str(FLINK_HOME / "bin" / name), "stop-all"], env=self.env,
                           cwd=self.workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
