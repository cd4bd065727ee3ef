"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const el = IG.el;
  let match = null;     // {id, done: {a, b}, submission}
  let voting = false;

  function setVotes(enabled) {
    for (const id of ["vote-a", "vote-tie", "vote-b"]) $(id).disabled = !enabled;
  }

  function reset() {
    match = null;
    for (const s of ["a", "b"]) {
      const p = $("answer-" + s);
      p.replaceChildren(); p.dataset.chunks = "0"; p.dataset.done = "0";
      $("name-" + s).textContent = "";
    }
    setVotes(false);
    $("new").hidden = true;
    $("send").disabled = false;
    $("prompt").disabled = false;
  }

  async function streamSide(m, side) {
    const pane = $("answer-" + side);
    let resp;
    try {
      resp = await fetch(`/api/arena/match/${encodeURIComponent(m.id)}/stream/${side}`, { headers: IG.authHeaders() });
    } catch (e) { IG.status("network error while streaming", "error"); return false; }
    if (!resp.ok) {
      let msg = "HTTP " + resp.status;
      try { msg = (await resp.json()).error || msg; } catch (e) { /* keep */ }
      IG.status(msg, "error");
      return false;
    }
    const reader = resp.body.getReader();
    const dec = new TextDecoder();
    let buf = "", ok = false;
    const handle = (raw) => {
      let event = "message", data = "";
      for (const line of raw.split("\n")) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data += line.slice(5).trim();
      }
      let obj = {};
      try { obj = JSON.parse(data || "{}"); } catch (e) { return; }
      if (event === "message" && typeof obj.text === "string") {
        pane.append(document.createTextNode(obj.text));  // text, never HTML
        pane.dataset.chunks = String(parseInt(pane.dataset.chunks || "0", 10) + 1);
      } else if (event === "done") {
        ok = true;
      } else if (event === "error") {
        IG.status(obj.error || "generation failed", "error");
      }
    };
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += dec.decode(value, { stream: true });
      let i;
      while ((i = buf.indexOf("\n\n")) >= 0) { handle(buf.slice(0, i)); buf = buf.slice(i + 2); }
    }
    if (buf.trim()) handle(buf);
    pane.dataset.done = ok ? "1" : "error";
    return ok;
  }

  async function send() {
    const prompt = $("prompt").value.trim();
    if (!prompt) { IG.status("Write a message first.", "error"); return; }
    reset();
    $("send").disabled = true; $("prompt").disabled = true;
    IG.status("Asking both models…");
    const r = await IG.api("POST", "/api/arena/match", { prompt });
    if (!r.ok) { IG.status(r.data.error, "error"); $("send").disabled = false; $("prompt").disabled = false; return; }
    match = { id: r.data.match_id, submission: IG.uuid() };
    const m = match;
    const [a, b] = await Promise.all([streamSide(m, "a"), streamSide(m, "b")]);
    if (match !== m) return;
    if (a && b) { setVotes(true); IG.status("Which answer is better?"); }
    $("new").hidden = false;
  }

  async function vote(winner) {
    if (!match || voting) return;
    voting = true; setVotes(false);
    const r = await IG.api("POST", `/api/arena/match/${encodeURIComponent(match.id)}/vote`,
      { winner, submission_id: match.submission });
    voting = false;
    if (!r.ok) { IG.status(r.data.error, "error"); setVotes(true); return; }
    $("name-a").textContent = "= " + r.data.models.a;
    $("name-b").textContent = "= " + r.data.models.b;
    IG.status(`Vote ${r.data.vote_id} recorded: ${winner === "tie" ? "a tie" : winner.toUpperCase() + " is better"}.`, "ok");
    $("new").hidden = false;
    await board();
  }

  async function board() {
    const r = await IG.api("GET", "/api/arena/leaderboard");
    if (!r.ok) return;
    const body = $("board").querySelector("tbody");
    body.replaceChildren();
    r.data.leaderboard.forEach((row, i) => {
      body.append(el("tr", {},
        el("td", { class: "num" }, String(i + 1)), el("td", {}, row.model), el("td", { class: "num" }, IG.pct(row.score)),
        el("td", { class: "num" }, `${IG.pct(row.ci_low)} – ${IG.pct(row.ci_high)}`),
        el("td", { class: "num" }, String(row.games)), el("td", { class: "num" }, String(row.wins)),
        el("td", { class: "num" }, String(row.losses)), el("td", { class: "num" }, String(row.ties))));
    });
    if (!r.data.leaderboard.length) body.append(el("tr", {}, el("td", { colspan: "8", class: "hint" }, "No votes yet.")));
  }

  $("send").addEventListener("click", send);
  $("prompt").addEventListener("keydown", (e) => { if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); send(); } });
  $("vote-a").addEventListener("click", () => vote("a"));
  $("vote-b").addEventListener("click", () => vote("b"));
  $("vote-tie").addEventListener("click", () => vote("tie"));
  $("new").addEventListener("click", () => { reset(); $("prompt").value = ""; $("prompt").focus(); IG.status(""); });

  (async () => {
    reset();
    const me = await IG.whoami();
    if (!me) return;
    if (me.arena_models < 2) IG.status(`The arena needs two models; this server has ${me.arena_models}.`, "error");
    await board();
  })();
})();
