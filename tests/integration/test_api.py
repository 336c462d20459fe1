"""The HTTP read API as a real process (``pz api``) on a free port,
reading real Redis written by one real job run that the whole module shares.

A live stream (SSE) is opened before the job starts, so the change it must deliver is one the
job writes while the client listens. Every other assertion compares the API's answer with what
``ProfileReader`` reads from the same Redis.
"""

from __future__ import annotations

import signal
import socket
import uuid
from urllib.parse import quote

import httpx
import pytest

from personalization.config.settings import load_settings
from personalization.pipelines.main import run_job
from personalization.replay.producer import produce
from personalization.serving.api import api_process
from personalization.serving.reader import ProfileReader
from personalization.serving.redis_store import ProfileWriter, connect
from tests.support import RedisServer, SseListener, free_port, isolated_settings, wait_until, write_config

T = 1_511_658_000_000
KEY = f"test-key-{uuid.uuid4().hex}"
LIVE_USER = "api-live"
ODD_USER = "u:{x}*/?#%"  # valid under the contract (1-128 characters): must be served, not refused
USERS = [LIVE_USER, ODD_USER, *(f"api-u{i}" for i in range(60))]


def events() -> list[dict]:
    """Four product views in four minutes per user: every user enters high_intent."""
    return [{"schema_version": 1, "event_id": f"{user}-{n}", "event_type": "product_view", "ts": T + n * 60_000,
             "user_id": user, "item_id": f"item-{n}", "category_id": f"cat-{n % 2}"}
            for n in range(4) for user in USERS]


@pytest.fixture(scope="module")
def served(stack, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("api")
    settings = isolated_settings(tmp)
    produce(events(), settings.kafka.bootstrap_servers, settings.kafka.topics.events, progress=False)
    config = write_config(settings, tmp / "config.yaml")
    with api_process(config, free_port(), env={"PZ_API_KEYS": f"other,{KEY}"}) as url:
        live = SseListener(f"{url}/v1/users/{LIVE_USER}/stream", {"X-API-Key": KEY})
        live.start()
        wait_until(lambda: live.status, 15, "the live stream to open")
        assert live.status == 200 and not live.events  # nothing written yet
        run_job(settings)
        wait_until(lambda: live.of("change"), 30, "the live stream to deliver the job's change")
        yield {"settings": settings, "url": url, "config": config, "live": live,
               "reader": ProfileReader(connect(settings.redis), settings.redis.key_prefix)}
        live.stop.set()


def get(served, path: str, key: str | None = KEY, **headers) -> httpx.Response:
    return httpx.get(served["url"] + path, headers={**({"X-API-Key": key} if key else {}), **headers}, timeout=10)


def test_sse_delivers_the_change_the_job_wrote(served):
    reader, live = served["reader"], served["live"]
    changes = live.of("change")
    written = [(entry_id, c) for entry_id, c in reader.changes() if c["user_id"] == LIVE_USER]
    assert written and [(e["id"], e["data"]) for e in changes] == written[:len(changes)]
    assert {"segment": "high_intent", "action": "enter"}.items() <= next(
        e["data"] for e in changes if e["data"]["segment"] == "high_intent").items()
    version = reader.get(LIVE_USER)["version"]
    wait_until(lambda: any(e["data"]["version"] == version for e in live.of("profile")), 10,
               "the stream to report the final profile version")


def test_sse_resumes_from_last_event_id(served):
    reader = served["reader"]
    written = [(entry_id, c) for entry_id, c in reader.changes() if c["user_id"] == LIVE_USER]
    assert len(written) >= 2, "the live user needs two changes to resume between them"
    resumed = SseListener(f"{served['url']}/v1/users/{LIVE_USER}/stream",
                          {"X-API-Key": KEY, "Last-Event-ID": written[0][0]})
    resumed.start()
    wait_until(lambda: len(resumed.of("change")) >= len(written) - 1, 15, "the missed changes")
    resumed.stop.set()
    assert [(e["id"], e["data"]) for e in resumed.of("change")] == written[1:]
    assert resumed.of("profile")[0]["data"]["version"] == reader.get(LIVE_USER)["version"]


def test_profile_segments_predictions_match_redis(served):
    reader = served["reader"]
    for user in (LIVE_USER, ODD_USER):
        path = f"/v1/users/{quote(user, safe='')}"
        profile = get(served, f"{path}/profile")
        assert profile.status_code == 200 and profile.json() == reader.get(user)
        assert profile.headers["etag"] == f'"{reader.get(user)["version"]}"'
        segments = get(served, f"{path}/segments").json()
        assert segments["primary_segment"] == reader.segments(user)["primary_segment"]
        assert "high_intent" in segments["segments"] and segments["scores"] == reader.segments(user)["scores"]
    predictions = get(served, f"/v1/users/{LIVE_USER}/predictions")
    assert predictions.status_code == 200 and predictions.json() == reader.predictions(LIVE_USER)


def test_etag_gives_304_until_the_version_moves(served):
    etag = get(served, f"/v1/users/{LIVE_USER}/profile").headers["etag"]
    unchanged = get(served, f"/v1/users/{LIVE_USER}/profile", **{"If-None-Match": etag})
    assert unchanged.status_code == 304 and unchanged.content == b""
    assert get(served, f"/v1/users/{LIVE_USER}/segments", **{"If-None-Match": etag}).status_code == 304
    assert get(served, f"/v1/users/{LIVE_USER}/profile", **{"If-None-Match": '"0"'}).status_code == 200


def test_batch_reads_many_users(served):
    reader = served["reader"]
    ids = [*USERS[:49], "nobody-here"]
    answer = httpx.post(f"{served['url']}/v1/profiles/batch", json={"ids": ids}, headers={"X-API-Key": KEY})
    assert answer.status_code == 200
    profiles = answer.json()["profiles"]
    assert profiles["nobody-here"] is None
    assert {u: profiles[u] for u in USERS[:49]} == {u: reader.get(u) for u in USERS[:49]}
    too_many = httpx.post(f"{served['url']}/v1/profiles/batch", json={"ids": [f"u{i}" for i in range(101)]},
                          headers={"X-API-Key": KEY})
    assert too_many.status_code == 400 and "at most 100" in too_many.json()["error"]


def test_api_keys_refused_and_accepted(served):
    for key in (None, "wrong", KEY + "x", ""):
        refused = get(served, f"/v1/users/{LIVE_USER}/profile", key=key)
        assert refused.status_code == 401, key
    assert httpx.post(f"{served['url']}/v1/profiles/batch", json={"ids": [LIVE_USER]}).status_code == 401
    assert get(served, f"/v1/users/{LIVE_USER}/profile", key="other").status_code == 200


def raw_status(url: str, path: str) -> int:
    """The status line's code for a GET sent over a plain socket (httpx refuses URLs over 64 KB)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nX-API-Key: {KEY}\r\n\r\n".encode())
        return int(sock.recv(64).split()[1])


def test_unknown_user_404_malformed_id_400_never_500(served):
    assert get(served, "/v1/users/nobody-here/profile").status_code == 404
    assert get(served, "/v1/users/nobody-here/predictions").status_code == 404
    assert get(served, f"/v1/users/{quote('{}:*', safe='')}/profile").status_code == 404
    assert get(served, f"/v1/users/{'a' * 129}/segments").status_code == 400
    assert raw_status(served["url"], f"/v1/users/{'a' * 1_000_000}/profile") == 400  # h11's header limit
    assert raw_status(served["url"], f"/v1/users/{'a' * 60_000}/profile") == 400  # ours
    random_body = httpx.post(f"{served['url']}/v1/profiles/batch", content=uuid.uuid4().bytes * 65_536,
                             headers={"X-API-Key": KEY, "Content-Type": "application/json"})
    assert random_body.status_code == 400
    for body in ({"ids": []}, {"ids": ["a" * 129]}, {"ids": [1]}, {"nope": 1}, [1, 2]):
        answer = httpx.post(f"{served['url']}/v1/profiles/batch", json=body, headers={"X-API-Key": KEY})
        assert answer.status_code == 400, body
    assert get(served, f"/v1/users/{LIVE_USER}/stream", **{"Last-Event-ID": "{}:*"}).status_code == 400
    # and the service is still there
    assert get(served, f"/v1/users/{LIVE_USER}/profile").status_code == 200


def test_health_readiness_metrics_docs(served):
    assert get(served, "/healthz", key=None).json() == {"status": "ok"}
    assert get(served, "/readyz", key=None).json() == {"status": "ready"}
    assert get(served, "/docs", key=None).status_code == 200
    assert "/v1/profiles/batch" in get(served, "/openapi.json", key=None).json()["paths"]
    metrics = get(served, "/metrics", key=None).text
    assert 'api_requests_total{method="GET",route="/v1/users/{user_id:path}/profile",status="304"}' in metrics
    assert 'api_requests_total{method="GET",route="/v1/users/{user_id:path}/profile",status="401"}' in metrics
    assert 'api_request_duration_seconds_bucket{le="0.005",method="GET",route="/v1/users/{user_id:path}/profile"}' \
        in metrics


def test_public_reads_and_cors(served):
    overrides = ("api.public_reads=[profile]", 'api.cors_origins=["https://shop.example"]')
    with api_process(served["config"], free_port(), env={"PZ_API_KEYS": ""}, overrides=overrides) as url:
        public = httpx.get(f"{url}/v1/users/{LIVE_USER}/profile", headers={"Origin": "https://shop.example"})
        assert public.status_code == 200 and public.json() == served["reader"].get(LIVE_USER)
        assert public.headers["access-control-allow-origin"] == "https://shop.example"
        assert "etag" in public.headers["access-control-expose-headers"].lower()
        assert httpx.get(f"{url}/v1/users/{LIVE_USER}/segments").status_code == 401
        other = httpx.get(f"{url}/v1/users/{LIVE_USER}/profile", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers


def test_worker_processes_serve_with_the_same_settings_and_keys(served):
    """api.workers=2: uvicorn's worker processes get the settings and the keys of the command."""
    with api_process(served["config"], free_port(), env={"PZ_API_KEYS": KEY}, overrides=("api.workers=2",)) as url:
        for _ in range(20):  # the kernel spreads connections over both workers' accepts
            answer = httpx.get(f"{url}/v1/users/{LIVE_USER}/profile", headers={"X-API-Key": KEY})
            assert answer.status_code == 200 and answer.json() == served["reader"].get(LIVE_USER)
        assert httpx.get(f"{url}/v1/users/{LIVE_USER}/profile").status_code == 401


def test_redis_down_is_503_and_ready_again_after(stack, tmp_path):
    """A private Redis killed under the API: reads answer 503 (never 500), readiness says so,
    liveness does not; the API serves again once Redis is back, without a restart."""
    server = RedisServer(tmp_path / "redis").start()
    try:
        settings = load_settings().with_overrides(redis={"port": server.port, "key_prefix": "pzt:api-down"})
        config = write_config(settings, tmp_path / "config.yaml")
        ProfileWriter(connect(settings.redis), "pzt:api-down", 0).write({"user_id": "u1", "version": 1})
        with api_process(config, free_port(), env={"PZ_API_KEYS": KEY}) as url:
            assert httpx.get(f"{url}/v1/users/u1/profile", headers={"X-API-Key": KEY}).status_code == 200
            assert server.stop(signal.SIGKILL) == -signal.SIGKILL
            down = httpx.get(f"{url}/v1/users/u1/profile", headers={"X-API-Key": KEY}, timeout=30)
            assert down.status_code == 503 and down.headers["retry-after"] == "1"
            assert httpx.get(f"{url}/readyz", timeout=30).status_code == 503
            assert httpx.get(f"{url}/healthz").status_code == 200
            server.start()
            wait_until(lambda: httpx.get(f"{url}/readyz", timeout=30).status_code == 200, 30, "readiness again")
            assert httpx.get(f"{url}/v1/users/u1/profile", headers={"X-API-Key": KEY}).json()["version"] == 1
    finally:
        server.stop()
