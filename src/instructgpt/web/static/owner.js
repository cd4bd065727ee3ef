"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const el = IG.el;
  const ag = (a) => (a && a.pairs ? `${IG.pct(a.rate)} (${a.pairs} pairs)` : "–");

  async function load() {
    const r = await IG.api("GET", "/api/owner");
    if (!r.ok) { IG.status(r.data.error, "error"); return; }
    const d = r.data;
    const q = d.queue;
    $("summary").replaceChildren(
      el("div", {}, el("b", {}, String(q.tasks)), "tasks queued"),
      el("div", {}, el("b", {}, String(q.complete)), "fully labeled"),
      el("div", {}, el("b", {}, String(q.pending)), "waiting"),
      el("div", {}, el("b", {}, IG.pct(d.agreement.rate)), `inter-labeler agreement (${d.agreement.pairs} pairs)`),
      el("div", {}, el("b", {}, d.gold ? IG.pct(d.gold.rate) : "–"),
        d.gold ? `agreement with gold judge (${d.gold.pairs} pairs)` : `gold judge: ${d.gold_reason}`));
    const body = $("labelers").querySelector("tbody");
    body.replaceChildren();
    for (const row of d.labelers) {
      body.append(el("tr", {},
        el("td", {}, row.name), el("td", {}, row.role), el("td", { class: "num" }, String(row.rankings)),
        el("td", { class: "num" }, String(row.human)), el("td", { class: "num" }, String(row.sim)),
        el("td", { class: "num" }, String(row.skipped)), el("td", { class: "num" }, String(row.undone)),
        el("td", { class: "num" }, String(row.demonstrations)), el("td", { class: "num" }, String(row.arena)),
        el("td", { class: "num" }, ag(row.agreement)), el("td", { class: "num" }, d.gold ? ag(row.gold) : "n/a")));
    }
    const board = $("board").querySelector("tbody");
    board.replaceChildren();
    for (const row of d.leaderboard) {
      board.append(el("tr", {}, el("td", {}, row.model), el("td", { class: "num" }, IG.pct(row.score)),
        el("td", { class: "num" }, `${IG.pct(row.ci_low)} – ${IG.pct(row.ci_high)}`), el("td", { class: "num" }, String(row.games))));
    }
    if (!d.leaderboard.length) board.append(el("tr", {}, el("td", { colspan: "4", class: "hint" }, "No arena votes yet.")));
    IG.status("");
  }

  async function download(kind) {
    const resp = await fetch(`/api/export/${kind}`, { headers: IG.authHeaders() });
    if (!resp.ok) {
      let msg = "HTTP " + resp.status;
      try { msg = (await resp.json()).error || msg; } catch (e) { /* keep */ }
      IG.status(msg, "error");
      return;
    }
    const blob = await resp.blob();
    const a = el("a", { href: URL.createObjectURL(blob), download: `${kind}.jsonl` });
    document.body.append(a); a.click(); a.remove();
    IG.status(`Exported ${kind}.jsonl`, "ok");
  }

  for (const b of document.querySelectorAll("button[data-export]")) b.addEventListener("click", () => download(b.dataset.export));
  $("refresh").addEventListener("click", load);

  (async () => {
    const me = await IG.whoami();
    if (!me) return;
    if (me.role !== "owner") { IG.status("This page needs an owner token.", "error"); return; }
    await load();
  })();
})();
