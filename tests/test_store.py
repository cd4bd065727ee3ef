"""Tests for the SQLite comparison store (issue 5, item 1)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from instructgpt.errors import UserError
from instructgpt.evaluation import wilson_interval
from instructgpt.store import SCHEMA_VERSION, ComparisonStore, normalize_ranking, ordered_pairs

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _responses(k: int, tag: str = "") -> list[dict]:
    return [{"text": f"answer {i}{tag}", "model": "sft" if i % 2 else "pretrain", "temperature": 0.5 + i / 10,
             "meta": {"i": i}} for i in range(k)]


def _store_with_tasks(tmp_path, n_tasks=3, k=4, want_labels=1) -> tuple[ComparisonStore, list[int]]:
    store = ComparisonStore(tmp_path / "c.sqlite")
    ids = []
    for t in range(n_tasks):
        store.add_prompt(f"p{t}", f"prompt {t}", meta={"topic": "x"}, split="train")
        ids.append(store.add_task(f"p{t}", _responses(k, f"-{t}"), task_key=f"key{t}", want_labels=want_labels))
    return store, ids


def test_create_reopen_wal_and_schema_version(tmp_path):
    path = tmp_path / "sub" / "c.sqlite"
    store = ComparisonStore(path)
    assert store.schema_version() == SCHEMA_VERSION
    store.close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"schema_version", "prompts", "tasks", "responses", "rankings", "arena_votes"} <= tables
    conn.close()
    store = ComparisonStore(path)  # reopening adds no second version row
    assert store._conn().execute("SELECT COUNT(*) FROM schema_version").fetchone()[0] == 1
    store.close()


def test_refuses_newer_schema_and_foreign_files(tmp_path):
    path = tmp_path / "c.sqlite"
    ComparisonStore(path).close()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    conn.commit()
    conn.close()
    with pytest.raises(UserError, match="newer"):
        ComparisonStore(path)
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(UserError, match="junk.sqlite"):
        ComparisonStore(junk)
    other = tmp_path / "other.sqlite"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE foo (x)")
    conn.commit()
    conn.close()
    with pytest.raises(UserError, match="not a comparison store"):
        ComparisonStore(other)


def test_prompt_and_task_idempotent(tmp_path):
    store, ids = _store_with_tasks(tmp_path)
    store.add_prompt("p0", "prompt 0")  # same again: nothing happens
    with pytest.raises(UserError, match="different text"):
        store.add_prompt("p0", "another text")
    again = store.add_task("p0", _responses(4, "-0"), task_key="key0")
    assert again == ids[0]
    assert store.tasks_with_keys() == {"key0", "key1", "key2"}
    n = store._conn().execute("SELECT COUNT(*) FROM responses").fetchone()[0]
    assert n == 12
    with pytest.raises(UserError, match="already belongs"):
        store.add_task("p1", _responses(4), task_key="key0")
    t = store.task(ids[1])
    assert t["prompt"] == "prompt 1" and t["k"] == 4 and t["split"] == "train"
    assert [r["model"] for r in t["responses"]] == ["pretrain", "sft", "pretrain", "sft"]
    assert t["responses"][2]["temperature"] == pytest.approx(0.7)
    assert t["responses"][3]["meta"] == {"i": 3}


def test_bad_tasks(tmp_path):
    store, _ = _store_with_tasks(tmp_path, n_tasks=1)
    with pytest.raises(UserError, match="K >= 2"):
        store.add_task("p0", _responses(1))
    with pytest.raises(UserError, match="unknown prompt_id"):
        store.add_task("nope", _responses(2))
    with pytest.raises(UserError, match="text"):
        store.add_task("p0", [{"text": "a"}, {"model": "x"}])
    with pytest.raises(UserError, match="want_labels"):
        store.add_task("p0", _responses(2), want_labels=0)
    with pytest.raises(UserError, match="unknown task"):
        store.task(999)


def test_normalize_ranking():
    assert normalize_ranking([[2], [0, 3], [1]], 4) == [[2], [0, 3], [1]]
    assert normalize_ranking([2, 0, 3, 1], 4) == [[2], [0], [3], [1]]
    assert sorted(ordered_pairs([[2], [3, 0], [1]])) == sorted([(2, 0), (2, 3), (2, 1), (0, 1), (3, 1)])
    for bad in ([[0], [1]], [[0, 1, 2, 2]], [[0], [1], [2], [4]], [], [[0], []], [["a"], [1], [2], [3]], "0123",
                [[True], [1], [2], [3]]):
        with pytest.raises(UserError):
            normalize_ranking(bad, 4)


def test_submit_ranking_idempotent_and_validated(tmp_path):
    store, ids = _store_with_tasks(tmp_path)
    rid = store.submit_ranking(ids[0], "ann", [[2], [0, 3], [1]], flags={"1": ["hallucination"]},
                               demonstration="a better answer", submission_id="s1", source="human")
    assert store.submit_ranking(ids[0], "ann", [[2], [0, 3], [1]], submission_id="s1", source="human") == rid
    assert store.count_rankings() == 1
    with pytest.raises(UserError, match="already used"):
        store.submit_ranking(ids[1], "ann", [0, 1, 2, 3], submission_id="s1")
    with pytest.raises(UserError, match="already ranked"):
        store.submit_ranking(ids[0], "ann", [0, 1, 2, 3], submission_id="s2")
    with pytest.raises(UserError, match="permutation"):
        store.submit_ranking(ids[1], "ann", [0, 1, 2])
    with pytest.raises(UserError, match="unknown task"):
        store.submit_ranking(12345, "ann", [0, 1])
    with pytest.raises(UserError, match="source"):
        store.submit_ranking(ids[1], "ann", [0, 1, 2, 3], source="robot")
    with pytest.raises(UserError, match="labeler"):
        store.submit_ranking(ids[1], "", [0, 1, 2, 3])
    assert store.count_rankings() == 1
    (row,) = store.rankings()
    assert row["ranking"] == [[2], [0, 3], [1]]
    assert row["labeler"] == "ann" and row["source"] == "human" and row["flags"] == {"1": ["hallucination"]}
    assert row["responses"] == [f"answer {i}-0" for i in range(4)]
    assert row["models"] == ["pretrain", "sft", "pretrain", "sft"]
    assert row["demonstration"] == "a better answer"
    assert row["created_at"].endswith("Z")
    assert store.rankings(labeler="bob") == [] and store.rankings(source="sim") == []


def test_next_task_leases_skip_undo_progress(tmp_path):
    store, ids = _store_with_tasks(tmp_path, n_tasks=3, want_labels=1)
    a = store.next_task("ann")
    assert a["task_id"] == ids[0]
    assert store.next_task("ann")["task_id"] == ids[0]  # a reload shows the same task
    b = store.next_task("bob")
    assert b["task_id"] == ids[1]  # ann holds the lease on task 0
    assert store.progress("ann") == {"done": 0, "skipped": 0, "remaining": 2}
    store.submit_ranking(ids[0], "ann", [0, 1, 2, 3])
    store.skip_task(ids[2], "ann")
    assert store.next_task("ann") is None  # task 1 leased to bob, 2 skipped
    assert store.progress("ann") == {"done": 1, "skipped": 1, "remaining": 0}
    assert store.undo_last("ann") is True
    assert store.rankings() == []
    assert store.count_rankings(include_undone=True) == 1
    assert store.next_task("ann")["task_id"] == ids[0]  # undone task comes back at once
    store.submit_ranking(ids[0], "ann", [3, 2, 1, 0])
    assert [r["ranking"] for r in store.rankings()] == [[[3], [2], [1], [0]]]
    assert store.undo_last("nobody") is False
    counts = store.labeler_counts()
    assert counts["ann"]["rankings"] == 1 and counts["ann"]["undone"] == 1 and counts["ann"]["skipped"] == 1


def test_expired_lease_and_two_labels(tmp_path):
    store, ids = _store_with_tasks(tmp_path, n_tasks=2, want_labels=2)
    assert store.next_task("ann", lease_seconds=-1)["task_id"] == ids[0]  # lease already expired
    store.submit_ranking(ids[1], "carl", [0, 1, 2, 3])
    # a task that already has one label is offered first, to get its second
    assert store.next_task("bob")["task_id"] == ids[1]
    store.submit_ranking(ids[1], "bob", [0, 1, 2, 3])
    assert store.next_task("dan")["task_id"] == ids[0]
    assert store.task(ids[1])["labels"] == 2


def test_agreement(tmp_path):
    store, ids = _store_with_tasks(tmp_path, n_tasks=2, want_labels=2)
    store.submit_ranking(ids[0], "ann", [[0], [1], [2], [3]])
    store.submit_ranking(ids[0], "bob", [[1], [0], [2, 3]])
    # pairs both ordered strictly: (0,1) disagree, (0,2),(0,3),(1,2),(1,3) agree; (2,3) tie for bob -> excluded
    store.submit_ranking(ids[1], "ann", [0, 1, 2, 3])  # only one labeler: not counted
    ag = store.agreement()
    assert ag["overall"]["pairs"] == 5 and ag["overall"]["agree"] == 4
    assert ag["overall"]["rate"] == pytest.approx(0.8) and ag["overall"]["tasks"] == 1
    assert ag["per_labeler"]["ann"]["rate"] == pytest.approx(0.8)
    assert ag["per_pair"]["ann|bob"]["pairs"] == 5
    assert store.agreement(labelers=["ann"])["overall"]["pairs"] == 0
    gold = store.agreement_with(lambda row, text: -int(text.split()[1].split("-")[0]))  # answer 0 best
    assert gold["per_labeler"]["ann"]["rate"] == 1.0 and gold["per_labeler"]["ann"]["pairs"] == 12
    assert gold["per_labeler"]["bob"]["agree"] == 4 and gold["per_labeler"]["bob"]["pairs"] == 5


def test_exports(tmp_path):
    store, ids = _store_with_tasks(tmp_path, n_tasks=2)
    store.submit_ranking(ids[0], "ann", [[2], [0, 3], [1]], source="human", demonstration="better")
    store.submit_ranking(ids[1], "sim-3", [3, 2, 1, 0], source="sim")
    n = store.export_ranked(tmp_path / "out" / "ranked.jsonl")
    lines = [json.loads(x) for x in (tmp_path / "out" / "ranked.jsonl").read_text().splitlines()]
    assert n == 2 == len(lines)
    assert lines[0]["ranking"] == [[2], [0, 3], [1]] and lines[0]["labeler"] == "ann"
    assert lines[0]["responses"][2] == "answer 2-0" and lines[0]["prompt"] == "prompt 0"
    assert lines[0]["models"] == ["pretrain", "sft", "pretrain", "sft"] and lines[0]["source"] == "human"
    assert lines[1]["ranking"] == [[3], [2], [1], [0]]
    assert store.export_ranked(tmp_path / "h.jsonl", source="human") == 1
    n = store.export_pairwise(tmp_path / "pairs.jsonl")
    pairs = [json.loads(x) for x in (tmp_path / "pairs.jsonl").read_text().splitlines()]
    assert n == len(pairs) == 5 + 6  # 5 strict pairs (0~3 tied) + C(4,2)
    first = [p for p in pairs if p["labeler"] == "ann"]
    assert {(p["chosen"], p["rejected"]) for p in first} == {
        ("answer 2-0", "answer 0-0"), ("answer 2-0", "answer 3-0"), ("answer 2-0", "answer 1-0"),
        ("answer 0-0", "answer 1-0"), ("answer 3-0", "answer 1-0")}
    assert set(pairs[0]) >= {"prompt", "chosen", "rejected", "labeler"}
    assert store.export_demonstrations(tmp_path / "demos.jsonl") == 1
    assert not list((tmp_path).glob(".*.tmp"))


def test_arena_votes_and_leaderboard(tmp_path):
    store = ComparisonStore(tmp_path / "c.sqlite")
    v1 = store.add_arena_vote("hi", "sft", "ppo", "a1", "b1", "b", "ann", submission_id="v1")
    assert store.add_arena_vote("hi", "sft", "ppo", "a1", "b1", "b", "ann", submission_id="v1") == v1
    store.add_arena_vote("hi", "ppo", "sft", "a2", "b2", "a", "ann", submission_id="v2")
    store.add_arena_vote("yo", "ppo", "sft", "a3", "b3", "tie", "bob")
    with pytest.raises(UserError, match="winner"):
        store.add_arena_vote("hi", "sft", "ppo", "a", "b", "c", "ann")
    with pytest.raises(UserError, match="two different"):
        store.add_arena_vote("hi", "sft", "sft", "a", "b", "a", "ann")
    assert len(store.arena_votes()) == 3
    board = store.leaderboard()
    assert [b["model"] for b in board] == ["ppo", "sft"]
    ppo = board[0]
    assert (ppo["games"], ppo["wins"], ppo["losses"], ppo["ties"]) == (3, 2, 0, 1)
    assert ppo["score"] == pytest.approx(2.5 / 3)
    assert 0 <= ppo["ci_low"] < ppo["score"] < ppo["ci_high"] <= 1
    arena = store.rankings(source="arena")
    assert [r["ranking"] for r in arena] == [[[1], [0]], [[0], [1]], [[0, 1]]]
    assert arena[0]["models"] == ["sft", "ppo"] and arena[0]["responses"] == ["a1", "b1"]
    assert store.next_task("ann") is None  # arena comparisons are never queued for labeling
    assert store.undo_last("ann") is False
    assert store.export_pairwise(tmp_path / "p.jsonl", source="arena") == 2


def test_wilson_interval():
    lo, hi = wilson_interval(50, 100)  # the arena leaderboard's interval: the evaluation's one
    assert lo == pytest.approx(0.4038, abs=1e-3) and hi == pytest.approx(0.5962, abs=1e-3)
    assert wilson_interval(0.0, 0) == (0.0, 1.0)


def test_concurrent_threads_and_processes(tmp_path):
    path = tmp_path / "c.sqlite"
    store, ids = _store_with_tasks(tmp_path, n_tasks=40, k=2, want_labels=10)
    errors = []

    def worker(name):
        try:
            for t in ids:
                store.submit_ranking(t, name, [1, 0], submission_id=f"{name}-{t}")
                store.submit_ranking(t, name, [1, 0], submission_id=f"{name}-{t}")  # retry
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    code = textwrap.dedent(f"""
        import sys; sys.path.insert(0, {SRC!r})
        from instructgpt.store import ComparisonStore
        s = ComparisonStore({str(path)!r})
        name = sys.argv[1]
        for t in {ids!r}:
            s.submit_ranking(t, name, [0, 1], submission_id=name + "-" + str(t))
            s.submit_ranking(t, name, [0, 1], submission_id=name + "-" + str(t))
    """)
    procs = [subprocess.Popen([sys.executable, "-c", code, f"proc{i}"]) for i in range(2)]
    threads = [threading.Thread(target=worker, args=(f"thr{i}",)) for i in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for p in procs:
        assert p.wait(timeout=120) == 0
    assert not errors
    rows = store.rankings()
    assert len(rows) == 6 * 40
    assert len({r["submission_id"] for r in rows}) == 6 * 40
    assert len({(r["task_id"], r["labeler"]) for r in rows}) == 6 * 40
    assert store.integrity_check() == "ok"


def test_concurrent_next_task_gives_distinct_tasks(tmp_path):
    store, ids = _store_with_tasks(tmp_path, n_tasks=8, k=2, want_labels=1)
    got, lock = [], threading.Lock()

    def worker(name):
        t = store.next_task(name)
        with lock:
            got.append(t["task_id"])

    threads = [threading.Thread(target=worker, args=(f"l{i}",)) for i in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert sorted(got) == sorted(ids)


WRITER = textwrap.dedent("""
    import sys; sys.path.insert(0, sys.argv[2])
    from instructgpt.store import ComparisonStore
    s = ComparisonStore(sys.argv[1])
    with s.batch():
        for t in range(300):
            s.add_prompt(f"p{t}", f"prompt {t}")
            s.add_task(f"p{t}", [{"text": f"a{t}", "model": "m", "temperature": 1.0},
                                 {"text": f"b{t}", "model": "m", "temperature": 1.0}], task_key=f"k{t}")
    print("ready", flush=True)
    for t in range(1, 301):
        rid = s.submit_ranking(t, "sim-1", [[1], [0]], flags={"pad": "x" * 2000}, submission_id=f"sub{t}")
        print(t, rid, flush=True)
""")


def test_survives_sigkill_mid_labelling(tmp_path):
    path = tmp_path / "c.sqlite"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path), SRC], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    acked = []
    deadline = time.time() + 60
    while len(acked) < 40 and time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        acked.append(int(line.split()[0]))
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert len(acked) >= 40

    store = ComparisonStore(path)
    assert store.integrity_check() == "ok"
    rows = store.rankings()
    got = [r["task_id"] for r in rows]
    assert len(got) == len(set(got))  # no duplicates
    assert set(acked) <= set(got)  # nothing acknowledged was lost
    assert len(got) <= 300
    assert all(r["ranking"] == [[1], [0]] for r in rows)
    assert got == list(range(1, len(got) + 1))  # a prefix, nothing half-written
    store.close()

    # resuming (same submission ids) finishes the job without duplicating anything
    res = subprocess.run([sys.executable, "-c", WRITER, str(path), SRC], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    store = ComparisonStore(path)
    rows = store.rankings()
    assert len(rows) == 300 and len({r["task_id"] for r in rows}) == 300
    assert len(store.tasks_with_keys()) == 300
    assert store._conn().execute("SELECT COUNT(*) FROM responses").fetchone()[0] == 600


def test_label_counter_consistent_and_old_stores_upgraded(tmp_path):
    store, ids = _store_with_tasks(tmp_path, n_tasks=3, want_labels=2)
    store.submit_ranking(ids[0], "ann", [0, 1, 2, 3])
    store.submit_ranking(ids[0], "bob", [0, 1, 2, 3])
    store.submit_ranking(ids[1], "ann", [0, 1, 2, 3])
    store.undo_last("ann")
    store.add_arena_vote("q", "m1", "m2", "x", "y", "a", "ann")
    conn = store._conn()
    counted = "SELECT t.task_id, t.n_labels, (SELECT COUNT(*) FROM rankings r WHERE r.task_id = t.task_id AND r.undone_at IS NULL) FROM tasks t"
    assert all(n == m for _, n, m in conn.execute(counted))
    assert store.queue_stats() == {"tasks": 3, "complete": 1, "pending": 2, "labels": 2, "wanted_labels": 6}
    store.close()
    # a store written before the counter column existed is upgraded on open
    raw = sqlite3.connect(tmp_path / "c.sqlite")
    raw.execute("DROP INDEX tasks_open")
    raw.execute("ALTER TABLE tasks DROP COLUMN n_labels")
    raw.commit()
    raw.close()
    store = ComparisonStore(tmp_path / "c.sqlite")
    assert all(n == m for _, n, m in store._conn().execute(counted))
    assert store.next_task("carl")["task_id"] == ids[1]
