"""API tests for ``igpt serve`` (issue 8): tokens, validation, idempotency, safe serving, concurrency, streaming."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_web_support import TOKENS, XSS, FakeBackend, access, auth, make_run  # noqa: E402

from instructgpt.errors import UserError
from instructgpt.store import ComparisonStore
from instructgpt.web import FLAGS, serve
from instructgpt.web.app import STATIC, create_app
from instructgpt.web.auth import Access, ensure_tokens, read_tokens_file
from instructgpt.web.backends import resolve_models

SRC = str(Path(__file__).resolve().parents[1] / "src")


@pytest.fixture()
def setup(tmp_path):
    run, store = make_run(tmp_path, n_tasks=4, k=4, xss=True)
    backend = FakeBackend()
    client = TestClient(create_app(run, access=access(), backend=backend, store=store))
    return client, store, backend, run


def _rank(client, who, task_id, ranking, sid, **extra):
    return client.post(f"/api/task/{task_id}/rank", headers=auth(who),
                       json={"ranking": ranking, "submission_id": sid, **extra})


def _nrows(store) -> int:
    return store.count_rankings(include_undone=True) + len(store.arena_votes())


def test_every_api_request_needs_a_valid_token(setup):
    client, store, backend, _ = setup
    task_id = store.next_task("zed")["task_id"]
    calls = [
        ("GET", "/api/me", None), ("GET", "/api/task/next", None),
        ("POST", f"/api/task/{task_id}/rank", {"ranking": [[0], [1], [2], [3]], "submission_id": "sub-00000001"}),
        ("POST", f"/api/task/{task_id}/skip", {}), ("POST", "/api/undo", {}),
        ("POST", "/api/arena/match", {"prompt": "hi"}), ("GET", "/api/arena/leaderboard", None),
        ("GET", "/api/owner", None), ("GET", "/api/export/ranked", None),
    ]
    for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789"}, {"Authorization": "Basic abc"},
                    {"Authorization": "Bearer "}):
        for method, url, body in calls:
            r = client.request(method, url, headers=headers, json=body)
            assert r.status_code == 401, (method, url, headers, r.text)
            assert "token" in r.json()["error"]
    assert _nrows(store) == 0 and store.progress("zed")["skipped"] == 0
    assert backend.calls == []
    # a labeler token cannot open the owner page or export
    assert client.get("/api/owner", headers=auth("alice")).status_code == 403
    assert client.get("/api/export/ranked", headers=auth("alice")).status_code == 403
    assert client.get("/api/health").json() == {"ok": True}


def test_label_submit_is_idempotent_and_exported(setup, tmp_path):
    client, store, _, _ = setup
    r = client.get("/api/task/next", headers=auth("alice"))
    assert r.status_code == 200
    task = r.json()["task"]
    assert [f[0] for f in r.json()["flags"]] == [k for k, _ in FLAGS]
    assert sorted(x["index"] for x in task["responses"]) == [0, 1, 2, 3]
    assert all(set(x) == {"index", "text"} for x in task["responses"])  # blind: no model or temperature
    body = {"ranking": [[2], [0, 3], [1]], "submission_id": "sub-alice-0001", "flags": {"1": ["hallucination", "toxic"]},
            "demonstration": "A better answer."}
    first = client.post(f"/api/task/{task['task_id']}/rank", headers=auth("alice"), json=body)
    assert first.status_code == 200, first.text
    for _ in range(3):  # double clicks and retries
        again = client.post(f"/api/task/{task['task_id']}/rank", headers=auth("alice"), json=body)
        assert again.status_code == 200 and again.json()["ranking_id"] == first.json()["ranking_id"]
    assert store.count_rankings() == 1
    assert first.json()["progress"] == {"done": 1, "skipped": 0, "remaining": 3}
    (row,) = store.rankings()
    assert row["labeler"] == "alice" and row["source"] == "human" and row["ranking"] == [[2], [0, 3], [1]]
    assert row["flags"] == {"1": ["hallucination", "toxic"]} and row["demonstration"] == "A better answer."
    store.export_ranked(tmp_path / "ranked.jsonl")
    (line,) = [json.loads(x) for x in (tmp_path / "ranked.jsonl").read_text().splitlines()]
    assert line["labeler"] == "alice" and line["ranking"] == [[2], [0, 3], [1]] and line["source"] == "human"
    r = client.get("/api/export/pairwise", headers=auth("owner"))
    assert r.status_code == 200 and len(r.text.splitlines()) == 5
    assert all(json.loads(x)["labeler"] == "alice" for x in r.text.splitlines())
    # ranking the same task again under a new submission id is a conflict, not a second ranking
    r = _rank(client, "alice", task["task_id"], [0, 1, 2, 3], "sub-alice-0002")
    assert r.status_code == 422  # flat list is not tiers on the API
    r = _rank(client, "alice", task["task_id"], [[0], [1], [2], [3]], "sub-alice-0002")
    assert r.status_code == 409 and "already ranked" in r.json()["error"]
    # a submission id reused by someone else for another task is a conflict too
    other = store.next_task("bob")["task_id"]
    r = client.post(f"/api/task/{other}/rank", headers=auth("bob"), json=body)
    assert r.status_code == 409 and "already used" in r.json()["error"]
    assert store.count_rankings() == 1


@pytest.mark.parametrize(
    "payload, status, fragment",
    [
        ({"ranking": [[0], [1], [2]], "submission_id": "sub-00000001"}, 400, "not a permutation"),
        ({"ranking": [[0], [1], [2], [2]], "submission_id": "sub-00000001"}, 400, "not a permutation"),
        ({"ranking": [[0], [1], [2], [3]], "submission_id": "short"}, 422, "submission_id"),
        ({"ranking": [[0], [1], [2], [3]]}, 422, "submission_id: Field required"),
        ({"ranking": "0123", "submission_id": "sub-00000001"}, 422, "ranking"),
        ({"ranking": [[0], [1], [2], [-3]], "submission_id": "sub-00000001"}, 422, "ranking"),
        ({"ranking": [[0], [1], [2], [3]], "submission_id": "sub-00000001", "flags": {"0": ["bogus"]}}, 422,
         "unknown flag 'bogus'"),
        ({"ranking": [[0], [1], [2], [3]], "submission_id": "sub-00000001", "flags": {"7": ["toxic"]}}, 422,
         "out of range"),
        ({"ranking": [[0], [1], [2], [3]], "submission_id": "sub-00000001", "flags": {"x": ["toxic"]}}, 422,
         "response indices"),
        ({"ranking": [[0], [1], [2], [3]], "submission_id": "sub-00000001", "extra": 1}, 422, "extra"),
        ({"ranking": [[0], [1], [2], [3]], "submission_id": "sub-00000001", "demonstration": "x" * 8001}, 422,
         "demonstration"),
    ],
)
def test_rank_validation_gives_clear_4xx(setup, payload, status, fragment):
    client, store, _, _ = setup
    task_id = store.next_task("alice")["task_id"]
    r = client.post(f"/api/task/{task_id}/rank", headers=auth("alice"), json=payload)
    assert r.status_code == status, r.text
    assert fragment in r.json()["error"]
    assert "\n" not in r.json()["error"]
    assert store.count_rankings(include_undone=True) == 0


def test_bad_requests_and_oversized_bodies(setup):
    client, store, _, _ = setup
    h = {**auth("alice"), "content-type": "application/json"}
    assert client.post("/api/task/1/rank", headers=h, content=b"{not json").status_code == 422
    r = client.post("/api/task/999/rank", headers=auth("alice"),
                    json={"ranking": [[0], [1]], "submission_id": "sub-00000001"})
    assert r.status_code == 404 and "unknown task" in r.json()["error"]
    assert client.post("/api/task/abc/rank", headers=auth("alice"), json={}).status_code == 422
    big = {"ranking": [[0], [1], [2], [3]], "submission_id": "sub-00000001", "demonstration": "x" * 70_000}
    r = client.post("/api/task/1/rank", headers=auth("alice"), json=big)
    assert r.status_code == 413 and "bytes" in r.json()["error"]

    def chunks():  # no content-length: the limit is enforced while reading
        for _ in range(20):
            yield b"x" * 8192

    r = client.post("/api/task/1/rank", headers=h, content=chunks())
    assert r.status_code == 413
    r = client.post("/api/arena/match", headers=auth("alice"), json={"prompt": "x" * 4001})
    assert r.status_code == 422 and "prompt" in r.json()["error"]
    assert client.get("/api/nope", headers=auth("alice")).status_code == 404
    assert client.get("/static/../app.py").status_code == 404
    assert client.get("/static/__init__.py").status_code == 404
    assert store.count_rankings(include_undone=True) == 0


def test_untrusted_text_is_served_safely(setup):
    client, store, _, _ = setup
    r = client.get("/api/task/next", headers=auth("alice"))
    assert r.headers["content-type"].startswith("application/json")
    assert any(x["text"] == "Evil: " + XSS for x in r.json()["task"]["responses"])
    for path in ("/label", "/arena", "/owner", "/api/task/next", "/static/label.js"):
        r = client.get(path, headers=auth("alice"))
        csp = r.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "object-src 'none'" in csp
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["referrer-policy"] == "no-referrer"
        assert r.headers["x-frame-options"] == "DENY"
    # the pages never turn strings into HTML, and carry no inline script
    for f in STATIC.iterdir():
        text = f.read_text(encoding="utf-8")
        assert not re.search(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|eval\(|new Function", text), f
        if f.suffix == ".html":
            assert not re.search(r"<script(?![^>]*\bsrc=)", text), f
            assert not re.search(r"\son[a-z]+=", text), f


def test_skip_undo_and_progress(setup):
    client, store, _, _ = setup
    t1 = client.get("/api/task/next", headers=auth("alice")).json()["task"]["task_id"]
    assert client.get("/api/task/next", headers=auth("alice")).json()["task"]["task_id"] == t1  # same task on reload
    r = client.post(f"/api/task/{t1}/skip", headers=auth("alice"), json={})
    assert r.status_code == 200 and r.json()["progress"]["skipped"] == 1
    t2 = client.get("/api/task/next", headers=auth("alice")).json()["task"]["task_id"]
    assert t2 != t1
    assert _rank(client, "alice", t2, [[0], [1], [2], [3]], "sub-00000002").status_code == 200
    r = client.post("/api/undo", headers=auth("alice"), json={})
    assert r.json()["undone"] is True and r.json()["progress"]["done"] == 0
    assert store.count_rankings() == 0
    assert client.get("/api/task/next", headers=auth("alice")).json()["task"]["task_id"] == t2
    assert _rank(client, "alice", t2, [[3], [2], [1], [0]], "sub-00000003").status_code == 200
    assert [r["ranking"] for r in store.rankings()] == [[[3], [2], [1], [0]]]
    assert client.post("/api/undo", headers=auth("bob"), json={}).json()["undone"] is False
    me = client.get("/api/me", headers=auth("alice")).json()
    assert me["name"] == "alice" and me["progress"] == {"done": 1, "skipped": 1, "remaining": 2}


def test_owner_page_data_agreement(tmp_path):
    run, store = make_run(tmp_path, n_tasks=2, k=3, want_labels=2)
    client = TestClient(create_app(run, access=access(), backend=FakeBackend(), store=store))
    for who, order in (("alice", [[0], [1], [2]]), ("bob", [[1], [0], [2]])):
        for i in range(2):
            t = client.get("/api/task/next", headers=auth(who)).json()["task"]["task_id"]
            assert _rank(client, who, t, order, f"sub-{who}-{i:04d}").status_code == 200
    assert client.get("/api/task/next", headers=auth("alice")).json()["task"] is None
    d = client.get("/api/owner", headers=auth("owner")).json()
    assert d["queue"] == {"tasks": 2, "complete": 2, "pending": 0, "labels": 4, "wanted_labels": 4}
    assert d["agreement"]["pairs"] == 6 and d["agreement"]["agree"] == 4
    rows = {r["name"]: r for r in d["labelers"]}
    assert rows["alice"]["human"] == 2 and rows["alice"]["agreement"]["rate"] == pytest.approx(2 / 3)
    assert d["gold"] is None and "world" in d["gold_reason"]


def test_arena_streams_votes_and_leaderboard(setup):
    client, store, backend, _ = setup
    r = client.post("/api/arena/match", headers=auth("alice"), json={"prompt": "Tell me " + XSS})
    assert r.status_code == 200
    mid = r.json()["match_id"]
    vote = {"winner": "b", "submission_id": "vote-00000001"}
    assert client.post(f"/api/arena/match/{mid}/vote", headers=auth("alice"), json=vote).status_code == 409
    assert client.get(f"/api/arena/match/{mid}/stream/a", headers=auth("bob")).status_code == 404  # not bob's
    texts = {}
    for side in "ab":
        with client.stream("GET", f"/api/arena/match/{mid}/stream/{side}", headers=auth("alice")) as s:
            assert s.status_code == 200 and s.headers["content-type"].startswith("text/event-stream")
            events = [e for e in s.iter_text() for e in e.split("\n\n") if e.strip()]
        # many separate events, then done
        data = [json.loads(e.split("data: ", 1)[1]) for e in events]
        assert len(data) > 3 and events[-1].startswith("event: done")
        texts[side] = "".join(d.get("text", "") for d in data)
    assert {c[0] for c in backend.calls} == {"sft", "ppo-ptx"}
    assert backend.calls[0][1] == [{"role": "user", "content": "Tell me " + XSS}]
    r = client.post(f"/api/arena/match/{mid}/vote", headers=auth("alice"), json=vote)
    assert r.status_code == 200
    models = r.json()["models"]
    assert set(models.values()) == {"sft", "ppo-ptx"}
    again = client.post(f"/api/arena/match/{mid}/vote", headers=auth("alice"), json=vote)
    assert again.json()["vote_id"] == r.json()["vote_id"]
    other = client.post(f"/api/arena/match/{mid}/vote", headers=auth("alice"),
                        json={"winner": "a", "submission_id": "vote-00000002"})
    assert other.status_code == 409
    (v,) = store.arena_votes()
    assert v["answer_a"] == texts["a"] and v["answer_b"] == texts["b"] and v["winner"] == "b" and v["voter"] == "alice"
    assert v["model_a"] == models["a"]
    (row,) = store.rankings(source="arena")
    assert row["ranking"] == [[1], [0]] and row["models"] == [models["a"], models["b"]]
    board = client.get("/api/arena/leaderboard", headers=auth("bob")).json()["leaderboard"]
    assert board[0]["model"] == models["b"] and board[0]["wins"] == 1 and board[1]["losses"] == 1
    bad = client.post(f"/api/arena/match/{mid}/vote", headers=auth("alice"), json={"winner": "c", "submission_id": "vote-00000003"})
    assert bad.status_code == 422


def test_arena_needs_two_models(tmp_path):
    run, store = make_run(tmp_path, n_tasks=1)
    client = TestClient(create_app(run, access=access(), backend=FakeBackend(models=["sft"]), store=store))
    r = client.post("/api/arena/match", headers=auth("alice"), json={"prompt": "hi"})
    assert r.status_code == 409 and "two models" in r.json()["error"]
    client = TestClient(create_app(run, access=access(), store=store))  # no model folders in this run
    assert client.post("/api/arena/match", headers=auth("alice"), json={"prompt": "hi"}).status_code == 409


def test_real_sampling_backend_streams_a_tiny_model(tmp_path, tiny_model_dir):
    run, store = make_run(tmp_path, n_tasks=1)
    from instructgpt.web.backends import SamplingBackend

    dirs = resolve_models(run, [f"sft={tiny_model_dir}", f"ppo={tiny_model_dir}"])
    backend = SamplingBackend(dirs, max_new_tokens=12, device="cpu")
    app = create_app(run, access=access(), store=store, backend=backend, models=list(dirs))
    client = TestClient(app)
    mid = client.post("/api/arena/match", headers=auth("alice"), json={"prompt": "Hello there."}).json()["match_id"]
    for side in "ab":
        with client.stream("GET", f"/api/arena/match/{mid}/stream/{side}", headers=auth("alice")) as s:
            events = [e for e in s.iter_text() for e in e.split("\n\n") if e.strip()]
        assert events[-1].startswith("event: done"), events[-1]
        assert len(events) > 2  # a random tiny model streams several pieces
    r = client.post(f"/api/arena/match/{mid}/vote", headers=auth("alice"), json={"winner": "tie", "submission_id": "vote-00000001"})
    assert r.status_code == 200 and set(r.json()["models"].values()) == {"sft", "ppo"}


def test_tokens_file_created_0600_and_reused(tmp_path):
    path = tmp_path / "run" / "comparisons" / "tokens.json"
    entries, new = ensure_tokens(path, ["alice", "bob"])
    assert {e["name"] for e in new} == {"owner", "alice", "bob"}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [e["role"] for e in entries if e["name"] == "owner"] == ["owner"]
    entries2, new2 = ensure_tokens(path, ["alice", "carol"])
    assert [e["name"] for e in new2] == ["carol"]
    assert {e["name"]: e["token"] for e in entries2}["alice"] == {e["name"]: e["token"] for e in entries}["alice"]
    acc = Access(read_tokens_file(path))
    tok = {e["name"]: e["token"] for e in entries2}
    assert acc.check(tok["carol"]).name == "carol" and acc.check(tok["owner"]).is_owner
    assert acc.check("nope") is None and acc.check(None) is None
    simple = tmp_path / "simple.json"
    simple.write_text(json.dumps({"owner": "o" * 20, "dana": "d" * 20}))
    acc = Access(read_tokens_file(simple))
    assert acc.check("d" * 20).name == "dana" and acc.check("o" * 20).role == "owner"
    for bad in ("{", json.dumps({"a": "short"}), json.dumps([1, 2]), json.dumps({"x y": "t" * 20})):
        simple.write_text(bad)
        with pytest.raises(UserError):
            read_tokens_file(simple)
    with pytest.raises(UserError, match="not found"):
        read_tokens_file(tmp_path / "missing.json")
    with pytest.raises(UserError, match="not allowed"):
        ensure_tokens(path, ["bad name"])


def test_serve_and_models_user_errors(tmp_path):
    with pytest.raises(UserError, match="not a directory"):
        serve(str(tmp_path / "nope"))
    with pytest.raises(UserError, match="igpt label --run"):
        serve(str(tmp_path))  # no comparisons/ yet: serve does not create the folder igpt label owns
    (tmp_path / "comparisons.partial").mkdir()
    with pytest.raises(UserError, match="--resume"):
        serve(str(tmp_path))
    assert not (tmp_path / "comparisons").exists()
    (tmp_path / "sft").mkdir()
    (tmp_path / "sft" / "config.json").write_text("{}")
    (tmp_path / "ppo").mkdir()  # not a model folder
    assert resolve_models(tmp_path, None) == {"sft": tmp_path / "sft"}
    assert resolve_models(tmp_path, ["sft", f"mine={tmp_path / 'sft'}"]) == {"sft": tmp_path / "sft", "mine": tmp_path / "sft"}
    with pytest.raises(UserError, match="not a model folder"):
        resolve_models(tmp_path, ["ppo"])
    with pytest.raises(UserError, match="twice"):
        resolve_models(tmp_path, ["sft", "sft"])
    with pytest.raises(UserError, match="tokens file not found"):
        create_app(tmp_path)


# ------------------------------------------------------------------------------------------ real servers
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_up(base: str, timeout: float = 30.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if httpx.get(base + "/api/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise AssertionError("server did not start")


def test_concurrent_labelers_on_a_real_server(tmp_path):
    import uvicorn

    run, store = make_run(tmp_path, n_tasks=60, k=3, want_labels=2)
    names = [f"lab{i}" for i in range(6)]
    acc = Access([{"name": n, "role": "labeler", "token": f"{n}-token-0123456789"} for n in names])
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(run, access=acc, backend=FakeBackend(), store=store),
                                           host="127.0.0.1", port=port, log_level="warning"))
    th = threading.Thread(target=server.run, daemon=True)
    th.start()
    base = f"http://127.0.0.1:{port}"
    _wait_up(base)
    errors, done = [], {n: 0 for n in names}

    def labeler(name):
        h = {"Authorization": f"Bearer {name}-token-0123456789"}
        with httpx.Client(base_url=base, headers=h, timeout=30) as c:
            for i in range(15):
                task = c.get("/api/task/next").json()["task"]
                body = {"ranking": [[0], [2], [1]], "submission_id": f"{name}-{i:05d}"}
                ids = {c.post(f"/api/task/{task['task_id']}/rank", json=body).json().get("ranking_id") for _ in range(2)}
                if len(ids) != 1 or None in ids:
                    errors.append((name, i, ids))
                done[name] += 1

    try:
        threads = [threading.Thread(target=labeler, args=(n,)) for n in names]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        r = httpx.post(base + "/api/task/1/rank", json={"ranking": [[0], [1], [2]], "submission_id": "intruder-1"})
        assert r.status_code == 401
    finally:
        server.should_exit = True
        th.join(10)
    assert not errors
    rows = store.rankings()
    assert len(rows) == 6 * 15 == len({r["submission_id"] for r in rows})
    assert len({(r["task_id"], r["labeler"]) for r in rows}) == len(rows)
    per_task = {}
    for r in rows:
        per_task[r["task_id"]] = per_task.get(r["task_id"], 0) + 1
    assert max(per_task.values()) <= 2  # leases: no task was given to more labelers than it wanted


SERVER = """
import sys
sys.path.insert(0, sys.argv[1])
import uvicorn
from instructgpt.web.app import create_app
uvicorn.run(create_app(sys.argv[2]), host="127.0.0.1", port=int(sys.argv[3]), log_level="warning")
"""


def test_server_killed_mid_submission_loses_nothing_acknowledged(tmp_path):
    run, store = make_run(tmp_path, n_tasks=400, k=2)
    store.close()
    (run / "comparisons" / "tokens.json").write_text(json.dumps({"tokens": TOKENS}))
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": SRC}
    proc = subprocess.Popen([sys.executable, "-c", SERVER, SRC, str(run), str(port)], env=env)
    acked: dict[str, int] = {}
    try:
        _wait_up(base)
        stop = threading.Event()

        def labeler(name):
            with httpx.Client(base_url=base, headers=auth(name), timeout=10) as c:
                i = 0
                while not stop.is_set():
                    try:
                        task = c.get("/api/task/next").json()["task"]
                        sid = f"{name}-{i:05d}"
                        r = c.post(f"/api/task/{task['task_id']}/rank", json={"ranking": [[1], [0]], "submission_id": sid})
                        if r.status_code == 200:
                            acked[sid] = r.json()["ranking_id"]
                        i += 1
                    except httpx.HTTPError:
                        return

        threads = [threading.Thread(target=labeler, args=(n,)) for n in ("alice", "bob")]
        for t in threads:
            t.start()
        deadline = time.time() + 30
        while len(acked) < 30 and time.time() < deadline:
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        stop.set()
        for t in threads:
            t.join(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert len(acked) >= 30
    store = ComparisonStore(run / "comparisons" / "comparisons.sqlite")
    assert store.integrity_check() == "ok"
    rows = {r["submission_id"]: r["ranking_id"] for r in store.rankings()}
    assert len(rows) == store.count_rankings()
    for sid, rid in acked.items():
        assert rows.get(sid) == rid  # every acknowledged ranking is there, under the id the client was told
    assert len(rows) <= len(acked) + 2  # at most the two in flight when the server died


def test_owner_page_gold_judge_agreement_with_a_world(tmp_path):
    from instructgpt.world import World

    run, store = make_run(tmp_path, n_tasks=0)
    world = World.generate(seed=0, size="tiny")
    world.save(run / "world")
    judge = world.judge()
    tasks = []
    for rec in world.prompts("rm")[:3]:
        demo = world.demo_for(rec)
        texts = [demo, demo.split(".")[0][:12], ""]  # the demonstration, a fragment, nothing
        scores = [judge.score(rec, t).score for t in texts]
        assert len(set(scores)) == 3, scores
        store.add_prompt(rec["id"], rec["prompt"], meta={"family": rec["family"]}, split="rm")
        tasks.append((store.add_task(rec["id"], [{"text": t, "model": "x"} for t in texts], want_labels=2), scores))
    store.add_prompt("not-in-world", "Hello?")
    other = store.add_task("not-in-world", [{"text": "a"}, {"text": "b"}], want_labels=2)
    for tid, scores in tasks:
        gold = sorted(range(3), key=lambda i: -scores[i])
        store.submit_ranking(tid, "alice", [[i] for i in gold], source="human")
        store.submit_ranking(tid, "bob", [[i] for i in reversed(gold)], source="human")
    store.submit_ranking(other, "alice", [0, 1], source="human")
    client = TestClient(create_app(run, access=access(), backend=FakeBackend(), store=store))
    d = client.get("/api/owner", headers=auth("owner")).json()
    rows = {r["name"]: r for r in d["labelers"]}
    assert rows["alice"]["gold"] == {"agree": 9, "pairs": 9, "tasks": 3, "rate": 1.0}
    assert rows["bob"]["gold"]["rate"] == 0.0 and rows["bob"]["gold"]["pairs"] == 9
    assert d["gold"]["pairs"] == 18 and d["gold_unscored"] == 1 and d["gold_reason"] == ""
    assert rows["alice"]["agreement"]["rate"] == 0.0  # alice and bob disagree on every pair


def test_serve_entry_point_prints_login_links_once(tmp_path):
    run, store = make_run(tmp_path, n_tasks=1)
    store.close()
    port = _free_port()
    code = (f"import sys; sys.path.insert(0, {SRC!r}); from instructgpt.web import serve; "
            f"serve({str(run)!r}, port={port}, labelers=['alice', 'bob'])")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        lines = [proc.stdout.readline() for _ in range(6)]
        links = dict(re.findall(r"^\s+(\w+)\s+\w+\s+(http://\S+)$", "".join(lines), re.M))
        assert set(links) == {"owner", "alice", "bob"}, lines
        assert links["owner"].startswith(f"http://127.0.0.1:{port}/owner?token=")
        tokens = json.loads((run / "comparisons" / "tokens.json").read_text())["tokens"]
        assert stat.S_IMODE((run / "comparisons" / "tokens.json").stat().st_mode) == 0o600
        alice = links["alice"].split("token=")[1]
        assert {t["name"]: t["token"] for t in tokens}["alice"] == alice
        base = f"http://127.0.0.1:{port}"
        _wait_up(base)
        r = httpx.get(base + "/api/me", headers={"Authorization": f"Bearer {alice}"})
        assert r.json()["name"] == "alice"
        assert httpx.get(links["alice"]).status_code == 200
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    # a second start creates nothing new and prints no token
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        out = proc.stdout.readline() + proc.stdout.readline() + proc.stdout.readline()
        assert "token=" not in out.replace("token=<token>", "") and "tokens.json" in out, out
    finally:
        proc.kill()
        proc.wait()


def test_web_rankings_honour_leases(tmp_path, monkeypatch):
    """A labeler ranks only the task the server gave them: never offered, another's, skipped, or lost after an
    expired lease is 409 with nothing written; an expired lease on a task nobody else took is still honoured."""
    import instructgpt.store.queue as store_mod  # where the leases read the clock
    from instructgpt.store import DEFAULT_LEASE_SECONDS

    run, store = make_run(tmp_path, n_tasks=3, k=2, want_labels=1)
    names = ["alice", "bob", "carol", "dave"]
    acc = Access([{"name": n, "role": "labeler", "token": f"{n}-token-0123456789"} for n in names])
    client = TestClient(create_app(run, access=acc, backend=FakeBackend(), store=store))

    def h(n):
        return {"Authorization": f"Bearer {n}-token-0123456789"}

    def rank(n, task, sid):
        return client.post(f"/api/task/{task}/rank", headers=h(n), json={"ranking": [[0], [1]], "submission_id": sid})

    t0 = store_mod._clock()
    monkeypatch.setattr(store_mod, "_clock", lambda: t0)
    a = client.get("/api/task/next", headers=h("alice")).json()["task"]["task_id"]
    b = client.get("/api/task/next", headers=h("bob")).json()["task"]["task_id"]
    assert a != b
    never = ({1, 2, 3} - {a, b}).pop()
    for who, task, why in (("alice", never, "not leased to alice"), ("alice", b, "not leased to alice"),
                           ("bob", a, "not leased to bob")):
        r = rank(who, task, f"sub-{who}-{task}-x0000")
        assert r.status_code == 409 and why in r.json()["error"], r.text
    assert store.count_rankings(include_undone=True) == 0
    # skipped, then ranked anyway: refused
    assert client.post(f"/api/task/{a}/skip", headers=h("alice"), json={}).status_code == 200
    assert rank("alice", a, "sub-alice-skipped").status_code == 409
    # bob's lease expires and nobody takes the task: bob's ranking is still taken
    late = t0 + DEFAULT_LEASE_SECONDS + 1
    monkeypatch.setattr(store_mod, "_clock", lambda: late)
    assert rank("bob", b, "sub-bob-late-01").status_code == 200
    # carol's lease expires and dave is given the task (it wants one label): carol's ranking is refused, dave's kept
    monkeypatch.setattr(store_mod, "_clock", lambda: late)
    c = client.get("/api/task/next", headers=h("carol")).json()["task"]["task_id"]
    monkeypatch.setattr(store_mod, "_clock", lambda: late + DEFAULT_LEASE_SECONDS + 1)
    assert client.get("/api/task/next", headers=h("dave")).json()["task"]["task_id"] == c
    r = rank("carol", c, "sub-carol-late-1")
    assert r.status_code == 409 and "given to another labeler" in r.json()["error"]
    assert rank("dave", c, "sub-dave-00000001").status_code == 200
    assert sorted((r["task_id"], r["labeler"]) for r in store.rankings()) == sorted([(b, "bob"), (c, "dave")])
    # the simulated labelers (igpt label) write without leases, as before
    store.submit_ranking(never, "sim-1", [1, 0])


def test_labelers_racing_for_one_task(tmp_path):
    """Eight labelers ask for the one task that wants one label and rank it, at once: one ranking is stored, the
    others are given no task and refused with 409; nothing is stored twice."""
    run, store = make_run(tmp_path, n_tasks=1, k=2, want_labels=1)
    names = [f"lab{i}" for i in range(8)]
    acc = Access([{"name": n, "role": "labeler", "token": f"{n}-token-0123456789"} for n in names])
    client = TestClient(create_app(run, access=acc, backend=FakeBackend(), store=store))
    results, barrier = [], threading.Barrier(len(names))

    def go(name):
        h = {"Authorization": f"Bearer {name}-token-0123456789"}
        barrier.wait()
        task = client.get("/api/task/next", headers=h).json()["task"]
        r = client.post("/api/task/1/rank", headers=h, json={"ranking": [[0], [1]], "submission_id": f"race-{name}-0001"})
        results.append((task is not None, r.status_code))

    threads = [threading.Thread(target=go, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.count_rankings(include_undone=True) == 1
    assert sorted(results) == [(False, 409)] * 7 + [(True, 200)], results


def test_unreadable_bodies_answer_the_documented_error_shape(setup):
    client, store, _, _ = setup
    task_id = store.next_task("alice")["task_id"]
    h = {**auth("alice"), "content-type": "application/json"}
    for body in (b'{"ranking": "\xff\xfe", "submission_id": "sub-00000001"}', b"[" * 5000 + b"]" * 5000,
                 b'{"a": ' * 3000 + b"1" + b"}" * 3000):
        r = client.post(f"/api/task/{task_id}/rank", headers=h, content=body)
        assert r.status_code in (400, 422) and set(r.json()) == {"error"}, r.text
        assert "\n" not in r.json()["error"]
    assert client.put("/api/undo", headers=h).json() == {"error": "method not allowed"}
    assert store.count_rankings(include_undone=True) == 0


def test_servers_started_at_once_share_one_set_of_tokens(tmp_path):
    """Several `igpt serve` starting at once on a run without tokens: one creates them, the others read them, so
    every login link printed works on every server."""
    path = tmp_path / "comparisons" / "tokens.json"
    go = tmp_path / "go"
    code = (f"import json, os, sys, time; sys.path.insert(0, {SRC!r}); from instructgpt.web.auth import ensure_tokens\n"
            f"while not os.path.exists({str(go)!r}): time.sleep(0.001)\n"
            f"entries, new = ensure_tokens({str(path)!r}, ['alice', 'bob'])\n"
            "print(json.dumps([sorted((e['name'], e['token']) for e in entries), len(new)]))")
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True) for _ in range(4)]
    time.sleep(1.0)  # all started and waiting
    go.write_text("")
    outs = [json.loads(p.communicate(timeout=60)[0]) for p in procs]
    on_disk = sorted((e["name"], e["token"]) for e in read_tokens_file(path))
    assert [o[0] for o in outs] == [[list(x) for x in on_disk]] * 4
    assert sorted(o[1] for o in outs) == [0, 0, 0, 3]  # owner, alice, bob: created once
    assert not path.with_name("tokens.json.lock").exists()


def test_two_serve_started_at_once_print_links_that_work_on_both(tmp_path):
    """The reproduction: two `igpt serve` on one run with no tokens yet, started together. One prints the new login
    links, the other says where the tokens are; the links work on both servers."""
    run, store = make_run(tmp_path, n_tasks=2)
    store.close()
    ports = [_free_port(), _free_port()]
    go = tmp_path / "go"
    code = ("import os, sys, time; sys.path.insert(0, sys.argv[1]); from instructgpt.web import serve\n"
            "while not os.path.exists(sys.argv[3]): time.sleep(0.001)\n"
            "serve(sys.argv[2], port=int(sys.argv[4]), labelers=['alice'])")
    procs = [subprocess.Popen([sys.executable, "-c", code, SRC, str(run), str(go), str(port)], stdout=subprocess.PIPE,
                              text=True) for port in ports]
    try:
        time.sleep(1.0)
        go.write_text("")
        outs = ["".join(p.stdout.readline() for _ in range(3)) for p in procs]
        fresh = [o for o in outs if "new access tokens" in o]
        assert len(fresh) == 1, outs
        link = dict(re.findall(r"^\s+(\w+)\s+\w+\s+(http://\S+)$", fresh[0] + procs[outs.index(fresh[0])].stdout.readline(),
                               re.M))
        token = (link.get("alice") or link["owner"]).split("token=")[1]
        for port in ports:
            base = f"http://127.0.0.1:{port}"
            _wait_up(base)
            assert httpx.get(base + "/api/me", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    finally:
        for p in procs:
            p.kill()
            p.wait()
