// The operator's view (platform token): accounts paged and filtered; per account its
// devices with presence and convergence, broadband state, orders, subscriptions,
// home-network packages and charges; the fleet's health from /metrics.

import { ApiFailure, bytes, get, h, showError, state, when } from "./api.js";
import { health, parseMetrics } from "./metrics.js";

const $ = (id) => document.getElementById(id);
const PAGE = 20;
let healthTimer = null;
let serviceMonth = null; // YYYY-MM of the service clock
const pages = { accounts: { items: [] }, orders: { items: [] } };

export async function showOperator() {
  $("operator").hidden = false;
  $("account-filter").onsubmit = (e) => {
    e.preventDefault();
    loadAccounts();
  };
  $("accounts-more").onclick = () => loadAccounts({ more: true });
  $("orders-more").onclick = () => loadOrders({ more: true });
  $("orders-action").onchange = () => loadOrders();
  try {
    const c = await get("/ops/v1/clock");
    serviceMonth = c.now.slice(0, 7);
  } catch {
    serviceMonth = new Date().toISOString().slice(0, 7);
  }
  await Promise.all([loadHealth(), loadAccounts(), loadOrders()]);
  clearInterval(healthTimer);
  healthTimer = setInterval(loadHealth, 15000);
}

export function hideOperator() {
  clearInterval(healthTimer);
  $("operator").hidden = true;
  $("account-detail").hidden = true;
}

function table(headings, rows, empty) {
  if (!rows.length) return h("p.state.empty", {}, empty);
  return h("table", {},
    h("thead", {}, h("tr", {}, headings.map((t) => h("th", {}, t)))),
    h("tbody", {}, rows));
}

const badge = (ok, yes, no, warn = false) => h(`span.badge.${ok ? "on" : warn ? "warn" : "off"}`, {}, ok ? yes : no);

// --- fleet health ----------------------------------------------------------------------------

async function loadHealth() {
  const box = $("health-body");
  let text;
  try {
    const response = await fetch("/metrics");
    if (!response.ok) throw new ApiFailure(response.status, "http_error", "the metrics could not be read");
    text = await response.text();
  } catch (e) {
    showError(box, e);
    return;
  }
  const s = health(parseMetrics(text));
  const card = (title, ...body) => h("div.card", {}, h("h3", {}, title), ...body);
  const kv = (obj, fmt = (v) => v) =>
    Object.keys(obj).length
      ? h("dl", {}, Object.entries(obj).sort().flatMap(([k, v]) => [h("dt", {}, k || "all"), h("dd", {}, fmt(v))]))
      : h("p.meta", {}, "none yet");
  const deps = Object.entries(s.dependencies).map(([d, up]) => badge(up > 0, `${d} up`, `${d} down`));
  const failedJobs = Object.entries(s.jobs).filter(([, j]) => j.failed > 0);
  box.replaceChildren(
    card("Dependencies", h("p.facts", {}, deps, badge(s.mqttConnected, "MQTT session up", "MQTT session down"))),
    card("Requests", kv(s.http, Math.round)),
    card("Recording",
      h("dl", {}, h("dt", {}, "segments indexed"), h("dd", {}, s.segmentsIndexed),
        h("dt", {}, "events indexed"), h("dd", {}, s.eventsIndexed)),
      h("p.meta", {}, "uploads decided:"), kv(s.uploadDecisions),
      h("p.meta", {}, "segments rejected:"), kv(s.segmentsRejected)),
    card("Devices",
      h("p.meta", {}, "presence changes:"), kv(s.presenceChanges),
      h("p.meta", {}, "messages:"), kv(s.messages),
      s.needRotation ? h("p.state.error", {}, `${s.needRotation} device credential(s) need issuing again`) : null),
    card("Queues and jobs", kv(s.queues),
      failedJobs.length
        ? h("p.state.error", {}, `failed: ${failedJobs.map(([n, j]) => `${n} ×${j.failed}`).join(", ")}`)
        : h("p.state.ok", {}, `${Object.keys(s.jobs).length} job(s), none failed`)),
  );
}

// --- accounts --------------------------------------------------------------------------------

async function loadAccounts({ more = false } = {}) {
  const box = $("accounts-body");
  const q = new URLSearchParams({ limit: String(PAGE) });
  const text = $("account-q").value.trim();
  if (text) q.set("q", text);
  if ($("account-state").value) q.set("broadband_state", $("account-state").value);
  if (more && pages.accounts.cursor) q.set("cursor", pages.accounts.cursor);
  if (!more) state(box, "loading", "Loading accounts…");
  let body;
  try {
    body = await get(`/platform/v1/accounts?${q}`);
  } catch (e) {
    showError(box, e);
    return;
  }
  pages.accounts = { items: more ? [...pages.accounts.items, ...body.accounts] : body.accounts, cursor: body.next_cursor };
  $("accounts-more").hidden = !body.next_cursor;
  const rows = pages.accounts.items.map((a) =>
    h("tr", { dataset: { accountId: a.account_id }, tabindex: 0, class: "clickable", onclick: () => openAccount(a),
      onkeydown: (e) => e.key === "Enter" && openAccount(a) },
      h("td", {}, h("strong", {}, a.account_id), a.name ? h("div.meta", {}, a.name) : null),
      h("td", {}, a.owner_id),
      h("td", {}, a.star_level),
      h("td", {}, badge(a.broadband_state === "active", "active", a.broadband_state, a.broadband_state === "stopped")),
      h("td.num", {}, `${a.online} / ${a.devices}`),
    ),
  );
  box.replaceChildren(table(["Account", "Owner", "Star", "Broadband", "Online / devices"], rows,
    text || $("account-state").value ? "No account matches." : "No accounts yet."));
}

async function openAccount(a) {
  const panel = $("account-detail");
  panel.hidden = false;
  panel.dataset.accountId = a.account_id;
  $("account-title").textContent = `Account ${a.account_id}${a.name ? ` · ${a.name}` : ""}`;
  for (const tr of document.querySelectorAll("#accounts-body tr[data-account-id]")) {
    tr.classList.toggle("selected", tr.dataset.accountId === a.account_id);
  }
  const id = encodeURIComponent(a.account_id);
  $("charges-month").value = $("charges-month").value || serviceMonth;
  $("charges-month").onchange = () => loadCharges(id);
  await Promise.all([loadBroadband(id), loadDevices(id), loadSubscriptions(id), loadPackages(id), loadMembership(id), loadCharges(id), loadOrders()]);
  panel.scrollIntoView({ behavior: "smooth", block: "start" });
}

async function section(boxId, path, render) {
  const box = $(boxId);
  state(box, "loading", "Loading…");
  try {
    const body = await get(path);
    box.replaceChildren(...[render(body)].flat().filter((x) => x !== null && x !== undefined));
  } catch (e) {
    showError(box, e);
  }
}

function loadBroadband(id) {
  return section("broadband-body", `/platform/v1/broadband/${id}`, (b) => [
    h("p.facts", {},
      badge(b.state === "active", "broadband active", `broadband ${b.state}`, b.state === "stopped"),
      b.stops.length ? h("span.meta", {}, `stops in force: ${b.stops.join(", ")}`) : null,
      b.emergency_until ? h("span.badge.warn", {}, `emergency resume until ${when(b.emergency_until)}`) : null,
      h("span.meta", {}, `family cloud ${b.family_cloud}`)),
    b.order_id ? h("p.meta", {}, `last order ${b.order_id}: ${b.applied ? "applied" : "not applied"}${b.reason ? ` (${b.reason})` : ""}`) : null,
  ]);
}

function loadDevices(id) {
  return section("devices-body", `/platform/v1/accounts/${id}/devices`, (b) =>
    table(["Device", "Kind", "Presence", "Last seen", "Desired / reported", "Credentials"],
      b.devices.map((d) => h("tr", { dataset: { deviceId: d.device_id } },
        h("td", {}, h("strong", {}, d.device_id), d.name ? h("div.meta", {}, d.name) : null),
        h("td", {}, d.kind),
        h("td", {}, badge(d.online, "online", "offline")),
        h("td", {}, when(d.last_seen)),
        h("td", {}, `v${d.desired_version} / v${d.reported_version} `, badge(d.converged, "converged", "pending", true)),
        h("td", {}, d.credentials_need_rotation ? h("span.badge.off", {}, "issue again")
          : d.has_credentials ? `issued ${when(d.credentials_issued_at)}` : "none"))),
      "No devices bound."));
}

function loadSubscriptions(id) {
  return section("subscriptions-body", `/platform/v1/accounts/${id}/subscriptions`, (b) =>
    table(["Subscription", "Device", "Plan", "Fee / month", "Channel", "Status", "Since", "Ended"],
      b.subscriptions.map((s) => h("tr", {},
        h("td", {}, s.subscription_id), h("td", {}, s.device_id), h("td", {}, s.plan),
        h("td.num", {}, `¥${s.monthly_fee}`), h("td", {}, s.channel),
        h("td", {}, badge(s.status === "active", s.status, s.status)),
        h("td", {}, when(s.started_at)), h("td", {}, s.ended_at ? when(s.ended_at) : ""))),
      "No cloud-replay subscriptions."));
}

function loadPackages(id) {
  return section("packages-body", `/platform/v1/accounts/${id}/home-network`, (b) =>
    table(["Package", "Product", "Routers (tunings used)", "Fee", "Channel", "Status", "Valid until", "Visit"],
      b.packages.map((p) => h("tr", { dataset: { packageId: p.id } },
        h("td", {}, p.id), h("td", {}, p.product, h("div.meta", {}, p.family)),
        h("td", {}, p.devices.map((d) => `${d.device_id} (${d.used}/${d.tunings})`).join(", ")),
        h("td.num", {}, `¥${p.fee}`), h("td", {}, p.channel),
        h("td", {}, badge(p.status === "active", p.status, p.status)),
        h("td", {}, p.valid_until), h("td", {}, p.visited_at ? when(p.visited_at) : "—"))),
      "No home-network packages."));
}

// R18: what the household holds of the family cloud: its membership (one at a time).
function loadMembership(id) {
  return section("membership-body", `/platform/v1/accounts/${id}/family-cloud/memberships`, (b) =>
    table(["Membership", "Tier", "Quota", "Fee / month", "Channel", "Status", "Since", "Valid until", "Overflow"],
      b.memberships.map((m) => h("tr", {},
        h("td", {}, m.membership_id), h("td", {}, m.tier), h("td.num", {}, bytes(m.quota_bytes)),
        h("td.num", {}, `¥${m.monthly_fee}`), h("td", {}, m.channel),
        h("td", {}, badge(m.status === "active", m.status, m.status, m.status === "unsubscribed")),
        h("td", {}, when(m.started_at)), h("td", {}, m.valid_until),
        h("td", {}, m.overflow === "read_only" ? `read-only until ${when(m.read_only_until)}` : m.overflow || ""))),
      "No family-cloud membership: the base quota."));
}

function loadCharges(id) {
  const month = $("charges-month").value || serviceMonth;
  return section("charges-body", `/platform/v1/accounts/${id}/charges?month=${month}`, (b) => [
    table(["Subscription / package / membership", "Device / day / tier", "Plan / product", "Days", "Amount"], [
      ...b.items.map((i) => i.kind === "family_cloud_membership"
        ? h("tr", {}, h("td", {}, i.membership_id), h("td", {}, i.tier), h("td", {}, "family-cloud membership"),
          h("td.num", {}, i.days), h("td.num", {}, `¥${i.amount}`))
        : h("tr", {}, h("td", {}, i.subscription_id), h("td", {}, i.device_id),
          h("td", {}, i.plan), h("td.num", {}, i.days), h("td.num", {}, `¥${i.amount}`))),
      ...(b.package_lines || []).map((l) => h("tr", { dataset: { kind: l.kind } }, h("td", {}, l.package_id),
        h("td", {}, l.day), h("td", {}, l.product, h("div.meta", {}, l.kind === "home_network" ? "one-time fee" : "refund")),
        h("td.num", {}, ""), h("td.num", {}, `¥${l.amount}`))),
    ], `No charges in ${b.month}.`),
    h("p.total", {}, `Total ${b.month}: ¥${b.total} (${b.currency})`),
  ]);
}

// --- orders ----------------------------------------------------------------------------------

async function loadOrders({ more = false } = {}) {
  const box = $("orders-body");
  const account = $("account-detail").hidden ? null : $("account-detail").dataset.accountId;
  $("orders-scope").textContent = account ? `of account ${account}` : "of every account";
  const q = new URLSearchParams({ limit: String(PAGE) });
  if (account) q.set("account_id", account);
  if ($("orders-action").value) q.set("action", $("orders-action").value);
  if (more && pages.orders.cursor) q.set("cursor", pages.orders.cursor);
  if (!more) state(box, "loading", "Loading orders…");
  let body;
  try {
    body = await get(`/platform/v1/orders?${q}`);
  } catch (e) {
    showError(box, e);
    return;
  }
  pages.orders = { items: more ? [...pages.orders.items, ...body.orders] : body.orders, cursor: body.next_cursor };
  $("orders-more").hidden = !body.next_cursor;
  const rows = pages.orders.items.map((o) => {
    const ok = o.status < 300;
    const err = o.result && o.result.error;
    return h("tr", { dataset: { orderId: o.order_id } },
      h("td", {}, when(o.answered_at)),
      h("td", {}, h("strong", {}, o.order_id)),
      h("td", {}, o.action),
      h("td", {}, o.account_id || "", o.target && o.target !== o.account_id ? h("div.meta", {}, o.target) : null),
      h("td", {}, badge(ok, String(o.status), String(o.status)), err ? h("div.meta", {}, `${err.code}: ${err.message}`) : null),
      h("td", {}, o.report ? (o.report.delivered ? `reported ${when(o.report.delivered_at)}` : `owed (${o.report.attempts} attempt(s))${o.report.last_error ? `: ${o.report.last_error}` : ""}`) : "—"),
      h("td", {}, h("details", {}, h("summary", {}, "answer"), h("pre", {}, JSON.stringify(o.result, null, 2)))),
    );
  });
  box.replaceChildren(table(["Answered", "Order", "Action", "Account / target", "Result", "Report (报竣)", ""], rows, "No orders."));
}

