// The family's view: devices, each camera's day (recordings, gaps, events), playback from
// any moment, export and save of a range, the saved clips, and the router's WiFi.

import { ApiFailure, blobUrl, bytes, call, clock, day, get, h, seconds, showError, state, when } from "./api.js";
import { loadRouter } from "./router.js";
import { loadSaved } from "./saved.js";
import { CAUSES, drawStrip } from "./strip.js";

const $ = (id) => document.getElementById(id);
const HOUR = 3600e3;
const DAY = 24 * HOUR;
/** How much a playback session asks for after the moment clicked. */
const PLAY_SPAN = 2 * HOUR;

const view = {
  devices: [],
  device: null, // the selected device
  dayStart: null, // local midnight of the day shown
  timeline: null, // the timeline of that day
  focus: null, // start of the hour shown in detail
  selection: null, // [Date, Date]
  position: null, // where the player is (approximately)
  playingFrom: null,
  thumbnails: new Map(), // event_id -> object URL
};
let presenceTimer = null;

export async function showFamily() {
  $("family").hidden = false;
  wire();
  await loadDevices();
  await loadSaved();
  clearInterval(presenceTimer);
  presenceTimer = setInterval(() => loadDevices({ quiet: true }), 10000);
}

export function hideFamily() {
  clearInterval(presenceTimer);
  $("family").hidden = true;
  $("player").removeAttribute("src");
  Object.assign(view, { devices: [], device: null, timeline: null, selection: null, position: null, playingFrom: null });
}

function wire() {
  $("day").onchange = () => {
    if ($("day").value) loadDay(new Date(`${$("day").value}T00:00:00`));
  };
  $("day-prev").onclick = () => loadDay(new Date(view.dayStart.getTime() - DAY));
  $("day-next").onclick = () => loadDay(new Date(view.dayStart.getTime() + DAY));
  $("range-form").onsubmit = (e) => e.preventDefault();
  $("export").onclick = exportRange;
  $("save").onclick = saveRange;
  $("range-start").onchange = rangeFromInputs;
  $("range-end").onchange = rangeFromInputs;
  $("saved-refresh").onclick = loadSaved;
  const video = $("player");
  video.ontimeupdate = () => {
    if (!view.playingFrom) return;
    view.position = new Date(view.playingFrom.getTime() + video.currentTime * 1000);
    $("player-state").textContent = `Playing ${clock(view.position)} (from ${clock(view.playingFrom)})`;
    drawHour();
  };
  video.onerror = () => {
    const err = video.error;
    $("player-state").textContent = `The video could not be played${err ? `: ${err.message || err.code}` : ""}`;
    $("player-state").className = "state error";
  };
}

document.addEventListener("keydown", (e) => {
  if (e.key === "Escape") $("popover").hidden = true;
});

// --- devices ---------------------------------------------------------------------------------

async function loadDevices({ quiet = false } = {}) {
  const list = $("device-list");
  if (!quiet) state(list, "loading", "Loading devices…");
  let body;
  try {
    body = await get("/app/v1/devices");
  } catch (e) {
    if (!quiet) showError(list, e);
    return;
  }
  view.devices = body.devices;
  if (!body.devices.length) {
    state(list, "empty", "No devices are bound to this account yet.");
    return;
  }
  list.replaceChildren(...body.devices.map(deviceItem));
  if (!view.device) {
    const first = body.devices.find((d) => d.kind === "camera") || body.devices[0];
    await select(first);
  }
}

function deviceItem(d) {
  const selected = view.device && view.device.device_id === d.device_id;
  return h(
    "li",
    {},
    h(
      "button.device",
      {
        "aria-pressed": selected ? "true" : "false",
        dataset: { deviceId: d.device_id, kind: d.kind },
        onclick: () => select(d),
      },
      h("span.kind", { "aria-hidden": "true" }, d.kind === "camera" ? "◉" : "≋"),
      h("span.name", {}, d.name || d.device_id),
      h(`span.badge.${d.online ? "on" : "off"}`, {}, d.online ? "online" : "offline"),
      h("span.meta", {}, `${d.device_id} · ${d.kind} · seen ${when(d.last_seen)}`),
    ),
  );
}

async function select(d) {
  view.device = d;
  for (const b of document.querySelectorAll("#device-list button.device")) {
    b.setAttribute("aria-pressed", b.dataset.deviceId === d.device_id ? "true" : "false");
  }
  $("popover").hidden = true;
  $("camera").hidden = d.kind !== "camera";
  $("router").hidden = d.kind !== "router";
  if (d.kind === "router") return loadRouter(d);
  $("camera-title").textContent = d.name || d.device_id;
  view.selection = null;
  const seen = d.last_seen ? new Date(d.last_seen) : new Date();
  return loadDay(new Date(seen.getFullYear(), seen.getMonth(), seen.getDate()));
}

// --- a camera's day --------------------------------------------------------------------------

async function loadDay(start) {
  const d = view.device;
  view.dayStart = start;
  $("day").value = day(start);
  const status = $("timeline-state");
  state(status, "loading", "Loading the day…");
  const end = new Date(start.getTime() + DAY);
  const q = new URLSearchParams({ start: start.toISOString(), end: end.toISOString() });
  try {
    view.timeline = await get(`/app/v1/devices/${encodeURIComponent(d.device_id)}/timeline?${q}`);
  } catch (e) {
    view.timeline = { ranges: [], events: [], gaps: [] };
    showError(status, e);
    drawAll();
    return;
  }
  const t = view.timeline;
  const recorded = t.ranges.reduce((s, r) => s + (new Date(r.end) - new Date(r.start)), 0);
  state(
    status,
    t.ranges.length || t.events.length ? "ok" : "empty",
    t.ranges.length || t.events.length
      ? `${seconds(recorded / 1000)} recorded in ${t.ranges.length} range(s), ${t.events.length} event(s)`
      : "Nothing recorded on this day.",
  );
  view.focus = hourOf(firstInterest(t) || start);
  drawAll();
  listEvents();
}

function hourOf(t) {
  const d = new Date(t);
  d.setMinutes(0, 0, 0);
  return d;
}

function firstInterest(t) {
  if (t.events.length) return new Date(t.events[t.events.length - 1].at);
  if (t.ranges.length) return new Date(t.ranges[t.ranges.length - 1].start);
  return null;
}

/** Gaps as the timeline gives them; an older service gives none: the holes between ranges
 * (up to now) are then shown as "not recorded". */
function gapsOf(t, start, end) {
  if (Array.isArray(t.gaps)) return t.gaps;
  const gaps = [];
  let cursor = start.getTime();
  const stop = Math.min(end.getTime(), Date.now());
  for (const r of t.ranges) {
    const a = new Date(r.start).getTime();
    if (a > cursor) gaps.push({ start: new Date(cursor), end: new Date(a), cause: "unknown" });
    cursor = Math.max(cursor, new Date(r.end).getTime());
  }
  if (stop > cursor) gaps.push({ start: new Date(cursor), end: new Date(stop), cause: "unknown" });
  return gaps;
}

function drawAll() {
  drawDay();
  drawHour();
  drawLegend();
}

function stripView(start, end) {
  const t = view.timeline || { ranges: [], events: [] };
  return {
    start,
    end,
    ranges: t.ranges,
    gaps: gapsOf(t, view.dayStart, new Date(view.dayStart.getTime() + DAY)),
    events: t.events,
    selection: view.selection,
    position: view.position,
  };
}

const handlers = {
  play: (t) => play(t),
  select: (a, b) => setSelection(a, b),
  event: (ev, el) => showEvent(ev, el),
};

function drawDay() {
  const start = view.dayStart;
  const v = stripView(start, new Date(start.getTime() + DAY));
  v.window = view.focus;
  v.windowMs = HOUR;
  drawStrip($("day-strip"), v, {
    ...handlers,
    play: (t) => {
      view.focus = hourOf(t);
      play(t);
    },
  });
}

function drawHour() {
  if (!view.focus) return;
  const end = new Date(view.focus.getTime() + HOUR);
  $("hour-title").textContent = `${clock(view.focus).slice(0, 5)}–${clock(end).slice(0, 5)} in detail`;
  drawStrip($("hour-strip"), stripView(view.focus, end), handlers);
}

function drawLegend() {
  const t = view.timeline || {};
  const shown = new Set((Array.isArray(t.gaps) ? t.gaps : gapsOf(t, view.dayStart, new Date(view.dayStart.getTime() + DAY))).map((g) => g.cause));
  const items = [h("li", {}, h("span.swatch.rec"), "recorded")];
  for (const [cause, text] of Object.entries(CAUSES)) {
    items.push(h("li", { class: shown.has(cause) ? "" : "absent" }, h(`span.swatch.gap-${cause}`), text));
  }
  items.push(h("li", {}, h("span.swatch.ev-dot"), "event"));
  $("legend").replaceChildren(...items);
}

function listEvents() {
  const list = $("event-list");
  const events = (view.timeline && view.timeline.events) || [];
  if (!events.length) {
    state(list, "empty", "No events on this day.");
    return;
  }
  list.replaceChildren(
    ...events.map((ev) =>
      h(
        "li",
        {},
        h(
          `button.event.ev-${ev.type}`,
          { dataset: { eventId: ev.event_id }, onclick: (e) => showEvent(ev, e.currentTarget) },
          h("span.ev-time", {}, clock(new Date(ev.at))),
          h("span.ev-type", {}, ev.type),
        ),
      ),
    ),
  );
}

async function showEvent(ev, anchor) {
  const pop = $("popover");
  const at = new Date(ev.at);
  const img = h("img", { alt: `${ev.type} at ${clock(at)}`, class: "thumb" });
  pop.replaceChildren(
    h("p.pop-title", {}, `${ev.type} · ${clock(at)}`),
    img,
    h("div.row", {},
      h("button.primary", { onclick: () => { pop.hidden = true; view.focus = hourOf(at); play(new Date(at.getTime() - 2000)); } }, "▶ Play from here"),
      h("button", { onclick: () => { pop.hidden = true; } }, "Close")),
  );
  pop.dataset.eventId = ev.event_id;
  pop.hidden = false;
  place(pop, anchor);
  if (!ev.thumbnail_url) {
    img.replaceWith(h("p.state.empty", {}, "No picture for this event."));
    return;
  }
  try {
    let url = view.thumbnails.get(ev.event_id);
    if (!url) {
      url = await blobUrl(ev.thumbnail_url);
      view.thumbnails.set(ev.event_id, url);
    }
    img.src = url;
  } catch (e) {
    img.replaceWith(h("p.state.error", {}, e instanceof ApiFailure ? e.describe() : String(e)));
  }
}

function place(pop, anchor) {
  const box = anchor.getBoundingClientRect();
  const host = $("camera").getBoundingClientRect();
  const left = Math.min(Math.max(0, box.left - host.left - 120), Math.max(0, host.width - 280));
  pop.style.left = `${left}px`;
  pop.style.top = `${box.bottom - host.top + 8}px`;
}

// --- playback --------------------------------------------------------------------------------

/** Where playing from `t` starts: `t` inside a recording, else the next recording's start. */
function playableFrom(t) {
  const ranges = (view.timeline && view.timeline.ranges) || [];
  for (const r of ranges) {
    const a = new Date(r.start);
    const b = new Date(r.end);
    if (t >= a && t < b) return t;
    if (a > t) return a;
  }
  return null;
}

async function play(t) {
  const status = $("player-state");
  const from = playableFrom(t);
  if (!from) {
    status.className = "state empty";
    status.textContent = `Nothing recorded after ${clock(t)} on this day.`;
    drawAll();
    return;
  }
  const end = new Date(Math.min(from.getTime() + PLAY_SPAN, view.dayStart.getTime() + DAY));
  status.className = "state loading";
  status.textContent = `Opening a playback session from ${clock(from)}…`;
  try {
    const session = await call("POST", `/app/v1/devices/${encodeURIComponent(view.device.device_id)}/playback`, {
      body: { start: from.toISOString(), end: end.toISOString() },
    });
    const video = $("player");
    view.playingFrom = from;
    view.position = from;
    video.src = session.url;
    status.className = "state ok";
    status.textContent = `Playing from ${clock(from)}`;
    await video.play().catch(() => {
      /* autoplay refused: the controls start it */
    });
  } catch (e) {
    status.className = "state error";
    status.textContent = e instanceof ApiFailure ? e.describe() : String(e);
  }
  drawAll();
}

// --- a range: export and save ----------------------------------------------------------------

function setSelection(a, b) {
  view.selection = [a, b];
  $("range-start").value = clock(a);
  $("range-end").value = clock(b);
  $("range-state").textContent = `Selected ${clock(a)}–${clock(b)} (${seconds((b - a) / 1000)})`;
  $("range-state").className = "state ok";
  drawAll();
}

function timeOnDay(value) {
  const [hh, mm, ss] = value.split(":").map(Number);
  const d = new Date(view.dayStart);
  d.setHours(hh, mm || 0, ss || 0, 0);
  return d;
}

function rangeFromInputs() {
  const a = $("range-start").value;
  const b = $("range-end").value;
  if (!a || !b) return null;
  const start = timeOnDay(a);
  const end = timeOnDay(b);
  if (end <= start) {
    $("range-state").className = "state error";
    $("range-state").textContent = "The end must be after the start.";
    return null;
  }
  view.selection = [start, end];
  drawAll();
  return view.selection;
}

async function exportRange() {
  const range = rangeFromInputs();
  const status = $("range-state");
  if (!range) {
    status.className = "state error";
    status.textContent = status.textContent || "Select a range first (drag on the strip).";
    return;
  }
  const [a, b] = range;
  const id = view.device.device_id;
  status.className = "state loading";
  status.textContent = `Exporting ${clock(a)}–${clock(b)}…`;
  const q = new URLSearchParams({ start: a.toISOString(), end: b.toISOString() });
  try {
    const response = await call("GET", `/app/v1/devices/${encodeURIComponent(id)}/clip.mp4?${q}`, { raw: true });
    const blob = await response.blob();
    const name = `${id}-${day(a)}-${clock(a).replaceAll(":", "")}.mp4`;
    const link = h("a.download", { href: URL.createObjectURL(blob), download: name }, `Download ${name} (${bytes(blob.size)})`);
    status.className = "state ok";
    status.replaceChildren("Exported. ", link);
    link.click();
  } catch (e) {
    status.className = "state error";
    status.textContent = e instanceof ApiFailure ? e.describe() : String(e);
  }
}

async function saveRange() {
  const range = rangeFromInputs();
  const status = $("range-state");
  if (!range) {
    status.className = "state error";
    status.textContent = "Select a range first (drag on the strip).";
    return;
  }
  const [a, b] = range;
  status.className = "state loading";
  status.textContent = `Saving ${clock(a)}–${clock(b)} to the family cloud…`;
  try {
    const item = await call("POST", "/app/v1/family-cloud", {
      body: { device_id: view.device.device_id, start: a.toISOString(), end: b.toISOString() },
    });
    status.className = "state ok";
    status.textContent = `Saved to the family cloud${item && item.bytes ? ` (${bytes(item.bytes)})` : ""}.`;
  } catch (e) {
    status.className = "state error";
    status.textContent = e instanceof ApiFailure ? e.describe() : String(e);
  }
  await loadSaved();
}
