// The family cloud's saved clips (R14): listed with the quota (the membership's, R18),
// downloaded, deleted.

import { bytes, call, clock, get, h, showError, state, when } from "./api.js";

const $ = (id) => document.getElementById(id);

export async function loadSaved() {
  const box = $("saved-list");
  state(box, "loading", "Loading saved clips…");
  let body;
  try {
    body = await get("/app/v1/family-cloud");
  } catch (e) {
    showError(box, e);
    $("quota").replaceChildren();
    return;
  }
  quota(body);
  const items = body.items || [];
  if (!items.length) {
    state(box, "empty", "No saved clips yet: select a range and save it.");
    return;
  }
  const rows = items.map((it) =>
    h("tr", { dataset: { itemId: it.item_id } },
      h("td", {}, it.device_id || ""),
      h("td", {}, it.start ? `${when(it.start)} – ${clock(new Date(it.end))}` : it.segment_id || ""),
      h("td.num", {}, bytes(it.bytes)),
      h("td", {}, when(it.saved_at)),
      h("td.actions", {},
        h("button", { onclick: () => download(it) }, "Download"),
        h("button.danger", { onclick: (e) => remove(it, e.currentTarget) }, "Delete"))),
  );
  box.replaceChildren(
    h("table", {},
      h("thead", {}, h("tr", {}, ["Camera", "Range", "Size", "Saved", ""].map((t) => h("th", {}, t)))),
      h("tbody", {}, rows)),
  );
}

function quota(body) {
  const used = Number(body.used_bytes ?? 0);
  const total = Number(body.quota_bytes ?? 0);
  const left = Number(body.left_bytes ?? Math.max(0, total - used));
  const pct = total ? Math.min(100, (used / total) * 100) : 0;
  $("quota").replaceChildren(
    h("div.bar", { role: "meter", "aria-valuenow": used, "aria-valuemax": total },
      h("span", { style: `width:${pct.toFixed(1)}%` })),
    h("p.meta", {}, `${bytes(used)} used · ${bytes(left)} left of ${bytes(total)}`,
      body.membership_tier ? ` (${body.membership_tier} membership)` : " (base quota)"),
    body.status === "read_only"
      ? h("p.meta", {}, `Read-only until ${when(body.read_only_until)}: the membership ended with more saved than the quota; then the oldest clips are deleted until the rest fits.`)
      : null,
  );
}

async function download(item) {
  try {
    const body = await get(`/app/v1/family-cloud/${encodeURIComponent(item.item_id)}`);
    const url = body.url || body.download_url;
    const link = h("a", { href: url, download: "", target: "_blank", rel: "noopener" });
    document.body.append(link);
    link.click();
    link.remove();
  } catch (e) {
    showError($("saved-list"), e);
  }
}

async function remove(item, button) {
  if (button.dataset.armed !== "yes") {
    button.dataset.armed = "yes";
    button.textContent = "Really delete?";
    return;
  }
  try {
    await call("DELETE", `/app/v1/family-cloud/${encodeURIComponent(item.item_id)}`);
  } catch (e) {
    showError($("saved-list"), e);
    return;
  }
  await loadSaved();
}

