"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const el = IG.el;
  const LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ";
  let flagsList = [];
  let task = null;        // {task_id, prompt, k, responses: [{index, text}] in display order}
  let tiers = [];         // [[response index, ...], ...] best first
  let flags = {};         // response index -> Set(flag keys)
  let submissionId = null;
  let busy = false;

  const letterOf = (idx) => {
    const pos = task.responses.findIndex((r) => r.index === idx);
    return LETTERS[pos] || String(pos + 1);
  };
  const placed = () => tiers.flat();
  const complete = () => task && placed().length === task.k;

  function setProgress(p) {
    if (p) $("progress").textContent = `${p.done} ranked · ${p.remaining} waiting`;
  }

  function place(idx, tie) {
    if (!task || placed().includes(idx)) return unplace(idx);
    if (tie && tiers.length) tiers[tiers.length - 1].push(idx);
    else tiers.push([idx]);
    render();
  }

  function unplace(idx) {
    tiers = tiers.map((t) => t.filter((x) => x !== idx)).filter((t) => t.length);
    render();
  }

  function toggleTie(t) {
    if (t <= 0 || t >= tiers.length) return;
    if (tiers[t].length === 1 && tiers[t - 1]) {
      tiers[t - 1] = tiers[t - 1].concat(tiers[t]);
      tiers.splice(t, 1);
    }
    render();
  }

  function splitTier(t) {
    const parts = tiers[t].map((x) => [x]);
    tiers.splice(t, 1, ...parts);
    render();
  }

  function moveTier(from, to) {
    if (from === to || from < 0 || to < 0 || from >= tiers.length || to >= tiers.length) return;
    const [t] = tiers.splice(from, 1);
    tiers.splice(to, 0, t);
    render();
  }

  function renderRanking() {
    const ol = $("ranking");
    ol.replaceChildren();
    if (!tiers.length) ol.append(el("li", { class: "empty-ranking", draggable: "false" }, "Nothing placed yet"));
    tiers.forEach((tier, t) => {
      const li = el("li", { draggable: "true", dataset: { tier: String(t) } },
        el("span", { class: "pos" }, `${t + 1}.`));
      tier.forEach((idx, j) => {
        if (j) li.append(el("span", { class: "hint" }, "="));
        li.append(el("span", { class: "chip", dataset: { index: String(idx) } }, letterOf(idx),
          el("button", { title: "remove", "aria-label": `remove ${letterOf(idx)}`, onclick: (e) => { e.stopPropagation(); unplace(idx); } }, "×")));
      });
      if (tier.length > 1) li.append(el("button", { class: "split", title: "untie", onclick: () => splitTier(t) }, "untie"));
      else if (t > 0) li.append(el("button", { class: "tie", title: "tie with the rank above", onclick: () => toggleTie(t) }, "tie ↑"));
      li.addEventListener("dragstart", (e) => { e.dataTransfer.setData("text/plain", String(t)); e.dataTransfer.effectAllowed = "move"; });
      li.addEventListener("dragover", (e) => { e.preventDefault(); li.classList.add("drop"); });
      li.addEventListener("dragleave", () => li.classList.remove("drop"));
      li.addEventListener("drop", (e) => {
        e.preventDefault(); li.classList.remove("drop");
        moveTier(parseInt(e.dataTransfer.getData("text/plain"), 10), t);
      });
      ol.append(li);
    });
  }

  function renderCards() {
    for (const card of document.querySelectorAll("#responses .card")) {
      const idx = parseInt(card.dataset.index, 10);
      const t = tiers.findIndex((tier) => tier.includes(idx));
      const badge = card.querySelector(".badge");
      card.classList.toggle("placed", t >= 0);
      badge.textContent = t >= 0 ? `#${t + 1}` + (tiers[t].length > 1 ? " (tie)" : "") : "";
      badge.classList.toggle("tie", t >= 0 && tiers[t].length > 1);
      const n = flags[idx] ? flags[idx].size : 0;
      const sum = card.querySelector(".flags summary");
      sum.textContent = n ? `Flags (${n})` : "Flags";
      sum.classList.toggle("flagged", n > 0);
    }
  }

  function render() {
    renderRanking();
    renderCards();
    $("submit").disabled = !complete() || busy;
  }

  function showTask(data) {
    setProgress(data.progress);
    if (data.flags) flagsList = data.flags;
    task = data.task;
    tiers = []; flags = {}; $("demo").value = "";
    if (!task) {
      $("task").hidden = true; $("empty").hidden = false;
      return;
    }
    submissionId = IG.uuid();
    $("empty").hidden = true; $("task").hidden = false;
    $("prompt").textContent = task.prompt;
    const box = $("responses");
    box.replaceChildren();
    task.responses.forEach((r, pos) => {
      const letter = LETTERS[pos] || String(pos + 1);
      const flagBox = el("details", { class: "flags", onclick: (e) => e.stopPropagation() }, el("summary", {}, "Flags"));
      for (const [key, label] of flagsList) {
        const cb = el("input", { type: "checkbox", value: key, dataset: { flag: key } });
        cb.addEventListener("change", () => {
          flags[r.index] = flags[r.index] || new Set();
          if (cb.checked) flags[r.index].add(key); else flags[r.index].delete(key);
          renderCards();
        });
        flagBox.append(el("label", {}, cb, " " + label));
      }
      const card = el("article", { class: "card", tabindex: "0", dataset: { index: String(r.index), pos: String(pos) },
          "aria-label": `response ${letter}` },
        el("header", {}, el("span", { class: "key" }, letter), el("span", { class: "badge" })),
        el("div", { class: "text response-text" }, r.text),
        flagBox);
      card.addEventListener("mousedown", (e) => { if (e.shiftKey) e.preventDefault(); });  // no text selection
      card.addEventListener("click", (e) => {
        const sel = window.getSelection ? window.getSelection() : null;
        if (!e.shiftKey && sel && !sel.isCollapsed && card.contains(sel.anchorNode)) return;  // selecting text
        place(r.index, e.shiftKey);
      });
      box.append(card);
    });
    IG.status(`Task ${task.task_id}: rank all ${task.k} responses, best first.`);
    render();
  }

  async function loadNext() {
    const r = await IG.api("GET", "/api/task/next");
    if (!r.ok) { IG.status(r.data.error || "could not load a task", "error"); return; }
    showTask(r.data);
  }

  async function submit() {
    if (!complete() || busy) return;
    busy = true; render();
    const body = { ranking: tiers, flags: {}, submission_id: submissionId };
    for (const [idx, set] of Object.entries(flags)) if (set.size) body.flags[idx] = Array.from(set);
    const demo = $("demo").value.trim();
    if (demo) body.demonstration = demo;
    IG.status("Saving…");
    const r = await IG.api("POST", `/api/task/${task.task_id}/rank`, body);
    busy = false;
    if (r.ok) {
      IG.status(`Saved ranking ${r.data.ranking_id}.`, "ok");
      await loadNext();
      IG.status(`Saved ranking ${r.data.ranking_id}.` + (task ? ` Next: task ${task.task_id}.` : ""), "ok");
    } else if (r.status === 409) {
      IG.status(r.data.error, "error");
      await loadNext();
    } else {
      IG.status((r.data.error || "could not save") + (r.status === 0 ? "" : ""), "error");
      render();  // same submission id on retry: a repeat can never store two rankings
    }
  }

  async function skip() {
    if (!task || busy) return;
    const r = await IG.api("POST", `/api/task/${task.task_id}/skip`, {});
    if (!r.ok) { IG.status(r.data.error, "error"); return; }
    await loadNext();
    IG.status(`Skipped task ${r.data.skipped}.`);
  }

  async function undo() {
    if (busy) return;
    const r = await IG.api("POST", "/api/undo", {});
    if (!r.ok) { IG.status(r.data.error, "error"); return; }
    if (!r.data.undone) { IG.status("Nothing to undo."); return; }
    await loadNext();
    IG.status("Your last ranking was withdrawn; rank it again.", "ok");
  }

  document.addEventListener("keydown", (e) => {
    const tag = (e.target && e.target.tagName) || "";
    if (tag === "TEXTAREA" || tag === "INPUT" || tag === "SELECT") {
      if (e.key === "Escape") e.target.blur();
      return;
    }
    if (e.ctrlKey || e.metaKey || e.altKey || !task) return;
    const m = /^(Digit|Numpad)([1-9])$/.exec(e.code || "");
    if (m) {
      const pos = parseInt(m[2], 10) - 1;
      if (pos < task.responses.length) { e.preventDefault(); place(task.responses[pos].index, e.shiftKey); }
      return;
    }
    switch (e.key) {
      case "Enter": e.preventDefault(); submit(); break;
      case "Escape": tiers = []; render(); break;
      case "Backspace": {
        e.preventDefault();
        const all = placed();
        if (all.length) unplace(all[all.length - 1]);
        break;
      }
      case "t": case "T": {
        const t = tiers.length - 1;
        if (t > 0 && tiers[t].length === 1) toggleTie(t); else if (t >= 0 && tiers[t].length > 1) {
          const last = tiers[t].pop(); tiers.push([last]); render();
        }
        break;
      }
      case "s": case "S": skip(); break;
      case "u": case "U": undo(); break;
    }
  });

  $("submit").addEventListener("click", submit);
  $("clear").addEventListener("click", () => { tiers = []; render(); });
  $("skip").addEventListener("click", skip);
  $("undo").addEventListener("click", undo);
  $("undo2").addEventListener("click", undo);
  $("reload").addEventListener("click", loadNext);

  (async () => {
    const me = await IG.whoami();
    if (!me) return;
    flagsList = me.flags;
    setProgress(me.progress);
    await loadNext();
  })();
})();
