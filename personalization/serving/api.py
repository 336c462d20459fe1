"""HTTP read API: profiles, segments and predictions from Redis, a batch read, and a live stream
of one user's segment changes (Server-Sent Events); and a user's controls (reset, opt-out,
opt-in), published for the job to carry out. ``pz api``.

Every read goes through ``ProfileReader`` (the key schema stays in ``redis_store``). The profile,
segments and experiments reads (one round trip to Redis on loopback or a LAN) run on the event
loop: the thread-pool hop of a plain ``def`` cost more than the read (docs/performance.md "HTTP
API"); a hung Redis holds the loop for at most the client's socket timeout. The other endpoints
are plain ``def`` in Starlette's thread pool. At start-up the objects built so far are frozen out
of the garbage collector's reach (``gc.freeze``), so a full collection does not walk them in the
middle of a request. Input errors are 400/401/404, an unreachable Redis is 503; no input gives a 500.
"""

from __future__ import annotations

import gc
import hashlib
import logging
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, Literal

import click
import httpx
import orjson
import redis
import uvicorn
from fastapi import Depends, FastAPI, Header, Request
from kafka.errors import KafkaError
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from personalization.config.cli import with_settings
from personalization.config.settings import ApiConfig, Settings
from personalization.serving.controls import RequestPublisher, new_request
from personalization.serving.reader import SEGMENT_FIELDS, ProfileReader

log = logging.getLogger(__name__)

MAX_ID_CHARS = 128  # the event contract's limit on user_id / anonymous_id (schemas/event-v1.schema.json)
KEY_HEADER = "X-API-Key"
SETTINGS_ENV = "PZ_API_SETTINGS"  # the settings, as JSON, handed to uvicorn's worker processes
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class ApiError(Exception):
    """An answer other than 200, with a message for the caller."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


class BatchRequest(BaseModel):
    ids: list[str] = Field(min_length=1)


def load_key_digests(config: ApiConfig) -> frozenset[bytes]:
    """SHA-256 digests of the API keys from ``config.keys_env`` (comma-separated) and
    ``config.keys_file`` (one per line); the keys themselves are not kept."""
    keys = [k for k in os.environ.get(config.keys_env, "").split(",")]
    if config.keys_file:
        keys += Path(config.keys_file).read_text().splitlines()
    return frozenset(hashlib.sha256(k.strip().encode()).digest() for k in keys if k.strip())


def check_id(user_id: str) -> str:
    """The contract's id rule: 1 to 128 characters, anything else is a 400."""
    if not 1 <= len(user_id) <= MAX_ID_CHARS:
        raise ApiError(400, f"malformed id: expected 1 to {MAX_ID_CHARS} characters, got {len(user_id):,}")
    return user_id


def matches_etag(if_none_match: str | None, etag: str) -> bool:
    """RFC 9110 weak comparison against an If-None-Match list (or ``*``)."""
    if not if_none_match:
        return False
    tags = [tag.strip().removeprefix("W/") for tag in if_none_match.split(",")]
    return "*" in tags or etag in tags


def sse(event: str, data: dict[str, Any], event_id: str | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: {event}\n".encode() + b"data: " + orjson.dumps(data) + b"\n\n"


def check_stream_id(value: str) -> str:
    """A Redis stream entry id, ``<ms>-<seq>``: what ``Last-Event-ID`` must hold."""
    ms, sep, seq = value.partition("-")
    if not (sep and ms.isascii() and ms.isdigit() and seq.isascii() and seq.isdigit() and len(value) <= 41):
        raise ApiError(400, "malformed Last-Event-ID: expected an event id sent by this stream (<ms>-<seq>)")
    return value


class Metrics:
    """Request counts and latencies per route template (not per raw path: ids would explode
    the label set). A registry of its own so several apps can live in one process (tests)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("api_requests", "HTTP requests answered", ["method", "route", "status"],
                                registry=self.registry)
        self.latency = Histogram("api_request_duration_seconds", "Time to answer (streams: not measured)",
                                 ["method", "route"], buckets=LATENCY_BUCKETS, registry=self.registry)

    def middleware(self, app):
        async def measured(scope, receive, send):
            if scope["type"] != "http":
                return await app(scope, receive, send)
            started, status = time.perf_counter(), [500]

            async def send_status(message):
                if message["type"] == "http.response.start":
                    status[0] = message["status"]
                    route = getattr(scope.get("route"), "path", "unmatched")
                    if not route.endswith("/stream"):
                        self.latency.labels(scope["method"], route).observe(time.perf_counter() - started)
                await send(message)
            try:
                await app(scope, receive, send_status)
            finally:
                route = getattr(scope.get("route"), "path", "unmatched")
                self.requests.labels(scope["method"], route, str(status[0])).inc()
        return measured


def create_app(settings: Settings, reader: ProfileReader | None = None,
               key_digests: frozenset[bytes] | None = None) -> FastAPI:
    config = settings.api
    reader = reader or ProfileReader.from_settings(settings)
    digests = load_key_digests(config) if key_digests is None else key_digests
    if not digests:
        log.warning("no API keys (set %s or api.keys_file): only public_reads %s are answered",
                    config.keys_env, config.public_reads)
    metrics = Metrics()
    publisher = RequestPublisher(settings)  # user controls' producer, closed when the server stops

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        gc.collect()
        gc.freeze()
        yield
        publisher.close()

    app = FastAPI(title="personalization read API", version="1", lifespan=lifespan,
                  description="Profiles, segments and predictions written by the personalization job.")

    def authorized(endpoint: str):
        async def check(x_api_key: str | None = Header(None, include_in_schema=False)) -> None:
            # async: a hash needs no thread; a sync dependency would cost a thread-pool hop per request
            if endpoint in config.public_reads:
                return
            if x_api_key is None or hashlib.sha256(x_api_key.encode()).digest() not in digests:
                raise ApiError(401, f"missing or unknown API key (header {KEY_HEADER})",
                               {"WWW-Authenticate": KEY_HEADER})
        return Depends(check)

    @app.exception_handler(ApiError)
    def api_error(_: Request, err: ApiError) -> JSONResponse:
        return JSONResponse({"error": err.message}, err.status, err.headers)

    @app.exception_handler(RequestValidationError)
    def bad_request(_: Request, err: RequestValidationError) -> JSONResponse:
        problems = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors()[:10]]
        return JSONResponse({"error": "malformed request", "problems": problems}, 400)

    @app.exception_handler(StarletteHTTPException)
    def http_error(_: Request, err: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(err.detail)}, err.status_code, getattr(err, "headers", None))

    @app.exception_handler(redis.RedisError)
    def redis_down(_: Request, err: redis.RedisError) -> JSONResponse:
        log.warning("redis read failed: %s", err)
        return JSONResponse({"error": "the profile store is unavailable, retry later"}, 503, {"Retry-After": "1"})

    def not_found(user_id: str, what: str = "profile") -> ApiError:
        return ApiError(404, f"no {what} for this id")

    def profile_or_404(user_id: str) -> dict[str, Any]:
        profile = reader.get(check_id(user_id))
        if profile is None:
            raise not_found(user_id)
        return profile

    def tagged(body: dict[str, Any], etag: str, if_none_match: str | None) -> Response:
        if matches_etag(if_none_match, etag):
            return Response(status_code=304, headers={"ETag": etag})
        return Response(orjson.dumps(body), media_type="application/json", headers={"ETag": etag})

    @app.get("/v1/users/{user_id:path}/profile", dependencies=[authorized("profile")])
    async def profile(user_id: str, if_none_match: str | None = Header(None)) -> Response:
        """The user's profile (an anonymous id stitched into a user gives that user's).
        ETag = the profile version: send it back in If-None-Match to get a 304 while unchanged."""
        found = profile_or_404(user_id)
        return tagged(found, f'"{found["version"]}"', if_none_match)

    @app.get("/v1/users/{user_id:path}/segments", dependencies=[authorized("segments")])
    async def segments(user_id: str, if_none_match: str | None = Header(None)) -> Response:
        """Segments (name -> event time entered), primary segment, scores and rules version;
        same ETag as the profile (they are part of it)."""
        found = profile_or_404(user_id)
        body = {"user_id": found["user_id"], "version": found["version"],
                **{name: found.get(name) for name in SEGMENT_FIELDS}}
        return tagged(body, f'"{found["version"]}"', if_none_match)

    @app.get("/v1/users/{user_id:path}/experiments", dependencies=[authorized("experiments")])
    async def experiments(user_id: str, if_none_match: str | None = Header(None)) -> Response:
        """The user's experiments: name -> assigned ``variant``, ``exposed_at`` (null until an
        exposure was read) and the outcome so far; same ETag as the profile (they are part of it)."""
        found = profile_or_404(user_id)
        body = {"user_id": found["user_id"], "version": found["version"],
                "experiments": found.get("experiments", {})}
        return tagged(body, f'"{found["version"]}"', if_none_match)

    @app.get("/v1/users/{user_id:path}/predictions", dependencies=[authorized("predictions")])
    def predictions(user_id: str, if_none_match: str | None = Header(None)) -> Response:
        """The online models' view: propensity, cluster, interests (404 until the trainer has
        seen the user). ETag = the trainer's record number for the user, prefixed ``p``."""
        found = reader.predictions(check_id(user_id))
        if found is None:
            raise not_found(user_id, "predictions")
        return tagged(found, f'"p{found["version"]}"', if_none_match)

    @app.get("/v1/users/{user_id:path}/recommendations", dependencies=[authorized("recommendations")])
    def recommendations(user_id: str, if_none_match: str | None = Header(None)) -> Response:
        """The user's top-N items (each with its ``source``), the ``model_version``, the ``item``
        and event time (``at``) they answer (404 until the job wrote some: README
        "Recommendations"). ETag = their version, prefixed ``r``. Meant to be the one endpoint a
        public, key-less deployment opens (``api.public_reads``)."""
        found = reader.recommendations(check_id(user_id))
        if found is None:
            raise not_found(user_id, "recommendations")
        return tagged(found, f'"r{found["version"]}"', if_none_match)

    @app.post("/v1/users/{user_id:path}/controls/{action}", status_code=202, dependencies=[authorized("controls")])
    def user_control(user_id: str, action: Literal["reset", "opt-out", "opt-in"]) -> Response:
        """A user's control over their personalization, carried out by the job (README "User
        controls"): ``reset`` clears profile, segments and predictions and keeps consent;
        ``opt-out`` resets and profiles nothing more until ``opt-in``. 202 with the request as
        published; the job confirms it on the audit topic by ``request_id``."""
        request = new_request(check_id(user_id), action.replace("-", "_"))
        try:
            record = publisher.publish(request)
        except KafkaError as err:
            log.warning("control request not published: %s", err)
            raise ApiError(503, "the request queue is unavailable, retry later", {"Retry-After": "1"}) from None
        return Response(record, status_code=202, media_type="application/json")

    @app.post("/v1/profiles/batch", dependencies=[authorized("batch")])
    def batch(request: BatchRequest) -> Response:
        """Profiles of up to ``api.batch_max`` ids in one Redis round trip; ``null`` for an id
        without a profile."""
        if len(request.ids) > config.batch_max:
            raise ApiError(400, f"at most {config.batch_max} ids per batch, got {len(request.ids):,}")
        for user_id in request.ids:
            check_id(user_id)
        return Response(orjson.dumps({"profiles": reader.get_many(request.ids)}), media_type="application/json")

    @app.get("/v1/users/{user_id:path}/stream", dependencies=[authorized("stream")])
    def stream(user_id: str, last_event_id: str | None = Header(None)) -> StreamingResponse:
        """Server-Sent Events: ``change`` (a segment enter/exit, ``id`` = its stream entry id)
        and ``profile`` (the version whenever it moves). Reconnect with ``Last-Event-ID`` to get
        the changes missed since (as long as the stream still holds them: ``rules.stream_maxlen``)."""
        check_id(user_id)
        cursor = check_stream_id(last_event_id) if last_event_id else reader.last_change_id()
        return StreamingResponse(follow_user(reader, user_id, cursor, config.stream_poll),
                                 media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        """The process answers (liveness)."""
        return {"status": "ok"}

    @app.get("/readyz")
    def readyz() -> JSONResponse:
        """Redis answers a PING (readiness): 503 otherwise."""
        try:
            reader.ping()
        except redis.RedisError as err:
            return JSONResponse({"status": "redis unreachable", "error": type(err).__name__}, 503)
        return JSONResponse({"status": "ready"})

    @app.get("/metrics", include_in_schema=False)
    def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    if config.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=config.cors_origins, allow_methods=["GET", "POST"],
                           allow_headers=[KEY_HEADER, "If-None-Match", "Last-Event-ID", "Content-Type"],
                           expose_headers=["ETag"])
    app.add_middleware(lambda inner: metrics.middleware(inner))
    return app


def follow_user(reader: ProfileReader, user_id: str, cursor: str, poll_ms: int) -> Iterator[bytes]:
    """The SSE body: the user's current version, then their changes and versions as written.
    The change stream holds every user's changes: each connection reads it all and keeps its
    user's (see README "HTTP API" for what that costs)."""
    yield b"retry: 2000\n\n"
    try:
        version = reader.version(user_id)
        if version is not None:
            yield sse("profile", {"user_id": reader.resolve(user_id), "version": version})
        while True:
            target = reader.resolve(user_id)
            sent = False
            for entry_id, change in reader.changes_after(cursor, poll_ms):
                cursor = entry_id
                if change["user_id"] == target:
                    sent = True
                    yield sse("change", change, entry_id)
            latest = reader.version(user_id)
            if latest != version:
                version, sent = latest, True
                yield sse("profile", {"user_id": target, "version": version})
            if not sent:
                yield b": keep-alive\n\n"
    except redis.RedisError as err:
        log.warning("stream of a user ended: redis: %s", err)
        yield sse("error", {"error": "the profile store is unavailable; reconnect with Last-Event-ID"})


@contextmanager
def api_process(config_path: Path, port: int, env: dict[str, str] | None = None,
                overrides: tuple[str, ...] = (), timeout_s: float = 30.0) -> Iterator[str]:
    """Run the API as a child process on 127.0.0.1:``port`` until the block ends; yields its
    base URL once ``/readyz`` answers 200 (the job's tools and the tests start it this way)."""
    args = [sys.executable, "-m", "personalization", "api", "--config", str(config_path),
            "--set", "api.host=127.0.0.1", "--set", f"api.port={port}"]
    for override in overrides:
        args += ["--set", override]
    child = subprocess.Popen(args, env={**os.environ, **(env or {})})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while not _ready(url):
            if child.poll() is not None:
                raise RuntimeError(f"the API process exited with status {child.returncode}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the API did not become ready at {url} within {timeout_s:.0f} s")
            time.sleep(0.1)
        yield url
    finally:
        child.terminate()
        try:
            child.wait(10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def app_from_environment() -> FastAPI:
    """The app of one uvicorn worker process (``api.workers`` > 1): uvicorn starts workers from an
    import string, so the settings travel in the environment."""
    return create_app(Settings.model_validate(orjson.loads(os.environ[SETTINGS_ENV])))


@click.command()
@with_settings
def main(settings: Settings) -> None:
    """Serve the HTTP read API on api.host:api.port (OpenAPI docs at /docs)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        load_key_digests(settings.api)  # a bad keys file stops the command here, not in a worker
    except OSError as err:
        click.echo(f"error: api.keys_file: {err}", err=True)
        sys.exit(2)
    click.echo(f"personalization API on http://{settings.api.host}:{settings.api.port} (docs: /docs)")
    serve: dict[str, Any] = {"host": settings.api.host, "port": settings.api.port, "log_level": "warning",
                             "access_log": False}
    if settings.api.workers == 1:
        uvicorn.run(create_app(settings), **serve)
        return
    os.environ[SETTINGS_ENV] = settings.model_dump_json()
    uvicorn.run(f"{__name__}:app_from_environment", factory=True, workers=settings.api.workers, **serve)
