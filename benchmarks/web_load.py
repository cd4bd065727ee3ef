"""Load test for ``igpt serve`` on loopback: concurrent labelers ranking through the real HTTP server.

    python benchmarks/web_load.py [--labelers 20] [--per-labeler 50] [--k 4] [--retry-every 5] [--json out.json]

A uvicorn server (``instructgpt.web.app.create_app``, one process, 127.0.0.1 only) serves a fresh run with
``labelers * per_labeler`` queued tasks (one label wanted each). Each labeler (a thread with its own HTTP connection)
loops: ``GET /api/task/next``, then ``POST /api/task/{id}/rank``; every ``retry-every``-th ranking is sent twice (the
retry of a double click) and must come back with the same ranking id. Meanwhile an intruder sends writes with no token,
a wrong token and a malformed header, all of which must be refused with 401. Afterwards the store must hold exactly
``labelers * per_labeler`` rankings: none lost, none duplicated, each labeler its own count, no task ranked twice,
``PRAGMA integrity_check`` ok. Prints latency percentiles for both requests. Everything is bounded: request timeouts,
an overall deadline, and the server process is killed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

SERVER = """
import sys
import uvicorn
from instructgpt.web.app import create_app
uvicorn.run(create_app(sys.argv[1], gold=False), host="127.0.0.1", port=int(sys.argv[2]), log_level="warning",
            access_log=False)
"""


def percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = (len(xs) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def summary(xs: list[float]) -> dict:
    return {
        "n": len(xs),
        "p50_ms": 1000 * percentile(xs, 0.50),
        "p90_ms": 1000 * percentile(xs, 0.90),
        "p99_ms": 1000 * percentile(xs, 0.99),
        "max_ms": 1000 * max(xs) if xs else float("nan"),
        "mean_ms": 1000 * statistics.fmean(xs) if xs else float("nan"),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--labelers", type=int, default=20)
    ap.add_argument("--per-labeler", type=int, default=50)
    ap.add_argument("--k", type=int, default=4, help="responses per task")
    ap.add_argument("--retry-every", type=int, default=5, help="send every n-th ranking twice (0: never)")
    ap.add_argument("--deadline-s", type=float, default=300.0, help="give up after this long")
    ap.add_argument("--json", help="write the results here as JSON")
    args = ap.parse_args()

    import httpx

    src = str(Path(__file__).resolve().parents[1] / "src")
    sys.path.insert(0, src)
    from instructgpt.store import ComparisonStore
    from instructgpt.web.auth import write_tokens_file

    total = args.labelers * args.per_labeler
    tmp = tempfile.TemporaryDirectory(prefix="igpt-web-load-")
    run = Path(tmp.name) / "run"
    store_path = run / "comparisons" / "comparisons.sqlite"
    store = ComparisonStore(store_path)
    with store.batch():
        for t in range(total):
            store.add_prompt(f"p{t}", f"Prompt {t}: write a short note about topic {t}.")
            store.add_task(f"p{t}", [{"text": f"Response {i} to prompt {t}. " * 8, "model": "sft", "temperature": 0.7}
                                     for i in range(args.k)], task_key=f"t{t}", want_labels=1)
    store.close()
    names = [f"labeler{i:02d}" for i in range(args.labelers)]
    tokens = {n: f"{n}-token-{os.urandom(12).hex()}" for n in names}
    write_tokens_file(run / "comparisons" / "tokens.json",
                      [{"name": n, "role": "labeler", "token": t} for n, t in tokens.items()])

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(run), str(port)], env=env)
    deadline = time.time() + args.deadline_s
    lat_next: list[float] = []
    lat_rank: list[float] = []
    lat_retry: list[float] = []
    problems: list[str] = []
    refused = {"ok": 0, "bad": 0}
    lock = threading.Lock()
    stop = threading.Event()
    try:
        while True:
            try:
                if httpx.get(base + "/api/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.time() > deadline:
                raise SystemExit("server did not start")
            time.sleep(0.05)

        def labeler(name: str) -> None:
            h = {"Authorization": f"Bearer {tokens[name]}"}
            with httpx.Client(base_url=base, headers=h, timeout=30) as c:
                for i in range(args.per_labeler):
                    if time.time() > deadline:
                        with lock:
                            problems.append(f"{name}: deadline")
                        return
                    t0 = time.perf_counter()
                    r = c.get("/api/task/next")
                    t1 = time.perf_counter()
                    task = r.json().get("task") if r.status_code == 200 else None
                    if task is None:
                        with lock:
                            problems.append(f"{name}: no task ({r.status_code} {r.text[:100]})")
                        return
                    order = [x["index"] for x in task["responses"]]
                    body = {"ranking": [[order[0]], order[1:3], *[[x] for x in order[3:]]],
                            "flags": {str(order[-1]): ["hallucination"]}, "submission_id": f"{name}-{i:05d}"}
                    r = c.post(f"/api/task/{task['task_id']}/rank", json=body)
                    t2 = time.perf_counter()
                    rid = r.json().get("ranking_id") if r.status_code == 200 else None
                    with lock:
                        lat_next.append(t1 - t0)
                        lat_rank.append(t2 - t1)
                    if rid is None:
                        with lock:
                            problems.append(f"{name}: rank {r.status_code} {r.text[:100]}")
                        continue
                    if args.retry_every and i % args.retry_every == 0:
                        r2 = c.post(f"/api/task/{task['task_id']}/rank", json=body)
                        with lock:
                            lat_retry.append(time.perf_counter() - t2)
                            if r2.status_code != 200 or r2.json().get("ranking_id") != rid:
                                problems.append(f"{name}: retry gave {r2.status_code} {r2.text[:100]}")

        def intruder() -> None:
            bad_headers = [{}, {"Authorization": "Bearer not-a-valid-token-at-all"}, {"Authorization": tokens[names[0]]}]
            with httpx.Client(base_url=base, timeout=30) as c:
                i = 0
                while not stop.is_set() and time.time() < deadline:
                    h = bad_headers[i % len(bad_headers)]
                    body = {"ranking": [[x] for x in range(args.k)], "submission_id": f"intruder-{i:06d}"}
                    for method, url, js in (("POST", f"/api/task/{1 + i % total}/rank", body),
                                            ("POST", f"/api/task/{1 + i % total}/skip", {}),
                                            ("POST", "/api/undo", {}), ("GET", "/api/task/next", None)):
                        r = c.request(method, url, headers=h, json=js)
                        with lock:
                            refused["ok" if r.status_code == 401 else "bad"] += 1
                    i += 1
                    time.sleep(0.005)

        t_start = time.perf_counter()
        threads = [threading.Thread(target=labeler, args=(n,)) for n in names]
        intr = threading.Thread(target=intruder)
        intr.start()
        for t in threads:
            t.start()
        for t in threads:
            t.join(max(1.0, deadline - time.time()))
        wall = time.perf_counter() - t_start
        stop.set()
        intr.join(10)
    finally:
        server.kill()
        server.wait(10)

    store = ComparisonStore(store_path)
    rows = store.rankings(include_undone=True)
    per_labeler = {n: 0 for n in names}
    for r in rows:
        per_labeler[r["labeler"]] = per_labeler.get(r["labeler"], 0) + 1
    checks = {
        "rankings_stored": len(rows),
        "rankings_expected": total,
        "distinct_submission_ids": len({r["submission_id"] for r in rows}),
        "distinct_task_labeler": len({(r["task_id"], r["labeler"]) for r in rows}),
        "tasks_ranked_twice": len(rows) - len({r["task_id"] for r in rows}),
        "undone_or_skipped": sum(r["undone"] for r in rows) + sum(store.progress(n)["skipped"] for n in names),
        "every_labeler_has_per_labeler": all(per_labeler[n] == args.per_labeler for n in names),
        "rankings_by_unknown_labelers": sum(v for k, v in per_labeler.items() if k not in tokens),
        "unauthorised_requests": refused["ok"] + refused["bad"],
        "unauthorised_refused_401": refused["ok"],
        "integrity_check": store.integrity_check(),
        "problems": problems[:20],
    }
    ok = (
        checks["rankings_stored"] == total
        and checks["distinct_submission_ids"] == total
        and checks["distinct_task_labeler"] == total
        and checks["tasks_ranked_twice"] == 0
        and checks["undone_or_skipped"] == 0
        and checks["every_labeler_has_per_labeler"]
        and checks["rankings_by_unknown_labelers"] == 0
        and refused["bad"] == 0
        and refused["ok"] > 0
        and checks["integrity_check"] == "ok"
        and not problems
    )
    result = {
        "labelers": args.labelers,
        "per_labeler": args.per_labeler,
        "k": args.k,
        "wall_s": wall,
        "rankings_per_s": total / wall,
        "next_task": summary(lat_next),
        "rank": summary(lat_rank),
        "rank_retry": summary(lat_retry),
        "checks": checks,
        "ok": ok,
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
    }
    store.close()
    tmp.cleanup()

    print(f"web load test: {args.labelers} labelers x {args.per_labeler} rankings (K={args.k}) on {base}, "
          f"uvicorn 1 process, {os.cpu_count()} CPUs")
    print(f"  wall {wall:.1f} s, {total / wall:.0f} rankings/s")
    for name in ("next_task", "rank", "rank_retry"):
        s = result[name]
        print(f"  {name:<10} n={s['n']:<5} p50 {s['p50_ms']:6.1f} ms  p90 {s['p90_ms']:6.1f} ms  "
              f"p99 {s['p99_ms']:6.1f} ms  max {s['max_ms']:6.1f} ms")
    print(f"  store: {checks['rankings_stored']} rankings (expected {total}), "
          f"{checks['distinct_submission_ids']} distinct submissions, {checks['tasks_ranked_twice']} tasks ranked twice, "
          f"integrity {checks['integrity_check']}")
    print(f"  unauthorised writes: {refused['ok']} of {refused['ok'] + refused['bad']} refused with 401, "
          f"{checks['rankings_by_unknown_labelers']} stored")
    for p in problems[:20]:
        print("  problem:", p)
    print("  PASS" if ok else "  FAIL")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
