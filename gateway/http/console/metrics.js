// Prometheus text exposition (version 0.0.4) read in the browser, and the fleet's health
// summarised from it.

const LINE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\d+)?$/;
const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*,?\s*/g;

/** Samples of a /metrics text: [{name, labels: {k: v}, value: Number}]. */
export function parseMetrics(text) {
  const samples = [];
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (!line || line.startsWith("#")) continue;
    const m = LINE.exec(line);
    if (!m) continue;
    const labels = {};
    if (m[2]) {
      for (const l of m[2].matchAll(LABEL)) {
        labels[l[1]] = l[2].replace(/\\n/g, "\n").replace(/\\"/g, '"').replace(/\\\\/g, "\\");
      }
    }
    const value = m[3] === "+Inf" ? Infinity : m[3] === "-Inf" ? -Infinity : Number(m[3]);
    samples.push({ name: m[1], labels, value });
  }
  return samples;
}

/** The sum of a metric's samples, grouped by one label (or all together with none). */
export function total(samples, name, by) {
  const out = {};
  for (const s of samples) {
    if (s.name !== name) continue;
    const key = by ? s.labels[by] ?? "" : "";
    out[key] = (out[key] || 0) + s.value;
  }
  return by ? out : out[""] || 0;
}

/** What the operator's health panel shows, from the samples. */
export function health(samples) {
  const deps = total(samples, "kanjia_dependency_up", "dependency");
  const statuses = total(samples, "kanjia_http_requests_total", "status");
  const byClass = {};
  for (const [status, n] of Object.entries(statuses)) {
    const cls = `${String(status)[0]}xx`;
    byClass[cls] = (byClass[cls] || 0) + n;
  }
  const jobs = {};
  for (const s of samples) {
    if (s.name !== "kanjia_job_runs_total") continue;
    const j = (jobs[s.labels.job] ||= { runs: 0, failed: 0 });
    j.runs += s.value;
    if (s.labels.outcome && s.labels.outcome !== "ok") j.failed += s.value;
  }
  return {
    dependencies: deps,
    mqttConnected: total(samples, "kanjia_mqtt_connected") > 0,
    http: byClass,
    segmentsIndexed: total(samples, "kanjia_segments_indexed_total"),
    eventsIndexed: total(samples, "kanjia_events_indexed_total"),
    segmentsRejected: total(samples, "kanjia_segments_rejected_total", "reason"),
    uploadDecisions: total(samples, "kanjia_upload_decisions_total", "decision"),
    queues: total(samples, "kanjia_queue_depth", "queue"),
    presenceChanges: total(samples, "kanjia_presence_changes_total", "to"),
    messages: total(samples, "kanjia_mqtt_messages_total", "kind"),
    needRotation: total(samples, "kanjia_credentials_need_rotation"),
    jobs,
  };
}
