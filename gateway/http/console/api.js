// The console's access to the API: the token (kept in sessionStorage, never in the URL),
// requests with the bearer header, and the API's error shape turned into a message.

const KEY = "kanjia.console";

/** The token handed over in the URL (`#token=` or `?token=`), taken out of it at once. */
export function takeTokenFromUrl() {
  const url = new URL(location.href);
  const hash = new URLSearchParams(url.hash.slice(1));
  const token = hash.get("token") || url.searchParams.get("token");
  if (!token) return null;
  hash.delete("token");
  url.searchParams.delete("token");
  url.hash = hash.toString();
  history.replaceState(null, "", url.pathname + url.search + (url.hash || ""));
  return token;
}

export function saved() {
  try {
    return JSON.parse(sessionStorage.getItem(KEY) || "null");
  } catch {
    return null;
  }
}

export function remember(token, role) {
  sessionStorage.setItem(KEY, JSON.stringify({ token, role }));
}

export function forget() {
  sessionStorage.removeItem(KEY);
}

/** An answer other than success: the API's `{"error": {code, message, rule}}`. */
export class ApiFailure extends Error {
  constructor(status, code, message, rule) {
    super(message);
    this.status = status;
    this.code = code;
    this.rule = rule;
  }
  describe() {
    const rule = this.rule ? ` (${this.rule})` : "";
    return `${this.message}${rule} [${this.status} ${this.code}]`;
  }
}

async function failure(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    /* not JSON: described by its status */
  }
  const err = body && body.error;
  if (err) return new ApiFailure(response.status, err.code, err.message, err.rule);
  return new ApiFailure(response.status, "http_error", response.statusText || "request failed");
}

/** A call with the session's token; JSON in and out (`raw` gives the Response). */
export async function call(method, path, { body, token, raw = false } = {}) {
  const bearer = token || (saved() || {}).token;
  const headers = {};
  if (bearer) headers.Authorization = `Bearer ${bearer}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!response.ok) throw await failure(response);
  if (raw) return response;
  if (response.status === 204) return null;
  return response.json();
}

export const get = (path, options) => call("GET", path, options);

/** A resource the bearer token guards (a thumbnail, a clip) as an object URL. */
export async function blobUrl(path) {
  const response = await call("GET", path, { raw: true });
  return URL.createObjectURL(await response.blob());
}

/** Which token this is: an app user's, or the platform's (null: neither). */
export async function roleOf(token) {
  try {
    await get("/app/v1/devices", { token });
    return "family";
  } catch (e) {
    if (!(e instanceof ApiFailure) || e.status !== 401) throw e;
  }
  try {
    await get("/platform/v1/accounts?limit=1", { token });
    return "operator";
  } catch (e) {
    if (!(e instanceof ApiFailure) || e.status !== 401) throw e;
  }
  return null;
}

// --- small DOM and formatting helpers shared by both views ---------------------------------

/** `h("td.on", {title: "x"}, "text", child)`: an element with classes, attributes, children. */
export function h(tag, attrs, ...children) {
  const [name, ...classes] = tag.split(".");
  const el = document.createElement(name);
  if (classes.length) el.className = classes.join(" ");
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** Put a state in a container: loading, empty, or an error with the API's message. */
export function state(container, kind, text) {
  container.replaceChildren(h(`p.state.${kind}`, { role: kind === "error" ? "alert" : null }, text));
}

export function showError(container, e) {
  state(container, "error", e instanceof ApiFailure ? e.describe() : String(e));
}

const pad = (n) => String(n).padStart(2, "0");
export const clock = (d) => `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
export const day = (d) => `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
export const when = (iso) => (iso ? `${day(new Date(iso))} ${clock(new Date(iso))}` : "never");

export function bytes(n) {
  if (n === undefined || n === null) return "";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  let v = Number(n);
  while (v >= 1000 && i < units.length - 1) {
    v /= 1000;
    i += 1;
  }
  return `${v.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}

export function seconds(s) {
  s = Math.round(s);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}
