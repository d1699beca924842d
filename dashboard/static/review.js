// blankfilter monitor: the audit review page. Vanilla JS, no build step.
// As on the main page, every value from a trap or a reviewer goes into the page as text only.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const state = { audit: null, busy: false, sent: new Map() }; // sent: "trap camera" -> what this page published

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value !== null && value !== undefined && value !== false) node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
  }

  const num = (v, digits) => (typeof v === "number" && isFinite(v) ? v.toFixed(digits) : "–");
  // A cutoff in three significant digits: 1.2.0's is 0.00298, which toFixed(3) shows as 0.003.
  const cut = (v) => (typeof v === "number" && isFinite(v) ? String(Number(v.toPrecision(3))) : "–");
  const pct = (v, digits) => (typeof v === "number" && isFinite(v) ? `${(v * 100).toFixed(digits)} %` : "–");
  const trapTime = (iso) => (typeof iso === "string" ? iso.replace("T", " ").replace(/\.\d+/, "").replace(/Z$/, "") : "–");

  function filters() {
    const params = new URLSearchParams();
    if ($("r-trap").value) params.set("trap", $("r-trap").value);
    if ($("r-camera").value.trim()) params.set("camera", $("r-camera").value.trim());
    return params;
  }

  async function getJSON(path, params) {
    const query = params && params.toString();
    const response = await fetch(query ? `${path}?${query}` : path, { credentials: "same-origin" });
    if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
    return response.json();
  }

  async function postJSON(path, body) {
    // referrerPolicy: the page is served with no-referrer, which would make the Origin of a POST "null".
    const response = await fetch(path, { method: "POST", credentials: "same-origin", referrerPolicy: "same-origin",
                                         headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    const text = await response.text();
    if (!response.ok) throw new Error(text.trim() || `HTTP ${response.status}`);
    return JSON.parse(text);
  }

  function say(text) {
    $("r-message").textContent = text;
  }

  // -- the queue ------------------------------------------------------------------------------------
  function showAudit(audit, waiting) {
    state.audit = audit;
    $("r-waiting").textContent = typeof waiting === "number" ? `(${waiting} waiting)` : "";
    $("r-empty").hidden = Boolean(audit);
    $("r-audit").hidden = !audit;
    if (!audit) return;
    const card = $("r-audit");
    card.dataset.auditId = audit.id;
    card.dataset.trap = audit.trap;
    card.dataset.camera = audit.camera;
    const image = $("r-image");
    if (audit.thumbnail) {
      image.hidden = false;
      image.src = audit.thumbnail.url;
      image.width = audit.thumbnail.width;
      image.height = audit.thumbnail.height;
      image.alt = `discarded burst ${audit.burst} at ${trapTime(audit.first_capture)}`;
    } else {
      image.hidden = true;
      image.removeAttribute("src");
    }
    $("r-nothumb").hidden = Boolean(audit.thumbnail);
    const facts = $("r-facts");
    clear(facts);
    const context = audit.cutoffs.context_cutoff === null ? "" : `, context ${num(audit.cutoffs.context_cutoff, 3)}`;
    const rows = [
      ["Trap", "trap", audit.trap], ["Camera", "camera", audit.camera],
      ["Captured", "captured", `${trapTime(audit.first_capture)} (trap clock)`],
      ["Frames", "frames", audit.frames.map((f) => `${f.file} (${num(f.score, 3)})`).join(", ")],
      ["Best score", "max_score", num(audit.max_score, 4)],
      ["Cutoffs", "cutoffs", `${cut(audit.cutoffs.cutoff)}${context}`],
      ["Context", "context", audit.context_state || "none"],
    ];
    for (const [label, key, value] of rows) facts.append(el("dt", null, label), el("dd", { "data-field": key }, value));
    if (audit.review) {
      say(`Reviewed: ${audit.review.verdict} by ${audit.review.who}` + (audit.review.note ? ` (${audit.review.note})` : ""));
    }
  }

  async function loadNext() {
    const data = await getJSON("api/review/next", filters());
    $("r-note").value = "";
    showAudit(data.audit, data.waiting);
  }

  // The reviewer's name, kept by this browser: one token is shared by a team, the name says who answered.
  function reviewer() {
    const name = $("r-who").value.trim();
    try { localStorage.setItem("bf_reviewer", name); } catch (_) { /* private mode: not remembered */ }
    return name;
  }

  async function verdict(kind) {
    if (!state.audit || state.busy) return;
    state.busy = true;
    try {
      const id = state.audit.id;
      await postJSON("api/reviews", { id, verdict: kind, note: $("r-note").value, reviewer: reviewer() });
      await loadNext();
      say(`Burst ${id.slice(0, 8)}… marked ${kind === "missed" ? "missed animal" : "blank"}.`);
      await refresh();
    } catch (err) {
      say(`Not saved: ${err.message}`);
    } finally {
      state.busy = false;
    }
  }

  async function undo() {
    if (state.busy) return;
    state.busy = true;
    try {
      const data = await postJSON("api/reviews/undo", { reviewer: reviewer() });
      if (!data.undone) { say("Nothing to undo."); return; }
      const back = await getJSON(`api/audits/${data.undone}`);
      const next = await getJSON("api/review/next", filters());
      showAudit(back.audit, next.waiting + 1);
      say("Review undone: judge this burst again.");
      await refresh();
    } catch (err) {
      say(`Undo failed: ${err.message}`);
    } finally {
      state.busy = false;
    }
  }

  // -- the figure -----------------------------------------------------------------------------------
  function sentNode(data) {
    return el("span", { class: "sent", "data-published": data.published }, ` sent ${data.cutoff} on ${data.published}`);
  }

  function proposalNode(c) {
    const node = proposalState(c);
    const sent = state.sent.get(`${c.trap} ${c.camera}`);
    const out = sent ? el("span", null, node, sentNode(sent)) : node; // stays after the table is drawn again
    const w = c.cutoff_waiting;
    if (w) {
      out.append(el("span", { class: "muted waiting" },
        ` · cutoff ${cut(w.cutoff)} confirmed by ${w.who} at ${trapTime(w.at)} UTC is not in force at the trap yet:` +
        " sent again each time it connects, until it says it took it"));
    }
    return out;
  }

  function proposalState(c) {
    const p = c.proposal;
    if (!c.over_limit) {
      const more = c.reviews_needed ? ` · ${c.reviews_needed} more reviews without a miss bound it under ${pct(c.limit, 0)}` : "";
      return el("span", { class: "muted" }, `within ${pct(c.limit, 0)}${more}`);
    }
    if (!p) {
      const more = c.reviews_needed ? `${c.reviews_needed} more reviews without a miss would bound it under ${pct(c.limit, 0)}` : "review more bursts";
      return el("span", { class: "alarm" }, `over ${pct(c.limit, 0)}: ${more}`);
    }
    if (p.cutoff === null) return el("span", { class: "alarm" }, `over ${pct(c.limit, 0)}: ${p.why}`);
    const wrap = el("span", { class: "alarm" },
      `over ${pct(c.limit, 0)}: proposed cutoff ${cut(p.cutoff)} (now ${cut(p.current)}; ${p.why}) `);
    if (!p.remote_cutoff) {
      wrap.append(el("span", { class: "muted" }, "the trap does not take remote cutoffs: set it there"));
      return wrap;
    }
    const button = el("button", { type: "button", class: "confirm", "data-trap": c.trap, "data-camera": c.camera },
                      `Send cutoff ${cut(p.cutoff)} to the trap`);
    button.addEventListener("click", () => confirmCutoff(c.trap, c.camera, p.cutoff, button));
    wrap.append(button);
    return wrap;
  }

  async function confirmCutoff(trap, camera, cutoff, button) {
    if (!window.confirm(`Send cutoff ${cutoff} for camera ${camera} to trap ${trap}?`)) return;
    button.disabled = true;
    try {
      const data = await postJSON("api/cutoff", { trap, camera, cutoff, reviewer: reviewer() });
      state.sent.set(`${trap} ${camera}`, data);
      button.replaceWith(sentNode(data));
    } catch (err) {
      button.disabled = false;
      button.after(el("span", { class: "alarm" }, ` ${err.message}`));
    }
  }

  function sparkline(series, limit) {
    // The upper bound day by day (the trap's clock), with the limit as a line: is it coming down?
    const SVG = "http://www.w3.org/2000/svg";
    const W = 120, H = 32;
    const chart = document.createElementNS(SVG, "svg");
    chart.setAttribute("viewBox", `0 0 ${W} ${H}`);
    chart.setAttribute("class", "spark");
    chart.setAttribute("role", "img");
    chart.setAttribute("aria-label", "upper bound over time");
    const points = series.filter((s) => typeof s.share_upper === "number");
    const y = (v) => (H - 2 - (H - 4) * Math.min(1, v)).toFixed(1);
    const x = (i) => (points.length < 2 ? W / 2 : 2 + ((W - 4) * i) / (points.length - 1)).toFixed(1);
    const line = document.createElementNS(SVG, "line");
    for (const [k, v] of Object.entries({ x1: 0, x2: W, y1: y(limit), y2: y(limit), class: "limit" })) line.setAttribute(k, String(v));
    chart.append(line);
    const path = document.createElementNS(SVG, "polyline");
    path.setAttribute("points", points.map((s, i) => `${x(i)},${y(s.share_upper)}`).join(" "));
    path.setAttribute("class", "bound");
    chart.append(path);
    const title = document.createElementNS(SVG, "title");
    title.textContent = `${points.length} day${points.length === 1 ? "" : "s"} with reviews`;
    chart.append(title);
    return chart;
  }

  function renderFigure(data) {
    const box = $("r-figure");
    clear(box);
    if (!data.cameras.length) { box.append(el("p", { class: "empty" }, "No audited bursts yet.")); return; }
    const head = ["Trap", "Camera", "Discarded", "Audited", "Received", "Reviewed", "Misses", "Share", "Upper bound",
                  "Recall ≥", "Over time", "Closing the loop"];
    const table = el("table", { class: "figure" }, el("thead", null, el("tr", null, ...head.map((h) => el("th", null, h)))));
    const body = el("tbody");
    for (const c of data.cameras) {
      const series = (c.series || []).map((s) => `${s.day}: ${s.misses}/${s.reviewed}, ≤ ${pct(s.share_upper, 1)}`).join("\n");
      body.append(el("tr", { "data-trap": c.trap, "data-camera": c.camera },
        el("td", null, c.trap), el("td", null, c.camera),
        el("td", { "data-field": "discarded" }, c.discarded ?? "–"), el("td", { "data-field": "audited" }, c.audited ?? "–"),
        el("td", { "data-field": "received" }, c.received), el("td", { "data-field": "reviewed" }, c.reviewed),
        el("td", { "data-field": "misses" }, c.misses), el("td", { "data-field": "share" }, pct(c.share, 2)),
        el("td", { "data-field": "share_upper", "data-value": c.share_upper ?? "" }, pct(c.share_upper, 2)),
        el("td", { "data-field": "recall_lower", "data-value": c.recall_lower ?? "" }, pct(c.recall_lower, 2)),
        el("td", { "data-field": "series", title: series }, sparkline(c.series || [], c.limit)),
        el("td", { "data-field": "proposal" }, proposalNode(c))));
    }
    table.append(body);
    box.append(table);
  }

  function renderRecent(reviews) {
    const list = $("r-recent");
    clear(list);
    for (const r of reviews) {
      list.append(el("li", { "data-audit-id": r.audit_id, "data-verdict": r.verdict, "data-undone": String(Boolean(r.undone_at)) },
        el("strong", null, r.verdict === "missed" ? "missed animal" : "blank"), ` · ${r.trap} / ${r.camera} · ${r.who} · ${trapTime(r.at)} UTC`,
        r.undone_at ? el("span", { class: "muted" }, " (undone)") : null,
        r.note ? el("div", { class: "review-note" }, r.note) : null));
    }
    if (!reviews.length) list.append(el("li", { class: "muted" }, "none yet"));
  }

  async function refresh() {
    const trap = $("r-trap").value;
    const params = new URLSearchParams(trap ? { trap } : {});
    const query = params.toString() ? `?${params}` : "";
    $("r-recall-csv").href = `api/recall.csv${query}`;
    $("r-recall-json").href = `api/recall${query}`;
    $("r-labels").href = `api/labels.csv${query}`;
    renderFigure(await getJSON("api/recall", params));
    renderRecent((await getJSON("api/reviews")).reviews);
  }

  async function loadTraps() {
    const data = await getJSON("api/state");
    const select = $("r-trap");
    for (const card of data.traps) select.append(el("option", { value: card.trap }, card.trap));
    const want = new URLSearchParams(location.search);
    if (want.get("trap")) select.value = want.get("trap");
    if (want.get("camera")) $("r-camera").value = want.get("camera");
  }

  function onKey(e) {
    if (e.target instanceof HTMLInputElement || e.target instanceof HTMLSelectElement) return; // typing a note
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    if (e.key === "b") verdict("blank");
    else if (e.key === "m") verdict("missed");
    else if (e.key === "u") undo();
    else return;
    e.preventDefault();
  }

  function connectStream() {
    const source = new EventSource("api/stream");
    source.addEventListener("audit", () => { if (!state.audit) loadNext().catch(showError); });
    source.addEventListener("recall", () => refresh().catch(showError));
  }

  function showError(err) {
    console.error(err);
    say(`error: ${err.message}`);
  }

  document.addEventListener("DOMContentLoaded", () => {
    for (const button of document.querySelectorAll(".verdict")) {
      button.addEventListener("click", () => verdict(button.dataset.verdict));
    }
    $("r-undo").addEventListener("click", undo);
    document.addEventListener("keydown", onKey);
    $("r-note").addEventListener("keydown", (e) => { if (e.key === "Escape") e.target.blur(); });
    try { $("r-who").value = localStorage.getItem("bf_reviewer") || ""; } catch (_) { /* not remembered */ }
    $("r-who").addEventListener("keydown", (e) => { if (e.key === "Escape") e.target.blur(); });
    $("r-filters").addEventListener("submit", (e) => e.preventDefault());
    for (const id of ["r-trap", "r-camera"]) $(id).addEventListener("change", () => { loadNext().catch(showError); refresh().catch(showError); });
    connectStream();
    loadTraps().then(() => Promise.all([loadNext(), refresh()])).catch(showError);
  });
})();
