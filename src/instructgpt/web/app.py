"""The ``igpt serve`` web application: label page, arena, owner page, JSON API (FastAPI).

Every ``/api`` request needs ``Authorization: Bearer <token>`` (tokens: :mod:`instructgpt.web.auth`); the HTML pages
themselves are static and hold no data.  Untrusted text (prompts, model outputs) only ever reaches the browser as JSON
and is put into the page with ``textContent``; a strict Content-Security-Policy forbids inline scripts as a second
line of defence.  Request bodies over ``max_body_bytes`` get 413.
"""

from __future__ import annotations

import hashlib
import json
import random
import secrets
import tempfile
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Annotated, Any, Callable, Iterator

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from instructgpt.errors import UserError
from instructgpt.rundir import STORE_FILE, TOKENS_FILE, in_run
from instructgpt.store import ComparisonStore, StoreConflict, UnknownTask
from instructgpt.web import FLAGS
from instructgpt.web.auth import Access, Principal, read_tokens_file
from instructgpt.web.backends import ChatBackend, SamplingBackend, resolve_models

STATIC = Path(__file__).resolve().parent / "static"
MAX_BODY_BYTES = 64 * 1024
FLAG_KEYS = frozenset(k for k, _ in FLAGS)
SUBMISSION_ID = r"^[A-Za-z0-9_-]{8,80}$"

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
]


# ---------------------------------------------------------------------------------------------- ASGI middleware
class BodyLimitAndHeaders:
    """Rejects request bodies larger than ``limit`` with 413 (by Content-Length, or while reading a chunked body) and
    adds the security headers to every HTTP response."""

    def __init__(self, app, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                names = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = list(message.get("headers", [])) + [
                    h for h in SECURITY_HEADERS if h[0] not in names
                ]
            await send(message)

        headers = dict(scope.get("headers") or [])
        cl = headers.get(b"content-length")
        if cl is not None:
            try:
                too_big = int(cl) > self.limit
            except ValueError:
                too_big = True
            if too_big:
                return await _send_json(send_with_headers, 413, {"error": f"request body over {self.limit} bytes"})
        if scope.get("method") in ("POST", "PUT", "PATCH"):
            chunks, total, more = [], 0, True
            while more:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                body = message.get("body", b"")
                total += len(body)
                if total > self.limit:
                    return await _send_json(send_with_headers, 413, {"error": f"request body over {self.limit} bytes"})
                chunks.append(body)
                more = message.get("more_body", False)
            buffered = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]

            async def replay():
                if buffered:
                    return buffered.pop()
                return await receive()

            return await self.app(scope, replay, send_with_headers)
        return await self.app(scope, receive, send_with_headers)


async def _send_json(send, status: int, obj: dict) -> None:
    body = json.dumps(obj).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


# ---------------------------------------------------------------------------------------------- request bodies
class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RankBody(_Body):
    ranking: list[list[Annotated[int, Field(ge=0, le=63)]]] = Field(min_length=1, max_length=64)
    flags: dict[str, list[str]] = Field(default_factory=dict)
    demonstration: str | None = Field(default=None, max_length=8000)
    submission_id: str = Field(pattern=SUBMISSION_ID)

    @field_validator("flags")
    @classmethod
    def _known_flags(cls, v: dict[str, list[str]]) -> dict[str, list[str]]:
        for key, names in v.items():
            if not key.isdigit():
                raise ValueError(f"flags keys are response indices, got {key!r}")
            bad = [n for n in names if n not in FLAG_KEYS]
            if bad:
                raise ValueError(f"unknown flag {bad[0]!r}; known flags: {', '.join(sorted(FLAG_KEYS))}")
        return {k: sorted(set(names)) for k, names in v.items() if names}


class SkipBody(_Body):
    pass


class MatchBody(_Body):
    prompt: str = Field(min_length=1, max_length=4000)


class VoteBody(_Body):
    winner: str = Field(pattern=r"^(a|b|tie)$")
    submission_id: str = Field(pattern=SUBMISSION_ID)


# ---------------------------------------------------------------------------------------------- arena matches
class Match:
    def __init__(self, match_id: str, owner: str, prompt: str, models: tuple[str, str]):
        self.id = match_id
        self.owner = owner
        self.prompt = prompt
        self.models = models
        self.answers = ["", ""]
        self.state = ["new", "new"]  # new -> streaming -> done | error
        self.vote_id: int | None = None
        self.vote_submission: str | None = None
        self.created = time.time()
        self.lock = threading.Lock()


class Matches:
    def __init__(self, capacity: int = 2000, ttl_s: float = 6 * 3600):
        self._d: OrderedDict[str, Match] = OrderedDict()
        self._lock = threading.Lock()
        self.capacity, self.ttl_s = capacity, ttl_s

    def add(self, m: Match) -> None:
        with self._lock:
            self._d[m.id] = m
            now = time.time()
            while self._d and (len(self._d) > self.capacity or next(iter(self._d.values())).created < now - self.ttl_s):
                self._d.popitem(last=False)

    def get(self, match_id: str) -> Match | None:
        with self._lock:
            return self._d.get(match_id)


# ---------------------------------------------------------------------------------------------- gold judge
def load_gold_scorer(run_dir: Path) -> tuple[Callable[[dict, str], float | None] | None, str]:
    """The world's gold judge as a ``scorer(ranking_row, text) -> float`` (None for a prompt that is not the world's),
    or ``(None, reason)`` when the run has no usable world."""
    world_dir = in_run(run_dir, "world")
    if not world_dir.is_dir():
        return None, "this run has no world/"
    try:
        from instructgpt.world import World  # built by another module; optional here
    except Exception as exc:  # ImportError or anything the module raises at import
        return None, f"instructgpt.world is unavailable ({type(exc).__name__})"
    try:
        world = World.load(world_dir)
        judge = world.judge()
    except Exception as exc:
        return None, f"the world could not be loaded: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"

    def record_for(row: dict) -> Any:
        # the store's prompt ids are the world's prompt ids when igpt label sampled the world's prompts
        try:
            return world.prompt(row["prompt_id"])
        except Exception:
            pass
        meta = row.get("prompt_meta") or {}
        if isinstance(meta.get("record"), dict):
            return meta["record"]
        if "family" in meta:
            return {**meta, "id": meta.get("id", row["prompt_id"]), "prompt": meta.get("prompt", row["prompt"])}
        return None

    def scorer(row: dict, text: str) -> float | None:
        rec = record_for(row)
        return None if rec is None else float(judge.score(rec, text).score)

    return scorer, ""


# ---------------------------------------------------------------------------------------------- the app
def _error(status: int, msg: str) -> JSONResponse:
    return JSONResponse({"error": msg}, status_code=status, headers={"cache-control": "no-store"})


class HTTPErr(Exception):
    def __init__(self, status: int, msg: str):
        self.status, self.msg = status, msg


def create_app(
    run_dir: str | Path,
    *,
    access: Access | None = None,
    tokens_file: str | Path | None = None,
    backend: ChatBackend | None = None,
    models: list[str] | None = None,
    store: ComparisonStore | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
    gold: bool = True,
) -> Any:
    """Build the ASGI app.

    ``run_dir``: the run folder; the store is ``<run>/comparisons/comparisons.sqlite`` unless ``store`` is given.
    ``access``: tokens (else read from ``tokens_file``, else ``<run>/comparisons/tokens.json``).
    ``backend`` + ``models``: the arena's models; without a backend, ``models`` (names under the run, paths, or
    ``name=path``; default: sft/ppo-ptx/ppo/pretrain found in the run) are loaded with ``instructgpt.sampling``.
    ``gold``: show agreement with the world's gold judge on the owner page when the run has a world.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"--run {run_dir}: not a directory")
    comparisons = in_run(run_dir, "label")
    if access is None:
        path = Path(tokens_file) if tokens_file is not None else comparisons / TOKENS_FILE
        access = Access(read_tokens_file(path))
    if store is None:
        store = ComparisonStore(comparisons / STORE_FILE)
    if backend is None:
        model_dirs = resolve_models(run_dir, models)
        arena_models = list(model_dirs)
        backend = SamplingBackend(model_dirs) if model_dirs else None
    else:
        arena_models = list(models or getattr(backend, "models", None) or [])
    matches = Matches()
    gold_state: dict[str, Any] = {"loaded": False, "scorer": None, "reason": "disabled", "cache": {}}
    gold_lock = threading.Lock()

    app = FastAPI(title="instructgpt serve", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.store = store
    app.state.access = access
    app.state.matches = matches
    app.state.arena_models = arena_models

    # ------------------------------------------------------------------ errors
    @app.exception_handler(HTTPErr)
    async def _http_err(request: Request, exc: HTTPErr):
        return _error(exc.status, exc.msg)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        parts = []
        for e in exc.errors()[:5]:
            loc = ".".join(str(x) for x in e.get("loc", ()) if x != "body")
            msg = str(e.get("msg", "invalid")).removeprefix("Value error, ")
            parts.append(f"{loc or 'body'}: {msg}")
        return _error(422, "; ".join(parts) or "invalid request")

    @app.exception_handler(StoreConflict)
    async def _conflict(request: Request, exc: StoreConflict):
        return _error(409, str(exc))

    @app.exception_handler(UnknownTask)
    async def _unknown(request: Request, exc: UnknownTask):
        return _error(404, str(exc))

    @app.exception_handler(UserError)
    async def _user(request: Request, exc: UserError):
        return _error(400, str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _framework(request: Request, exc: StarletteHTTPException):
        # routing (404, 405) and FastAPI's own body parsing (a body that is not UTF-8, JSON nested too deep): the
        # documented {"error": ...} shape, one line
        if exc.status_code == 400 and "parsing the body" in str(exc.detail):
            msg = "the request body is not JSON that can be read (it must be UTF-8 text, not nested too deeply)"
        else:
            msg = {404: "not found", 405: "method not allowed"}.get(exc.status_code, str(exc.detail).splitlines()[0])
        return _error(exc.status_code, msg)

    # ------------------------------------------------------------------ auth
    def principal(request: Request) -> Principal:
        h = request.headers.get("authorization", "")
        scheme, _, token = h.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise HTTPErr(401, "missing access token: open the login link igpt serve printed (…?token=…)")
        p = access.check(token.strip())
        if p is None:
            raise HTTPErr(401, "invalid access token")
        return p

    def owner(p: Principal = Depends(principal)) -> Principal:
        if not p.is_owner:
            raise HTTPErr(403, f"{p.name} is not an owner: the owner page needs an owner token")
        return p

    def nostore(data: Any, status: int = 200) -> JSONResponse:
        return JSONResponse(data, status_code=status, headers={"cache-control": "no-store"})

    # ------------------------------------------------------------------ pages
    def page(name: str) -> FileResponse:
        return FileResponse(STATIC / name, media_type="text/html; charset=utf-8", headers={"cache-control": "no-cache"})

    @app.get("/", include_in_schema=False)
    def index():
        return RedirectResponse("/label", status_code=307)

    @app.get("/label", include_in_schema=False)
    def label_page():
        return page("label.html")

    @app.get("/arena", include_in_schema=False)
    def arena_page():
        return page("arena.html")

    @app.get("/owner", include_in_schema=False)
    def owner_page():
        return page("owner.html")

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str):
        path = STATIC / name
        types = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8", ".png": "image/png",
                 ".svg": "image/svg+xml"}
        if "/" in name or name.startswith(".") or path.suffix not in types or not path.is_file():
            raise HTTPErr(404, "not found")
        return FileResponse(path, media_type=types[path.suffix], headers={"cache-control": "no-cache"})

    # ------------------------------------------------------------------ API: general
    @app.get("/api/health")
    def health():
        return nostore({"ok": True})

    @app.get("/api/me")
    def me(p: Principal = Depends(principal)):
        return nostore({"name": p.name, "role": p.role, "progress": store.progress(p.name), "flags": FLAGS,
                        "arena_models": len(arena_models)})

    # ------------------------------------------------------------------ API: labeling
    def public_task(task: dict, labeler: str) -> dict:
        # Blind and shuffled: no model names or temperatures, a per-(task, labeler) display order.
        order = list(range(task["k"]))
        random.Random(f"{task['task_id']}:{labeler}").shuffle(order)
        return {
            "task_id": task["task_id"],
            "prompt": task["prompt"],
            "k": task["k"],
            "responses": [{"index": i, "text": task["responses"][i]["text"]} for i in order],
        }

    @app.get("/api/task/next")
    def next_task(p: Principal = Depends(principal)):
        task = store.next_task(p.name)
        return nostore({"task": public_task(task, p.name) if task else None, "progress": store.progress(p.name),
                        "flags": FLAGS})

    @app.post("/api/task/{task_id}/rank")
    def rank(task_id: int, body: RankBody, p: Principal = Depends(principal)):
        task = store.task(task_id)
        if task["kind"] != "label":
            raise HTTPErr(400, f"task {task_id} is not a labeling task")
        for key in body.flags:
            if int(key) >= task["k"]:
                raise HTTPErr(422, f"flags: response index {key} is out of range for K = {task['k']}")
        rid = store.submit_ranking(
            task_id,
            p.name,
            body.ranking,
            flags=body.flags,
            demonstration=body.demonstration,
            submission_id=body.submission_id,
            source="human",
            leased=True,
        )
        return nostore({"ranking_id": rid, "progress": store.progress(p.name)})

    @app.post("/api/task/{task_id}/skip")
    def skip(task_id: int, body: SkipBody | None = None, p: Principal = Depends(principal)):
        store.skip_task(task_id, p.name)
        return nostore({"skipped": task_id, "progress": store.progress(p.name)})

    @app.post("/api/undo")
    def undo(body: SkipBody | None = None, p: Principal = Depends(principal)):
        ok = store.undo_last(p.name)
        return nostore({"undone": ok, "progress": store.progress(p.name)})

    # ------------------------------------------------------------------ API: arena
    @app.get("/api/arena/leaderboard")
    def leaderboard(p: Principal = Depends(principal)):
        return nostore({"leaderboard": store.leaderboard(), "models": len(arena_models)})

    @app.post("/api/arena/match")
    def new_match(body: MatchBody, p: Principal = Depends(principal)):
        if backend is None or len(arena_models) < 2:
            raise HTTPErr(409, f"the arena needs two models; this server has {len(arena_models)} "
                               "(train sft and ppo-ptx, or pass --models)")
        pair = tuple(random.sample(arena_models, 2))
        m = Match(secrets.token_urlsafe(12), p.name, body.prompt, pair)  # type: ignore[arg-type]
        matches.add(m)
        return nostore({"match_id": m.id})

    def get_match(match_id: str, p: Principal) -> Match:
        m = matches.get(match_id)
        if m is None or m.owner != p.name:
            raise HTTPErr(404, "unknown or expired match: start a new one")
        return m

    @app.get("/api/arena/match/{match_id}/stream/{side}")
    def stream(match_id: str, side: str, p: Principal = Depends(principal)):
        if side not in ("a", "b"):
            raise HTTPErr(404, "side must be a or b")
        m = get_match(match_id, p)
        i = 0 if side == "a" else 1
        with m.lock:
            state = m.state[i]
            if state == "new":
                m.state[i] = "streaming"
        if state == "streaming":
            raise HTTPErr(409, f"answer {side} is already streaming")

        def sse(event: str | None, data: dict) -> bytes:
            head = f"event: {event}\n" if event else ""
            return (head + "data: " + json.dumps(data) + "\n\n").encode()

        def gen() -> Iterator[bytes]:
            if state in ("done", "error"):
                yield sse(None, {"text": m.answers[i]})
                yield sse("done", {"chars": len(m.answers[i])})
                return
            ok = False
            try:
                for piece in backend.stream(m.models[i], [{"role": "user", "content": m.prompt}]):
                    if not piece:
                        continue
                    m.answers[i] += piece
                    yield sse(None, {"text": piece})
                ok = True
                yield sse("done", {"chars": len(m.answers[i])})
            except Exception as exc:  # a model failure is reported in the stream, not as a broken connection
                yield sse("error", {"error": f"generation failed: {str(exc)[:200] or type(exc).__name__}"})
            finally:
                with m.lock:
                    m.state[i] = "done" if ok else "error"

        return StreamingResponse(
            gen(), media_type="text/event-stream",
            headers={"cache-control": "no-store", "x-accel-buffering": "no"},
        )

    @app.post("/api/arena/match/{match_id}/vote")
    def vote(match_id: str, body: VoteBody, p: Principal = Depends(principal)):
        m = get_match(match_id, p)
        with m.lock:
            if m.state != ["done", "done"]:
                raise HTTPErr(409, "both answers must finish streaming before you vote")
            if m.vote_id is not None and m.vote_submission != body.submission_id:
                raise HTTPErr(409, "this match already has a vote: start a new one")
            vote_id = store.add_arena_vote(
                m.prompt, m.models[0], m.models[1], m.answers[0], m.answers[1], body.winner, p.name,
                submission_id=body.submission_id,
            )  # a retry (same submission id) returns the stored vote and writes nothing
            m.vote_id, m.vote_submission = vote_id, body.submission_id
        return nostore({"vote_id": vote_id, "models": {"a": m.models[0], "b": m.models[1]}})

    # ------------------------------------------------------------------ API: owner
    def gold_agreement() -> tuple[dict | None, str]:
        if not gold:
            return None, "disabled"
        with gold_lock:
            if not gold_state["loaded"]:
                gold_state["scorer"], gold_state["reason"] = load_gold_scorer(run_dir)
                gold_state["loaded"] = True
            scorer = gold_state["scorer"]
            if scorer is None:
                return None, gold_state["reason"]
            cache = gold_state["cache"]

            def cached(row: dict, text: str) -> float | None:
                key = (row["prompt_id"], hashlib.sha1(text.encode("utf-8")).hexdigest())
                if key not in cache:
                    cache[key] = scorer(row, text)
                return cache[key]

            try:
                return store.agreement_with(cached), ""
            except Exception as exc:
                return None, f"the gold judge failed: {str(exc)[:200] or type(exc).__name__}"

    @app.get("/api/owner")
    def owner_data(p: Principal = Depends(owner)):
        counts = store.labeler_counts()
        agreement = store.agreement()
        gold_ag, gold_reason = gold_agreement()
        roles = {q.name: q.role for q in access.principals}
        names = sorted(set(counts) | set(roles))
        rows = []
        for name in names:
            c = counts.get(name) or {"rankings": 0, "sim": 0, "human": 0, "arena": 0, "skipped": 0,
                                     "demonstrations": 0, "undone": 0}
            rows.append({
                "name": name,
                "role": roles.get(name, "simulated" if c["sim"] else "-"),
                **c,
                "agreement": agreement["per_labeler"].get(name),
                "gold": gold_ag["per_labeler"].get(name) if gold_ag else None,
            })
        return nostore({
            "labelers": rows,
            "agreement": agreement["overall"],
            "agreement_pairs": agreement["per_pair"],
            "gold": gold_ag["overall"] if gold_ag else None,
            "gold_reason": gold_reason,
            "gold_unscored": gold_ag["unscored"] if gold_ag else None,
            "queue": store.queue_stats(),
            "leaderboard": store.leaderboard(),
            "arena_models": arena_models,
        })

    @app.get("/api/export/{kind}")
    def export(kind: str, source: str | None = None, p: Principal = Depends(owner)):
        fns = {"ranked": store.export_ranked, "pairwise": store.export_pairwise,
               "demonstrations": store.export_demonstrations}
        if kind not in fns:
            raise HTTPErr(404, f"export kind must be one of {', '.join(fns)}")
        if source is not None and source not in ("sim", "human", "arena"):
            raise HTTPErr(422, "source must be sim, human or arena")
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / f"{kind}.jsonl"
            if kind == "demonstrations":
                fns[kind](out)
            else:
                fns[kind](out, source=source)
            data = out.read_bytes()
        return Response(
            data, media_type="application/x-ndjson",
            headers={"content-disposition": f'attachment; filename="{kind}.jsonl"', "cache-control": "no-store"},
        )

    app.add_middleware(BodyLimitAndHeaders, limit=max_body_bytes)
    return app
