// The family's router, read-only: status, radios, networks, mesh and radio telemetry; the
// WiFi packages that cover it (R16, R17) and the family's own tuning, paid by one of them.

import { call, get, h, showError, state, when } from "./api.js";

const $ = (id) => document.getElementById(id);

export async function loadRouter(d) {
  const box = $("router-body");
  $("router-title").textContent = d.name || d.device_id;
  state(box, "loading", "Asking the router…");
  let r;
  try {
    r = await get(`/app/v1/devices/${encodeURIComponent(d.device_id)}/router`);
  } catch (e) {
    showError(box, e);
    return;
  }
  box.replaceChildren(...routerView(r).filter((x) => x !== null));
  await loadPackages(d);
}

async function loadPackages(d) {
  const box = $("packages-of-router");
  state(box, "loading", "Reading the family's WiFi packages…");
  let b;
  try {
    b = await get("/app/v1/home-network");
  } catch (e) {
    showError(box, e);
    return;
  }
  const covering = b.packages.filter((p) => p.devices.some((x) => x.device_id === d.device_id));
  const rows = covering.map((p) => {
    const mine = p.devices.find((x) => x.device_id === d.device_id);
    return [p.product, p.status, p.valid_until, `${mine.tunings - mine.used} of ${mine.tunings}`];
  });
  const result = h("div", { id: "tune-result" });
  const tune = h("button.primary", { type: "button", id: "tune", onclick: () => tuneRouter(d, result) }, "Tune my WiFi");
  box.replaceChildren(
    table(["Product", "Status", "Valid until", "Tunings left"], rows, "No WiFi package covers this router."),
    h("p.row", {}, tune, h("span.meta", {}, "a tuning is included once per router and package")),
    result,
  );
}

async function tuneRouter(d, result) {
  state(result, "loading", "Tuning…");
  try {
    const r = await call("POST", `/app/v1/devices/${encodeURIComponent(d.device_id)}/tune`, { body: {} });
    const moved = r.changes.map((c) => `${c.radio} ${c.from_channel} → ${c.to_channel}`).join(", ");
    await loadPackages(d);
    state($("tune-result"), "ok", `Tuned${moved ? `: ${moved}` : ": the channels were already the best"}.`);
  } catch (e) {
    showError(result, e);
  }
}

function table(headings, rows, empty) {
  if (!rows.length) return h("p.state.empty", {}, empty);
  return h("table", {},
    h("thead", {}, h("tr", {}, headings.map((t) => h("th", {}, t)))),
    h("tbody", {}, rows.map((cells) => h("tr", {}, cells.map((c) => h("td", {}, c ?? ""))))));
}

function routerView(r) {
  const facts = [
    h(`span.badge.${r.online ? "on" : "off"}`, {}, r.online ? "online" : "offline"),
    r.suspended ? h("span.badge.warn", {}, "managed networking suspended (R12)") : null,
    h("span.meta", {}, `seen ${when(r.last_seen)} · ${r.clients} client(s)`),
    r.board ? h("span.meta", {}, `${r.board.hostname} · ${r.board.model} · ${r.board.release}`) : null,
  ];
  const ssh = r.ssh.ok ? null : h("p.state.error", {}, `Live status unavailable: ${r.ssh.message || r.ssh.code || "SSH failed"}; showing the last telemetry.`);
  return [
    h("p.facts", {}, facts),
    ssh,
    h("h3", {}, "Radios"),
    table(["Radio", "Band", "Channel", "Width", "State"],
      r.radios.map((x) => [x.name, x.band, x.channel ?? "auto", x.htmode, x.disabled ? "off" : "on"]),
      "No radio configuration known yet."),
    h("h3", {}, "Networks"),
    table(["SSID", "Radio", "Security", "Mode", "802.11k/v"],
      r.interfaces.map((i) => [i.ssid, i.radio, i.encryption, i.mode, i.ieee80211k || i.bss_transition ? "yes" : "no"]),
      "No WiFi network known yet."),
    h("p.meta", {}, `Band steering: ${r.band_steering === undefined || r.band_steering === null ? "unknown" : r.band_steering ? "on" : "off"}`),
    h("h3", {}, "Mesh"),
    table(["Node", "Clients", "Radios"], r.mesh.map((n) => [n.node, n.clients, n.radios.join(", ")]), "No mesh nodes reported."),
    h("h3", {}, "Radio telemetry"),
    table(["Node", "Radio", "Band", "Channel", "Busy", "Noise", "Clients", "Score"],
      r.telemetry.map((t) => [t.node, t.radio, t.band, t.channel, `${Math.round(t.utilisation)} %`, `${t.noise} dBm`, t.clients, t.score]),
      "No telemetry received yet."),
  ];
}
