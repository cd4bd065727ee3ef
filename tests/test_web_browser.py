"""End-to-end browser tests for ``igpt serve`` in headless Chromium (Debian's package), driven by Playwright.

Run: ``pytest -m browser tests/test_web_browser.py``.  Set ``IGPT_WRITE_SCREENSHOTS=1`` to refresh the README
screenshots in ``docs/img/`` (otherwise they are written to a temporary folder only).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_web_support import TOKENS, XSS, FakeBackend, access, make_run  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
DOCS_IMG = Path(__file__).resolve().parents[1] / "docs" / "img"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} not found: apt-get install -y chromium"),
]

TOKEN = {t["name"]: t["token"] for t in TOKENS}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    import httpx
    import uvicorn

    from instructgpt.web.app import create_app

    tmp = tmp_path_factory.mktemp("browser")
    run, store = make_run(tmp, n_tasks=4, k=4, want_labels=2, xss=True)
    # some simulated rankings so the owner page has agreement figures to show
    for t in (3, 4):
        store.submit_ranking(t, "sim-1", [[0], [1], [2], [3]], source="sim")
        store.submit_ranking(t, "sim-2", [[1], [0], [2], [3]], source="sim")
    backend = FakeBackend(models=["sft", "ppo-ptx"], delay_s=0.06, words=10, payload=XSS)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(create_app(run, access=access(), backend=backend, store=store),
                                        host="127.0.0.1", port=port, log_level="warning"))
    th = threading.Thread(target=srv.run, daemon=True)
    th.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 20
    while True:
        try:
            if httpx.get(base + "/api/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            if time.time() > deadline:
                raise
        time.sleep(0.05)
    yield {"base": base, "store": store, "run": run, "backend": backend}
    srv.should_exit = True
    th.join(10)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture()
def page(browser):
    ctx = browser.new_context(viewport={"width": 1200, "height": 820})
    pg = ctx.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.errors = errors  # type: ignore[attr-defined]
    yield pg
    ctx.close()


def _shot(page, name: str, tmp_path: Path) -> None:
    out = tmp_path / name
    page.screenshot(path=str(out), full_page=False)
    assert out.stat().st_size > 5000
    if os.environ.get("IGPT_WRITE_SCREENSHOTS") == "1":
        DOCS_IMG.mkdir(parents=True, exist_ok=True)
        shutil.copy(out, DOCS_IMG / name)


def _ranking_tiers(page) -> list[list[str]]:
    return page.eval_on_selector_all(
        "#ranking li[data-tier]",
        "lis => lis.map(li => Array.from(li.querySelectorAll('.chip')).map(c => c.firstChild.textContent))",
    )


def test_label_page_rank_submit_store_and_export(server, page, tmp_path):
    store = server["store"]
    page.goto(f"{server['base']}/label?token={TOKEN['alice']}")
    page.wait_for_selector("#responses .card")
    assert "token" not in page.url  # the login token leaves the address bar ...
    assert page.evaluate("localStorage.getItem('igpt_token')") == TOKEN["alice"]  # ... and is kept for the session
    assert page.inner_text("#prompt") == "Prompt number 0: explain something."

    # the XSS payload in a model response is shown as text, and nothing ran
    texts = page.eval_on_selector_all("#responses .response-text", "els => els.map(e => e.textContent)")
    assert "Evil: " + XSS in texts
    assert page.locator("#responses script, #responses img").count() == 0
    assert page.evaluate("window.__xss") is None

    cards = page.locator("#responses .card")
    idx = [int(cards.nth(i).get_attribute("data-index")) for i in range(4)]  # display order A..D
    page.keyboard.press("2")                              # B best
    cards.nth(0).locator(".key").click()                  # then A
    cards.nth(3).locator(".key").click(modifiers=["Shift"])  # D tied with A
    assert page.locator("#submit").is_disabled()
    page.keyboard.press("3")                              # C worst
    assert _ranking_tiers(page) == [["B"], ["A", "D"], ["C"]]
    # drag the last rank to the top, then drag it back
    page.locator("#ranking li[data-tier='2']").drag_to(page.locator("#ranking li[data-tier='0']"))
    assert _ranking_tiers(page) == [["C"], ["B"], ["A", "D"]]
    page.locator("#ranking li[data-tier='0']").drag_to(page.locator("#ranking li[data-tier='2']"))
    assert _ranking_tiers(page) == [["B"], ["A", "D"], ["C"]]
    # flags and a better response
    card_a = cards.nth(0)
    card_a.locator(".flags summary").click()
    card_a.locator("input[data-flag='hallucination']").check()
    assert page.inner_text(f"#responses .card[data-index='{idx[0]}'] .badge") == "#2 (tie)"
    page.fill("#demo", "A much better answer.")
    _shot(page, "label.png", tmp_path)
    assert page.locator("#submit").is_enabled()
    page.locator("#submit").dblclick()  # a double click stores one ranking
    page.wait_for_function("() => document.getElementById('status').textContent.startsWith('Saved ranking')")
    page.wait_for_function("() => document.getElementById('prompt').textContent.includes('number 1')")
    assert "1 ranked" in page.inner_text("#progress")

    rows = store.rankings(labeler="alice")
    assert len(rows) == 1
    row = rows[0]
    assert row["source"] == "human" and row["prompt_id"] == "p0"
    assert row["ranking"] == [[idx[1]], sorted([idx[0], idx[3]]), [idx[2]]]
    assert row["flags"] == {str(idx[0]): ["hallucination"]}
    assert row["demonstration"] == "A much better answer."
    out = tmp_path / "ranked.jsonl"
    store.export_ranked(out, source="human")
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [(x["labeler"], x["ranking"]) for x in lines] == [("alice", row["ranking"])]
    assert not page.errors

    # undo brings the task back; skip moves on
    page.keyboard.press("u")
    page.wait_for_function("() => document.getElementById('prompt').textContent.includes('number 0')")
    assert store.rankings(labeler="alice") == []
    page.keyboard.press("s")
    page.wait_for_function("() => document.getElementById('prompt').textContent.includes('number 1')")
    assert store.progress("alice")["skipped"] == 1
    idx2 = [int(cards.nth(i).get_attribute("data-index")) for i in range(4)]
    for key in ("4", "3", "Shift+2", "1", "Enter"):  # keyboard only: D, C, B tied with C, A; submit
        page.keyboard.press(key)
    page.wait_for_function("() => document.getElementById('status').textContent.startsWith('Saved ranking')")
    (row,) = store.rankings(labeler="alice")
    assert row["prompt_id"] == "p1" and row["ranking"] == [[idx2[3]], sorted([idx2[2], idx2[1]]), [idx2[0]]]
    assert not page.errors


def test_arena_streams_two_answers_and_records_a_vote(server, page, tmp_path):
    store = server["store"]
    page.goto(f"{server['base']}/arena?token={TOKEN['bob']}")
    page.wait_for_selector("#board tbody tr")
    page.fill("#prompt", "Say hello <b>bold</b>")
    page.click("#send")
    # streaming: part of an answer is on the page while the rest is still coming
    page.wait_for_function(
        "() => ['a','b'].every(s => { const p = document.getElementById('answer-' + s);"
        " return p.textContent.length > 0 && p.dataset.done !== '1'; })", timeout=10_000)
    assert page.locator("#vote-a").is_disabled()
    page.wait_for_function("() => ['a','b'].every(s => document.getElementById('answer-' + s).dataset.done === '1')",
                           timeout=20_000)
    chunks = [int(page.get_attribute(f"#answer-{s}", "data-chunks")) for s in "ab"]
    assert all(c > 1 for c in chunks), chunks
    answers = {s: page.text_content(f"#answer-{s}") for s in "ab"}
    for s in "ab":  # the model output containing markup is displayed literally
        assert XSS in answers[s] and "(re: Say hello <b>bold</b>)" in answers[s]
    assert page.locator(".answer script, .answer img, .answer b").count() == 0
    assert page.evaluate("window.__xss") is None
    page.click("#vote-b")
    page.wait_for_function("() => document.getElementById('name-b').textContent.length > 0")
    (vote,) = store.arena_votes()
    assert vote["winner"] == "b" and vote["voter"] == "bob"
    assert vote["answer_a"] == answers["a"] and vote["answer_b"] == answers["b"]
    assert page.text_content("#name-b") == "= " + vote["model_b"]
    page.wait_for_function("() => document.querySelectorAll('#board tbody tr').length === 2")
    first = page.text_content("#board tbody tr:first-child td:nth-child(2)")
    assert first == vote["model_b"]
    _shot(page, "arena.png", tmp_path)
    assert store.rankings(source="arena")[0]["ranking"] == [[1], [0]]
    assert not page.errors


def test_owner_page_and_missing_token(server, page, tmp_path):
    page.goto(f"{server['base']}/owner?token={TOKEN['owner']}")
    page.wait_for_selector("#labelers tbody tr")
    names = page.eval_on_selector_all("#labelers tbody tr td:first-child", "tds => tds.map(t => t.textContent)")
    assert {"alice", "bob", "owner", "sim-1", "sim-2"} <= set(names)
    sim1 = page.locator("#labelers tbody tr", has_text="sim-1")
    assert "83.3% (12 pairs)" in sim1.inner_text()  # 5 of 6 pairs agree on each of two prompts
    assert "waiting" in page.inner_text("#summary")
    _shot(page, "owner.png", tmp_path)
    assert not page.errors

    # a labeler token cannot see the owner page; no token at all writes nothing
    before = server["store"].count_rankings(include_undone=True)
    page.evaluate("localStorage.clear()")
    page.goto(f"{server['base']}/label")
    page.wait_for_function("() => document.getElementById('status').textContent.includes('No access token')")
    page.keyboard.press("1")
    page.keyboard.press("Enter")
    assert server["store"].count_rankings(include_undone=True) == before
    page.goto(f"{server['base']}/owner?token={TOKEN['alice']}")
    page.wait_for_function("() => document.getElementById('status').textContent.includes('owner token')")
    assert page.locator("#labelers tbody tr").count() == 0
