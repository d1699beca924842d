// blankfilter monitor: the page. Vanilla JS, no build step.
// Every value that came from a trap goes into the page as text (textContent, text nodes, attribute
// values): never as HTML. The server's Content-Security-Policy forbids inline script besides.
"use strict";

(function () {
  const SVG = "http://www.w3.org/2000/svg";
  const FEED_MAX = 200;
  const $ = (id) => document.getElementById(id);

  const state = {
    traps: new Map(), // trap id -> card data
    recall: new Map(), // trap id -> the field-recall figure of each of its cameras
    staleAfter: 900,
    oldestSeq: null,
    seen: new Set(), // event ids in the feed
    activityTimer: null,
    streamFailed: false,
  };

  // -- DOM helpers: text only -----------------------------------------------------------------------
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    setAttrs(node, attrs);
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVG, tag);
    setAttrs(node, attrs);
    if (text !== undefined) node.textContent = String(text);
    return node;
  }

  function setAttrs(node, attrs) {
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      node.setAttribute(key, value === true ? "" : String(value));
    }
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
  }

  // -- formatting -----------------------------------------------------------------------------------
  const num = (v, digits) => (typeof v === "number" && isFinite(v) ? v.toFixed(digits) : "–");
  // A cutoff in three significant digits: 1.2.0's is 0.00298, which toFixed(3) shows as 0.003.
  const cut = (v) => (typeof v === "number" && isFinite(v) ? String(Number(v.toPrecision(3))) : "–");

  function trapTime(iso) {
    // The trap's (camera's) clock, as written: never converted to this browser's zone.
    return typeof iso === "string" ? iso.replace("T", " ").replace(/\.\d+/, "").replace(/Z$/, "") : "–";
  }

  function ago(iso) {
    const t = Date.parse(iso);
    if (!isFinite(t)) return "never";
    const s = Math.round((Date.now() - t) / 1000);
    if (s < -60) return "in the future (trap clock ahead)";
    if (s < 60) return "just now";
    if (s < 3600) return `${Math.round(s / 60)} min ago`;
    if (s < 86400 * 2) return `${Math.round(s / 3600)} h ago`;
    return `${Math.round(s / 86400)} days ago`;
  }

  function isStale(card) {
    const t = Date.parse(card.heartbeat_at);
    return !isFinite(t) || (Date.now() - t) / 1000 > state.staleAfter;
  }

  function disk(mb) {
    if (typeof mb !== "number") return "–";
    return mb >= 1024 ? `${(mb / 1024).toFixed(1)} GB free` : `${mb.toFixed(0)} MB free`;
  }

  // -- data -----------------------------------------------------------------------------------------
  function filters() {
    const params = new URLSearchParams();
    for (const [key, id] of [["trap", "f-trap"], ["from", "f-from"], ["to", "f-to"]]) {
      const value = $(id).value;
      if (value) params.set(key, value);
    }
    return params;
  }

  async function getJSON(path, params) {
    const query = params && params.toString();
    const response = await fetch(query ? `${path}?${query}` : path, { credentials: "same-origin" });
    if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
    return response.json();
  }

  function matchesFilters(event) {
    const f = filters();
    const day = String(event.first_frame_at).slice(0, 10);
    if (f.get("trap") && event.trap !== f.get("trap")) return false;
    if (f.get("from") && day < f.get("from")) return false;
    if (f.get("to") && day > f.get("to")) return false;
    return true;
  }

  // -- broker and live indicators -------------------------------------------------------------------
  function renderBroker(broker) {
    const node = $("broker");
    node.dataset.connected = String(Boolean(broker.connected));
    node.textContent = `broker ${broker.url || ""}: ${broker.connected ? "connected" : "disconnected"}`;
    node.title = broker.why || "";
  }

  function renderLive(on) {
    $("live").dataset.live = String(on);
    $("live").textContent = on ? "live" : "live: reconnecting…";
  }

  // -- trap cards -----------------------------------------------------------------------------------
  function field(label, key, value, title) {
    return [el("dt", null, label), el("dd", { "data-field": key, title: title || null }, value)];
  }

  function renderCard(card) {
    const availability = card.availability || "unknown";
    const stale = isStale(card);
    const frames = card.frames_today;
    const model = card.model ? `${card.model.name} ${card.model.version}` : "–";
    const cutoff = card.cutoff === null || card.cutoff === undefined ? "–" : cut(card.cutoff);
    const outbox = typeof card.outbox_depth === "number"
      ? `${card.outbox_depth} waiting` + (card.outbox_oldest_age_s ? `, oldest ${Math.round(card.outbox_oldest_age_s / 60)} min` : "")
      : "–";
    const badge = availability === "online" && stale ? "online, late" : availability;
    const node = el("article", { class: "card", "data-trap": card.trap, "data-availability": availability,
                                 "data-stale": String(stale) },
      el("header", null, el("h3", null, card.trap), el("span", { class: "badge", "data-field": "availability" }, badge)),
      el("dl", null,
        ...field("Last heartbeat", "heartbeat", card.heartbeat_at ? ago(card.heartbeat_at) : "never", card.heartbeat_at),
        ...field("Blank ratio today", "blank_ratio",
                 typeof card.blank_ratio_today === "number" ? `${num(card.blank_ratio_today * 100, 1)} %` : "–"),
        ...field("Frames today", "frames_today", frames ? `${frames.seen} seen, ${frames.kept} kept` : "–"),
        ...field("Outbox", "outbox", outbox),
        ...field("Disk", "disk", disk(card.disk_free_mb)),
        ...field("Temperature", "temperature",
                 typeof card.cpu_temperature_c === "number" ? `${num(card.cpu_temperature_c, 1)} °C` : "–",
                 card.throttled ? `throttled: ${card.throttled}` : null),
        ...field("Model", "model", model),
        ...field("Cutoff", "cutoff", cutoff + (card.cutoff_source === "remote" ? " (remote)" : "") +
                 Object.entries(card.camera_cutoffs || {}).map(([cam, v]) => `; ${cam}: ${cut(v)}`).join("")),
        ...field("Events stored", "events", String(card.events ?? 0)),
      ),
      recallLines(card.trap));
    return node;
  }

  function recallLines(trap) {
    // The audit review's figure per camera: misses in the reviewed sample, the 95 % bound, the recall bound.
    const cameras = state.recall.get(trap) || [];
    if (!cameras.length) return null;
    const pct = (v) => (typeof v === "number" ? `${(v * 100).toFixed(1)} %` : "–");
    const list = el("ul", { class: "recall-lines", "data-field": "recall" });
    for (const c of cameras) {
      const text = `${c.camera}: ${c.misses} missed of ${c.reviewed} reviewed (${c.discarded ?? "?"} discarded) · ` +
        `animals in discarded ≤ ${pct(c.share_upper)} · recall ≥ ${pct(c.recall_lower)}`;
      list.append(el("li", { "data-camera": c.camera, class: c.over_limit ? "alarm" : null }, text,
        c.over_limit ? " · over the limit: " : " ",
        el("a", { href: `review?trap=${encodeURIComponent(trap)}&camera=${encodeURIComponent(c.camera)}` }, "review")));
    }
    return list;
  }

  function setRecall(cameras, trap) {
    const byTrap = new Map();
    for (const c of cameras) byTrap.set(c.trap, [...(byTrap.get(c.trap) || []), c]);
    if (trap !== undefined) state.recall.set(trap, byTrap.get(trap) || []);
    else { state.recall = byTrap; }
    for (const card of state.traps.values()) if (trap === undefined || card.trap === trap) upsertCard(card);
  }

  function upsertCard(card) {
    if (!card || !card.trap) return;
    state.traps.set(card.trap, card);
    const fresh = renderCard(card);
    const existing = [...$("traps").children].find((n) => n.dataset.trap === card.trap);
    if (existing) {
      existing.replaceWith(fresh);
    } else {
      const after = [...$("traps").children].find((n) => n.dataset.trap > card.trap);
      $("traps").insertBefore(fresh, after || null);
    }
    $("no-traps").hidden = state.traps.size > 0;
    renderTrapOptions();
  }

  function renderTrapOptions() {
    const select = $("f-trap");
    const current = select.value;
    const have = new Set([...select.options].map((o) => o.value));
    for (const trap of [...state.traps.keys()].sort()) {
      if (!have.has(trap)) select.append(el("option", { value: trap }, trap));
    }
    select.value = current;
  }

  function refreshAges() {
    for (const card of state.traps.values()) upsertCard(card);
  }

  // -- counters -------------------------------------------------------------------------------------
  const COUNTER_LABEL = { malformed: "malformed payload", thumbnail_dropped: "thumbnail dropped", duplicate: "duplicate" };

  function renderCounters(counters) {
    const list = $("counters");
    clear(list);
    let total = 0;
    for (const [kind, reasons] of Object.entries(counters || {})) {
      for (const [reason, info] of Object.entries(reasons)) {
        total += info.count;
        list.append(el("li", { "data-kind": kind, "data-reason": reason, "data-count": info.count },
          el("span", { class: "count" }, String(info.count)), ` ${COUNTER_LABEL[kind] || kind}: ${reason}`,
          el("span", { class: "muted" }, ` (last ${ago(info.last_at)})`)));
      }
    }
    if (!total) list.append(el("li", { class: "muted" }, "nothing refused"));
  }

  // -- live feed ------------------------------------------------------------------------------------
  function renderEvent(event, isNew) {
    const picture = event.thumbnail
      ? el("img", { src: event.thumbnail.url, width: event.thumbnail.width, height: event.thumbnail.height,
                    alt: `burst at ${trapTime(event.first_frame_at)}`, loading: "lazy" })
      : el("div", { class: "nothumb" }, "no thumbnail");
    const score = event.max_score === null ? "not scored" : `max score ${num(event.max_score, 3)}`;
    return el("li", { class: isNew ? "event new" : "event", "data-event-id": event.event_id, "data-trap": event.trap,
                      "data-seq": event.seq },
      picture,
      el("div", { class: "what" },
        el("div", null, el("strong", { class: "trap" }, event.trap), " ",
           el("time", { datetime: event.first_frame_at, title: "trap clock" }, trapTime(event.first_frame_at))),
        el("div", { class: "muted" },
           `${event.frames} frame${event.frames === 1 ? "" : "s"} · ${score} · cutoff ${cut(event.cutoff)}` +
           (event.unscored_frames ? ` · ${event.unscored_frames} unscored` : "")),
        el("div", { class: "file" }, (event.files || []).join(", ")),
        el("div", { class: "muted small" }, `burst ${event.burst}`)));
  }

  function addEvents(events, where) {
    const feed = $("feed");
    for (const event of events) {
      if (state.seen.has(event.event_id)) continue;
      state.seen.add(event.event_id);
      const node = renderEvent(event, where === "top");
      if (where === "top") feed.insertBefore(node, feed.firstChild);
      else feed.append(node);
      if (state.oldestSeq === null || event.seq < state.oldestSeq) state.oldestSeq = event.seq;
    }
    while (feed.children.length > FEED_MAX && where === "top") {
      state.seen.delete(feed.lastChild.dataset.eventId);
      feed.removeChild(feed.lastChild);
    }
    $("no-events").hidden = feed.children.length > 0;
  }

  async function loadEvents() {
    const params = filters();
    params.set("limit", "50");
    const data = await getJSON("api/events", params);
    clear($("feed"));
    state.seen.clear();
    state.oldestSeq = null;
    addEvents(data.events, "bottom");
    $("older").hidden = data.events.length < 50;
  }

  async function loadOlder() {
    const params = filters();
    params.set("limit", "50");
    if (state.oldestSeq !== null) params.set("before", String(state.oldestSeq));
    const data = await getJSON("api/events", params);
    addEvents(data.events, "bottom");
    $("older").hidden = data.events.length < 50;
  }

  // -- charts ---------------------------------------------------------------------------------------
  function hourChart(trap, counts) {
    const W = 240, H = 100, top = 6, bottom = 16, bar = W / 24;
    const max = Math.max(1, ...counts);
    const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "hours", role: "img", "data-trap": trap,
                               "aria-label": `events by hour of day at ${trap}` });
    chart.append(svg("line", { x1: 0, x2: W, y1: H - bottom, y2: H - bottom, class: "axis" }));
    counts.forEach((count, hour) => {
      const h = ((H - top - bottom) * count) / max;
      const rect = svg("rect", { class: "bar", x: (hour * bar + 1).toFixed(2), y: (H - bottom - h).toFixed(2),
                                 width: (bar - 2).toFixed(2), height: h.toFixed(2),
                                 "data-trap": trap, "data-hour": hour, "data-count": count });
      rect.append(svg("title", null, `${String(hour).padStart(2, "0")}:00–${String(hour + 1).padStart(2, "0")}:00: ${count} event${count === 1 ? "" : "s"}`));
      chart.append(rect);
    });
    for (const hour of [0, 6, 12, 18]) {
      chart.append(svg("text", { x: hour * bar + 1, y: H - 3, class: "tick" }, `${String(hour).padStart(2, "0")}h`));
    }
    chart.append(svg("text", { x: W - 1, y: top + 6, class: "tick max" }, `max ${max}`));
    return el("figure", { class: "chart", "data-trap": trap }, el("figcaption", null, trap), chart);
  }

  function dayRange(rows) {
    const days = [...new Set(rows.map((r) => r.day))].sort();
    if (days.length < 2) return days;
    const first = Date.parse(`${days[0]}T00:00:00Z`), last = Date.parse(`${days[days.length - 1]}T00:00:00Z`);
    const span = Math.round((last - first) / 86400000) + 1;
    if (span > 400) return days; // a long season: the days with events only
    const out = [];
    for (let i = 0; i < span; i++) out.push(new Date(first + i * 86400000).toISOString().slice(0, 10));
    return out;
  }

  function dayChart(rows) {
    const days = dayRange(rows);
    const totals = new Map(days.map((d) => [d, { count: 0, traps: [] }]));
    for (const r of rows) {
      const t = totals.get(r.day);
      if (t) { t.count += r.count; t.traps.push(`${r.trap}: ${r.count}`); }
    }
    const W = Math.max(480, days.length * 12), H = 110, top = 6, bottom = 16;
    const bar = Math.min(28, W / Math.max(1, days.length));
    const max = Math.max(1, ...[...totals.values()].map((t) => t.count));
    const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "days", role: "img", "aria-label": "events per day",
                               preserveAspectRatio: "xMinYMin meet" });
    chart.append(svg("line", { x1: 0, x2: W, y1: H - bottom, y2: H - bottom, class: "axis" }));
    days.forEach((day, i) => {
      const t = totals.get(day);
      const h = ((H - top - bottom) * t.count) / max;
      const rect = svg("rect", { class: "bar", x: (i * bar + 1).toFixed(2), y: (H - bottom - h).toFixed(2),
                                 width: Math.max(1, bar - 2).toFixed(2), height: h.toFixed(2),
                                 "data-day": day, "data-count": t.count });
      rect.append(svg("title", null, `${day}: ${t.count} event${t.count === 1 ? "" : "s"}` + (t.traps.length ? ` (${t.traps.join(", ")})` : "")));
      chart.append(rect);
    });
    if (bar >= 24) { // room for every day's label
      days.forEach((day, i) => chart.append(svg("text", { x: (i + 0.5) * bar, y: H - 3, class: "tick mid" }, day.slice(5))));
      const years = [...new Set(days.map((d) => d.slice(0, 4)))];
      chart.append(svg("text", { x: W - 1, y: H - 3, class: "tick end" }, years.join("–")));
    } else if (days.length) {
      chart.append(svg("text", { x: 1, y: H - 3, class: "tick" }, days[0]));
      chart.append(svg("text", { x: days.length * bar - 1, y: H - 3, class: "tick end" }, days[days.length - 1]));
    }
    chart.append(svg("text", { x: W - 1, y: top + 6, class: "tick max" }, `max ${max}`));
    return chart;
  }

  async function loadActivity() {
    const data = await getJSON("api/activity", filters());
    const hours = $("hours");
    clear(hours);
    const traps = Object.keys(data.hour_of_day).sort();
    for (const trap of traps) hours.append(hourChart(trap, data.hour_of_day[trap]));
    if (!traps.length) hours.append(el("p", { class: "empty" }, "No events in this selection."));
    const days = $("days");
    clear(days);
    days.append(data.per_day.length ? dayChart(data.per_day) : el("p", { class: "empty" }, "No events in this selection."));
  }

  function scheduleActivity() {
    clearTimeout(state.activityTimer);
    state.activityTimer = setTimeout(() => loadActivity().catch(showError), 300);
  }

  // -- state, filters, stream -----------------------------------------------------------------------
  async function loadState() {
    const data = await getJSON("api/state");
    state.staleAfter = data.stale_after_s;
    renderBroker(data.broker);
    renderCounters(data.counters);
    setRecall(data.recall || []);
    for (const card of data.traps) upsertCard(card);
    $("no-traps").hidden = state.traps.size > 0;
  }

  function showError(err) {
    console.error(err);
    $("live").textContent = `error: ${err.message}`;
  }

  function applyFilters() {
    const params = filters();
    const query = params.toString();
    history.replaceState(null, "", query ? `?${query}` : location.pathname);
    $("csv").href = query ? `api/events.csv?${query}` : "api/events.csv";
    loadEvents().catch(showError);
    loadActivity().catch(showError);
  }

  function readFiltersFromURL() {
    const params = new URLSearchParams(location.search);
    const trap = params.get("trap");
    if (trap) $("f-trap").append(el("option", { value: trap }, trap));
    for (const [key, id] of [["trap", "f-trap"], ["from", "f-from"], ["to", "f-to"]]) {
      if (params.get(key)) $(id).value = params.get(key);
    }
  }

  function connectStream() {
    const source = new EventSource("api/stream");
    source.addEventListener("open", () => {
      renderLive(true);
      if (state.streamFailed) { // missed messages while away: reload
        state.streamFailed = false;
        loadState().catch(showError);
        applyFilters();
      }
    });
    source.addEventListener("error", () => { state.streamFailed = true; renderLive(false); });
    source.addEventListener("event", (m) => {
      const event = JSON.parse(m.data);
      if (event && matchesFilters(event)) { addEvents([event], "top"); scheduleActivity(); }
    });
    source.addEventListener("trap", (m) => upsertCard(JSON.parse(m.data)));
    source.addEventListener("counters", (m) => renderCounters(JSON.parse(m.data)));
    source.addEventListener("recall", (m) => { const d = JSON.parse(m.data); setRecall(d.cameras, d.trap); });
    source.addEventListener("broker", (m) => renderBroker(JSON.parse(m.data)));
  }

  document.addEventListener("DOMContentLoaded", () => {
    readFiltersFromURL();
    for (const id of ["f-trap", "f-from", "f-to"]) $(id).addEventListener("change", applyFilters);
    $("f-clear").addEventListener("click", () => {
      for (const id of ["f-trap", "f-from", "f-to"]) $(id).value = "";
      applyFilters();
    });
    $("filters").addEventListener("submit", (e) => e.preventDefault());
    $("older").addEventListener("click", () => loadOlder().catch(showError));
    connectStream(); // first: what arrives while the rest loads is not missed
    loadState().then(applyFilters).catch(showError);
    setInterval(refreshAges, 30000);
  });
})();
