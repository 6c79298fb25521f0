// A strip of time drawn in SVG: recorded ranges, gaps coloured by cause, event marks, the
// selected range and the play position. A click asks to play from a moment; a drag selects
// a range; an event mark, hovered or clicked, asks to show the event.

const NS = "http://www.w3.org/2000/svg";
const W = 1000; // viewBox width
const TOP = 18; // the band of recordings starts here...
const BAND = 26; // ...and is this tall

/** Causes of a gap (the timeline's `gaps[].cause`) with their legend text. */
export const CAUSES = {
  offline: "camera offline",
  broadband_stopped: "broadband stopped",
  not_entitled: "no cloud-replay plan",
  unknown: "not recorded",
};

function svgEl(name, attrs, text) {
  const el = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  if (text !== undefined) el.textContent = text;
  return el;
}

function tickStep(spanMs) {
  const hour = 3600e3;
  if (spanMs > 12 * hour) return 3 * hour;
  if (spanMs > 3 * hour) return hour;
  if (spanMs > 30 * 60e3) return 10 * 60e3;
  return 60e3;
}

function label(t, stepMs) {
  const d = new Date(t);
  const hh = String(d.getHours()).padStart(2, "0");
  const mm = String(d.getMinutes()).padStart(2, "0");
  return stepMs >= 3600e3 ? `${hh}:00` : `${hh}:${mm}`;
}

/**
 * Draw `view` ({start, end: Date; ranges, gaps, events: from the timeline; selection:
 * [Date, Date] | null; position: Date | null}) into `svg`, replacing what was there.
 * `on` = {play(Date), select(Date, Date), event(ev, element)}.
 */
export function drawStrip(svg, view, on) {
  const start = view.start.getTime();
  const span = view.end.getTime() - start;
  const x = (t) => Math.max(0, Math.min(W, ((new Date(t).getTime() - start) / span) * W));
  svg.setAttribute("viewBox", `0 0 ${W} 60`);
  svg.setAttribute("preserveAspectRatio", "none");
  svg.replaceChildren();
  svg.append(svgEl("rect", { x: 0, y: TOP, width: W, height: BAND, class: "none" }));

  const step = tickStep(span);
  const first = Math.ceil(start / step) * step;
  for (let t = first; t <= start + span; t += step) {
    const tx = x(t);
    svg.append(svgEl("line", { x1: tx, x2: tx, y1: TOP, y2: TOP + BAND + 4, class: "tick" }));
    svg.append(svgEl("text", { x: tx + 2, y: 58, class: "tick-label" }, label(t, step)));
  }
  for (const g of view.gaps || []) {
    const cause = CAUSES[g.cause] ? g.cause : "unknown";
    const r = svgEl("rect", {
      x: x(g.start),
      y: TOP,
      width: Math.max(1, x(g.end) - x(g.start)),
      height: BAND,
      class: `gap gap-${cause}`,
    });
    r.append(svgEl("title", {}, `${CAUSES[cause]}: ${label(g.start, 60e3)}–${label(g.end, 60e3)}`));
    svg.append(r);
  }
  for (const r of view.ranges || []) {
    svg.append(
      svgEl("rect", {
        x: x(r.start),
        y: TOP,
        width: Math.max(1.5, x(r.end) - x(r.start)),
        height: BAND,
        class: "rec",
      }),
    );
  }
  if (view.window) {
    // The part of this strip another one shows in detail.
    const a = view.window.getTime();
    svg.append(svgEl("rect", { x: x(a), y: TOP - 3, width: Math.max(2, x(a + view.windowMs) - x(a)), height: BAND + 6, class: "focus" }));
  }
  if (view.selection) {
    const [a, b] = view.selection;
    svg.append(
      svgEl("rect", { x: x(a), y: TOP - 4, width: Math.max(1, x(b) - x(a)), height: BAND + 8, class: "sel" }),
    );
  }
  if (view.position) {
    const px = x(view.position);
    svg.append(svgEl("line", { x1: px, x2: px, y1: 2, y2: TOP + BAND + 2, class: "head" }));
  }
  for (const ev of view.events || []) {
    const ex = x(ev.at);
    const mark = svgEl("g", { class: `ev ev-${ev.type}`, tabindex: 0, "data-event-id": ev.event_id });
    mark.append(svgEl("line", { x1: ex, x2: ex, y1: 9, y2: TOP + BAND, class: "ev-line" }));
    mark.append(svgEl("circle", { cx: ex, cy: 9, r: 6, class: "ev-dot" }));
    mark.append(svgEl("title", {}, `${ev.type} at ${new Date(ev.at).toLocaleTimeString()}`));
    mark.addEventListener("pointerdown", (e) => e.stopPropagation());
    mark.addEventListener("click", (e) => {
      e.stopPropagation();
      on.event(ev, mark);
    });
    mark.addEventListener("mouseenter", () => on.event(ev, mark));
    mark.addEventListener("keydown", (e) => {
      if (e.key === "Enter") on.event(ev, mark);
    });
    svg.append(mark);
  }
  listen(svg, start, span, on);
}

function listen(svg, start, span, on) {
  const at = (clientX) => {
    const box = svg.getBoundingClientRect();
    const frac = Math.max(0, Math.min(1, (clientX - box.left) / box.width));
    return new Date(start + frac * span);
  };
  svg.onpointerdown = (down) => {
    if (down.button !== 0) return;
    svg.setPointerCapture(down.pointerId);
    const x0 = down.clientX;
    let moved = false;
    svg.onpointermove = (move) => {
      if (Math.abs(move.clientX - x0) > 4) moved = true;
    };
    svg.onpointerup = (up) => {
      svg.onpointermove = null;
      svg.onpointerup = null;
      if (!moved) {
        on.play(at(up.clientX));
        return;
      }
      const [a, b] = [at(x0), at(up.clientX)].sort((p, q) => p - q);
      on.select(a, b);
    };
  };
}
