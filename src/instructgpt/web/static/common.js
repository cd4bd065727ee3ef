"use strict";
// Shared helpers for the igpt serve pages. Untrusted text is only ever inserted with textContent / text nodes.
const IG = (() => {
  const KEY = "igpt_token";

  function storage() {
    try { localStorage.setItem("igpt_probe", "1"); localStorage.removeItem("igpt_probe"); return localStorage; }
    catch (e) { return sessionStorage; }
  }

  // The login link carries ?token=...; keep it in localStorage and take it out of the address bar.
  function token() {
    const url = new URL(window.location.href);
    const t = url.searchParams.get("token");
    if (t) {
      storage().setItem(KEY, t);
      url.searchParams.delete("token");
      history.replaceState(null, "", url.pathname + url.search + url.hash);
    }
    return storage().getItem(KEY);
  }

  function authHeaders() {
    const t = token();
    return t ? { "Authorization": "Bearer " + t } : {};
  }

  async function api(method, path, body) {
    const headers = Object.assign({ "Accept": "application/json" }, authHeaders());
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let resp;
    try {
      resp = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    } catch (e) {
      return { ok: false, status: 0, data: { error: "network error (" + e.message + "); try again" } };
    }
    let data;
    try { data = await resp.json(); } catch (e) { data = { error: "HTTP " + resp.status }; }
    return { ok: resp.ok, status: resp.status, data };
  }

  // el("div", {class: "x", onclick: fn}, "text", child) -- strings become text nodes, never HTML.
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k.startsWith("on") && typeof v === "function") e.addEventListener(k.slice(2), v);
      else if (k === "dataset") Object.assign(e.dataset, v);
      else if (k === "text") e.textContent = String(v);
      else e.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children) {
      if (c === undefined || c === null || c === false) continue;
      e.append(typeof c === "string" || typeof c === "number" ? document.createTextNode(String(c)) : c);
    }
    return e;
  }

  function uuid() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    const b = new Uint8Array(16);
    crypto.getRandomValues(b);
    return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  }

  function status(msg, kind) {
    const s = document.getElementById("status");
    if (!s) return;
    s.textContent = msg || "";
    s.className = "status" + (kind ? " " + kind : "");
  }

  function pct(x) { return x === null || x === undefined ? "–" : (100 * x).toFixed(1) + "%"; }

  async function whoami() {
    if (!token()) {
      status("No access token. Open the login link that igpt serve printed (…/label?token=…).", "error");
      return null;
    }
    const r = await api("GET", "/api/me");
    if (!r.ok) { status(r.data.error || "cannot sign in", "error"); return null; }
    const who = document.getElementById("who");
    if (who) who.textContent = r.data.name + (r.data.role === "owner" ? " (owner)" : "");
    return r.data;
  }

  return { token, authHeaders, api, el, uuid, status, pct, whoami };
})();
