// The dashboard page: three role views and an audit view over the read API's JSON.
// Plain JavaScript; charts are drawn with Plotly (served from the installed package).
// Signing in: the development sign-in (demo users) or the identity provider's
// authorization-code flow with PKCE; the access token is kept in sessionStorage and sent
// as `Authorization: Bearer` with every request to the API. Each role sees the views
// the permission matrix gives it (/static/access.json).
"use strict";

const REFRESH_MS = 5000;
const COLORS = { accent: "#2f6fde", ok: "#1f9d66", warn: "#e0a100", bad: "#d64545", grey: "#9aa3b5",
  series: ["#2f6fde", "#1f9d66", "#e0a100", "#8e5bd6", "#d64545", "#13a3b5", "#7a8599", "#c2549d"] };
const EXPORTS = { supervisor: "sla", product: "trends", executive: "complaints", audit: "events" };

// `generation` changes at each sign-in and sign-out: answers to an earlier one are dropped.
// `acknowledged`: alerts acknowledged from this page, until the read model shows it.
const state = { view: null, complaint: null, selectedVersion: null, inFlight: null, again: false, refreshes: 0,
  generation: 0, acknowledged: new Set() };

// ------------------------------------------------------------------ helpers
const $ = (sel, root = document) => root.querySelector(sel);
const $$ = (sel, root = document) => [...root.querySelectorAll(sel)];

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

const fmt = {
  int: (n) => (n === null || n === undefined ? "–" : Math.round(n).toLocaleString("en-US")),
  pct: (x) => (x === null || x === undefined ? "–" : `${(100 * x).toFixed(1)}%`),
  num: (x, d = 1) => (x === null || x === undefined ? "–" : Number(x).toFixed(d)),
  minutes(m) {
    if (m === null || m === undefined) return "–";
    const a = Math.abs(m);
    if (a < 60) return `${Math.round(a)} min`;
    if (a < 48 * 60) return `${(a / 60).toFixed(1)} h`;
    return `${(a / 1440).toFixed(1)} d`;
  },
  time(iso) {
    if (!iso) return "–";
    return new Date(iso).toLocaleString("en-GB", { day: "2-digit", month: "short", hour: "2-digit", minute: "2-digit" });
  },
  label: (s) => (s === null || s === undefined ? "(none)" : String(s).replaceAll("_", " ")),
};

function filterParams() {
  const params = new URLSearchParams();
  for (const field of $$("#filters select, #filters input")) {
    if (!field.value) continue;
    params.set(field.name, field.name === "as_of" ? new Date(field.value).toISOString() : field.value);
  }
  return params;
}

// ------------------------------------------------------------------ requests with the token
class SignedOut extends Error {
  constructor() { super("signed out"); this.name = "SignedOut"; }
}

class HttpError extends Error {
  constructor(status, detail) { super(`${status} ${detail}`); this.name = "HttpError"; this.status = status; this.detail = detail; }
}

// A request to the API with the session's bearer token. A 401 ends the session (back to
// the sign-in view); any other error status is an HttpError (403: the role may not).
async function api(path, params, init = {}) {
  const session = auth.session;
  if (!session) throw new SignedOut();
  const generation = state.generation;
  const url = params && [...params].length ? `${path}?${params}` : path;
  const response = await fetch(url, { ...init, headers: { ...(init.headers || {}), authorization: `Bearer ${session.token}` } });
  if (generation !== state.generation) throw new SignedOut(); // signed out, or in as someone else, meanwhile
  if (response.status === 401) {
    signOut(["Your session has ended or its token is not valid: sign in again", "登录已失效，请重新登录"]);
    throw new SignedOut();
  }
  if (!response.ok) {
    let detail = response.statusText;
    try {
      const body = (await response.json()).detail;
      detail = typeof body === "string" ? body : JSON.stringify(body);
    } catch (_) { /* not JSON */ }
    throw new HttpError(response.status, detail);
  }
  return response;
}

async function getJSON(path, params) {
  const generation = state.generation;
  const response = await api(path, params, { headers: { accept: "application/json" } });
  const body = await response.json();
  if (generation !== state.generation) throw new SignedOut();
  return body;
}

function plot(id, data, layout = {}) {
  const node = document.getElementById(id);
  const base = {
    margin: { l: 44, r: 12, t: 8, b: 36 }, paper_bgcolor: "rgba(0,0,0,0)", plot_bgcolor: "rgba(0,0,0,0)",
    font: { family: "system-ui, 'DejaVu Sans', sans-serif", size: 12, color: "#39425a" },
    legend: { orientation: "h", y: 1.12, x: 0 }, hoverlabel: { font: { size: 12 } },
    xaxis: { gridcolor: "#eef1f6", automargin: true }, yaxis: { gridcolor: "#eef1f6", automargin: true, rangemode: "tozero" },
  };
  const merged = { ...base, ...layout, xaxis: { ...base.xaxis, ...(layout.xaxis || {}) }, yaxis: { ...base.yaxis, ...(layout.yaxis || {}) } };
  const empty = data.every((trace) => !(trace.x || trace.values || []).length);
  if (empty) {
    Plotly.purge(node);
    node.replaceChildren(el("div", { class: "empty" }, "No complaints match these filters"));
    return;
  }
  if (node.querySelector(".empty")) node.replaceChildren();
  Plotly.react(node, data, merged, { displayModeBar: false, responsive: true });
}

function kpis(id, items) {
  $(`#${id}`).replaceChildren(...items.map(([key, label, value, hint, tone]) =>
    el("div", { class: "kpi", dataset: { kpi: key } },
      el("div", { class: "label" }, label),
      el("div", { class: `value ${tone || ""}` }, value),
      el("div", { class: "hint" }, hint || "\u00a0"))));
}

function table(id, columns, rows, onClick) {
  const target = document.getElementById(id);
  if (!rows.length) { target.replaceChildren(el("div", { class: "empty" }, "Nothing here")); return; }
  const head = el("tr", {}, columns.map(([label, , cls]) => el("th", { class: cls || "" }, label)));
  const body = rows.map((row) => el("tr", onClick ? { class: "click", onclick: () => onClick(row) } : {},
    columns.map(([, cell, cls]) => el("td", { class: cls || "" }, cell(row)))));
  target.replaceChildren(el("table", {}, el("thead", {}, head), el("tbody", {}, body)));
}

const chip = (text, cls = text) => el("span", { class: `chip ${cls || ""}` }, fmt.label(text));
const tone = (rate) => (rate === null ? "" : rate >= 0.9 ? "ok" : rate >= 0.75 ? "warn" : "bad");

// ------------------------------------------------------------------ supervisor
async function supervisor() {
  const d = await getJSON("/dashboards/supervisor", filterParams());
  const c = d.counts;
  const fr = d.sla.first_response, res = d.sla.resolution, next = d.sla.next_response;
  kpis("sup-kpis", [
    ["new_today", "New today", fmt.int(c.new_today), `${fmt.int(c.new_in_period)} in period`],
    ["resolved_today", "Resolved today", fmt.int(c.resolved_today), `${fmt.int(c.resolved_in_period)} in period`],
    ["pending", "Pending", fmt.int(c.pending), `${fmt.int(d.breached.length)}${d.breached.length >= 20 ? "+" : ""} breached`],
    ["first_response", "Avg first response", fmt.minutes(d.avg_first_response_business_minutes), "business time"],
    ["sla_first_response", "First response SLA", fmt.pct(fr.attainment), `${fmt.int(fr.met)} of ${fmt.int(fr.counted)} met`, tone(fr.attainment)],
    ["sla_resolution", "Resolution SLA", fmt.pct(res.attainment), `${fmt.int(res.met)} of ${fmt.int(res.counted)} met`, tone(res.attainment)],
    ["sla_next_response", "Next response SLA", fmt.pct(next.attainment), `${fmt.int(next.met)} of ${fmt.int(next.counted)} replies on time`, tone(next.attainment)],
  ]);
  plot("sup-daily", [
    { type: "bar", name: "new", x: d.daily.map((p) => p.bucket), y: d.daily.map((p) => p.new), marker: { color: COLORS.accent } },
    { type: "scatter", mode: "lines+markers", name: "resolved", x: d.daily.map((p) => p.bucket), y: d.daily.map((p) => p.resolved),
      line: { color: COLORS.ok, width: 2 }, marker: { size: 5 } },
  ], { xaxis: { type: "date" } });
  const statuses = [...d.by_status].sort((a, b) => a.count - b.count);
  plot("sup-status", [{ type: "bar", orientation: "h", x: statuses.map((s) => s.count), y: statuses.map((s) => fmt.label(s.key)),
    marker: { color: COLORS.accent }, text: statuses.map((s) => s.count), textposition: "auto" }],
  { margin: { l: 130, r: 12, t: 4, b: 28 } });
  const load = d.agent_load.filter((a) => a.open > 0).slice(0, 14).reverse();
  const who = load.map((a) => `${a.agent || "(unassigned)"}`);
  plot("sup-load", [
    { type: "bar", orientation: "h", name: "working", y: who, x: load.map((a) => a.open - a.waiting - a.overdue), marker: { color: COLORS.accent } },
    { type: "bar", orientation: "h", name: "overdue", y: who, x: load.map((a) => a.overdue), marker: { color: COLORS.bad } },
    { type: "bar", orientation: "h", name: "waiting on customer", y: who, x: load.map((a) => a.waiting), marker: { color: COLORS.grey } },
  ], { barmode: "stack", margin: { l: 150, r: 12, t: 8, b: 28 }, xaxis: { tickformat: ",d" } });
  const gauges = [["First response", fr.attainment], ["Next response", next.attainment], ["Resolution", res.attainment]];
  plot("sup-sla", [{ type: "bar", x: gauges.map((g) => g[0]), y: gauges.map((g) => (g[1] === null ? 0 : 100 * g[1])),
    text: gauges.map((g) => fmt.pct(g[1])), textposition: "auto",
    marker: { color: gauges.map((g) => ({ ok: COLORS.ok, warn: COLORS.warn, bad: COLORS.bad, "": COLORS.grey })[tone(g[1])]) } }],
  { yaxis: { range: [0, 100], ticksuffix: "%" } });
  const dueColumns = (late) => [
    ["Complaint", (r) => r.title || r.complaint_id.slice(0, 8)],
    ["Clock", (r) => fmt.label(r.metric)],
    ["Agent", (r) => r.agent || r.team || "–"],
    ["Priority", (r) => chip(r.priority || "–", r.priority)],
    [late ? "Overdue by" : "Due in", (r) => el("span", { class: late ? "late" : "soon" }, fmt.minutes(r.overdue_minutes)), "num"],
  ];
  // A row opens the complaint's audit view, for the roles that may see it.
  const open = mayView("audit") ? (r) => openComplaint(r.complaint_id) : null;
  table("sup-breached", dueColumns(true), d.breached, open);
  table("sup-risk", dueColumns(false), d.at_risk, open);
  alertsPanel("sup-alerts", d.open_alerts || []);
}

// ------------------------------------------------------------------ product and quality
async function product() {
  const params = filterParams();
  const release = $("#release");
  if (!release.value) {
    const day = new Date(Date.now() - 14 * 86400e3);
    release.value = day.toISOString().slice(0, 10);
  }
  params.set("release", release.value);
  const d = await getJSON("/dashboards/product", params);
  alertsPanel("prod-alerts", d.open_alerts || []);
  const top = d.by_product[0];
  const rising = d.week_over_week.filter((g) => g.growth !== null && g.growth > 0.2);
  kpis("prod-kpis", [
    ["total", "Complaints", fmt.int(d.total), "registered in period"],
    ["products", "Product lines", fmt.int(d.by_product.length), "with complaints"],
    ["top_product", "Most complained", top ? fmt.label(top.key) : "–", top ? `${fmt.pct(top.share)} of all` : "", "text"],
    ["top_category", "Top category", d.top_categories[0] ? fmt.label(d.top_categories[0].key) : "–",
      d.top_categories[0] ? `${fmt.pct(d.top_categories[0].share)} of all` : "", "text"],
    ["rising", "Rising > 20% WoW", fmt.int(rising.length), rising.map((g) => g.key).join(", ") || "none", rising.length ? "bad" : "ok"],
    ["defects_after", "Defects/day after release", fmt.num(d.defect_trend.daily_after),
      `before: ${fmt.num(d.defect_trend.daily_before)}`,
      d.defect_trend.daily_after > (d.defect_trend.daily_before || 0) * 1.2 ? "bad" : ""],
  ]);
  const ranked = [...d.by_product].reverse();
  plot("prod-products", [{ type: "bar", orientation: "h", y: ranked.map((p) => fmt.label(p.key)), x: ranked.map((p) => p.count),
    text: ranked.map((p) => `${p.count}  (${fmt.pct(p.share)})`), textposition: "auto", marker: { color: COLORS.accent } }],
  { margin: { l: 120, r: 12, t: 4, b: 28 } });
  plot("prod-categories", [{ type: "pie", hole: 0.55, labels: d.top_categories.map((c) => fmt.label(c.key)),
    values: d.top_categories.map((c) => c.count), sort: false, textinfo: "percent", marker: { colors: COLORS.series } }],
  { margin: { l: 8, r: 8, t: 8, b: 8 }, legend: { orientation: "v", x: 1, y: 0.5 } });
  const points = d.defect_trend.points;
  plot("prod-defects", [{ type: "scatter", mode: "lines+markers", name: "product defects", x: points.map((p) => p.bucket),
    y: points.map((p) => p.count), line: { color: COLORS.bad, width: 2 }, fill: "tozeroy", fillcolor: "rgba(214,69,69,.08)" }],
  { xaxis: { type: "date" }, shapes: d.defect_trend.release ? [{ type: "line", x0: d.defect_trend.release, x1: d.defect_trend.release,
    yref: "paper", y0: 0, y1: 1, line: { color: COLORS.grey, dash: "dot", width: 2 } }] : [],
  annotations: d.defect_trend.release ? [{ x: d.defect_trend.release, yref: "paper", y: 1, text: "release", showarrow: false,
    xanchor: "left", font: { size: 11, color: COLORS.grey } }] : [] });
  const wow = d.week_over_week.filter((g) => g.growth !== null);
  plot("prod-wow", [{ type: "bar", x: wow.map((g) => fmt.label(g.key)), y: wow.map((g) => 100 * g.growth),
    text: wow.map((g) => `${g.last_week}→${g.this_week}`), textposition: "outside", textangle: 0, cliponaxis: false,
    marker: { color: wow.map((g) => (g.growth > 0.2 ? COLORS.bad : g.growth > 0 ? COLORS.warn : COLORS.ok)) } }],
  { yaxis: { ticksuffix: "%", rangemode: "normal", zeroline: true } });
}

// ------------------------------------------------------------------ executive
async function executive() {
  const params = filterParams();
  const [d, byPriority, byChannel] = await Promise.all([
    getJSON("/dashboards/executive", params),
    getJSON("/trends", new URLSearchParams([...params, ["dimension", "priority"], ["granularity", "week"], ["limit", "1000"]])),
    getJSON("/trends", new URLSearchParams([...params, ["dimension", "channel"], ["granularity", "month"], ["limit", "1000"]])),
  ]);
  alertsPanel("exec-alerts", d.open_alerts || []);
  const last = d.satisfaction[d.satisfaction.length - 1];
  const highTotal = d.high_priority_monthly.reduce((s, p) => s + p.count, 0);
  kpis("exec-kpis", [
    ["fcr", "First-contact resolution", fmt.pct(d.first_contact_resolution_rate), `${fmt.int(d.total)} complaints in period`],
    ["csat", "CSAT", last ? fmt.num(last.csat, 2) : "–", last ? `latest week, ${last.responses} ratings` : "no ratings"],
    ["nps", "NPS", last ? fmt.num(last.nps, 0) : "–", "promoters − detractors", last && last.nps < 0 ? "bad" : ""],
    ["handling", "Avg handling time", d.avg_handling_hours === null ? "–" : fmt.minutes(60 * d.avg_handling_hours), "registration to close"],
    ["reopen", "Reopen rate", fmt.pct(d.reopen_rate), "of resolved complaints", d.reopen_rate > 0.1 ? "bad" : ""],
    ["repeat", "Repeat rate", fmt.pct(d.repeat_rate), `${fmt.int(highTotal)} high-priority`],
  ]);
  const s = d.satisfaction;
  plot("exec-sat", [
    { type: "scatter", mode: "lines+markers", name: "CSAT", x: s.map((p) => p.bucket), y: s.map((p) => p.csat), line: { color: COLORS.accent, width: 3 } },
    { type: "scatter", mode: "lines+markers", name: "NPS", x: s.map((p) => p.bucket), y: s.map((p) => p.nps), yaxis: "y2", line: { color: COLORS.ok, width: 2, dash: "dot" } },
  ], { xaxis: { type: "date" }, yaxis: { range: [1, 5], title: { text: "CSAT" }, rangemode: "normal" },
    yaxis2: { overlaying: "y", side: "right", range: [-100, 100], title: { text: "NPS" }, showgrid: false },
    margin: { l: 50, r: 50, t: 8, b: 36 } });
  plot("exec-high", [{ type: "bar", x: d.high_priority_monthly.map((p) => p.bucket.slice(0, 7)), y: d.high_priority_monthly.map((p) => p.count),
    text: d.high_priority_monthly.map((p) => p.count), textposition: "auto", marker: { color: COLORS.bad } }],
  { xaxis: { type: "category" } });
  const order = ["urgent", "high", "medium", "low", null];
  const prioColors = { urgent: COLORS.bad, high: COLORS.warn, medium: COLORS.accent, low: COLORS.grey };
  plot("exec-priority", order.map((key) => {
    const rows = byPriority.items.filter((r) => r.key === key);
    return { type: "bar", name: key ? fmt.label(key) : "not triaged", x: rows.map((r) => r.bucket), y: rows.map((r) => r.count),
      marker: { color: prioColors[key] || "#c9cfdb" } };
  }).filter((t) => t.x.length), { barmode: "stack", xaxis: { type: "date" } });
  const channels = {};
  for (const r of byChannel.items) channels[r.key] = (channels[r.key] || 0) + r.count;
  const ranked = Object.entries(channels).sort((a, b) => a[1] - b[1]);
  plot("exec-channel", [{ type: "bar", orientation: "h", y: ranked.map((c) => fmt.label(c[0])), x: ranked.map((c) => c[1]),
    text: ranked.map((c) => c[1]), textposition: "auto", marker: { color: COLORS.accent } }],
  { margin: { l: 100, r: 12, t: 4, b: 28 } });
}

// ------------------------------------------------------------------ alerts (on every dashboard)
// The active alerts of the view's audience, newest first (at most 20: the API's limit).
// Titles in both languages, as the page's other bilingual texts; "Acknowledge" posts to
// the command API (same origin, with the token) for the roles that may.
const DASHBOARD_ALERTS = 20;

function alertSubject(a) {
  const text = a.subject_type === "complaint" ? a.subject.slice(0, 8) : a.subject;
  const label = `${fmt.label(a.subject_type)} ${text}`;
  if (!a.complaint_id || !mayView("audit")) return label;
  return el("a", { href: `#audit/${a.complaint_id}`, onclick: (e) => { e.preventDefault(); openComplaint(a.complaint_id); } }, label);
}

function alertAction(a) {
  if (a.status === "open" && state.acknowledged.has(a.alert_id)) return el("span", { class: "acked" }, bi("Acknowledged", "已确认"));
  if (a.status !== "open" || !mayDo("acknowledge") || $("#filters input[name=as_of]").value) {
    return a.acknowledged_by ? el("span", { class: "muted" }, a.acknowledged_by) : "";
  }
  const button = el("button", { type: "button", class: "ack", dataset: { alert: a.alert_id } }, bi("Acknowledge", "确认"));
  button.addEventListener("click", () => acknowledge(a.alert_id, button));
  return button;
}

function alertsPanel(id, alerts) {
  const target = document.getElementById(id);
  const count = $(".alert-count", target.closest(".card"));
  count.textContent = alerts.length ? `${alerts.length}${alerts.length >= DASHBOARD_ALERTS ? "+" : ""}` : "";
  if (!alerts.length) {
    target.replaceChildren(el("div", { class: "empty" }, bi("No open alerts", "暂无待处理告警")));
    return;
  }
  const head = el("tr", {}, ["Severity", "Alert", "Subject", "Raised", "Status", ""].map((label) => el("th", {}, label)));
  const rows = alerts.map((a) => el("tr", { class: `alert sev-${a.severity}`, dataset: { alert: a.alert_id } },
    el("td", {}, chip(a.severity, `sev-${a.severity}`)),
    el("td", { class: "alert-title", title: a.rule }, bi(a.title_en || a.rule, a.title_zh || a.rule)),
    el("td", {}, alertSubject(a)),
    el("td", {}, fmt.time(a.raised_at)),
    el("td", {}, chip(a.status, `alert-${a.status}`)),
    el("td", { class: "num" }, alertAction(a))));
  target.replaceChildren(el("table", {}, el("thead", {}, head), el("tbody", {}, rows)));
}

async function acknowledge(id, button) {
  const status = $("#status");
  button.disabled = true;
  try {
    await api(`/alerts/${encodeURIComponent(id)}/acknowledge`, null, {
      method: "POST", headers: { "content-type": "application/json", accept: "application/json" }, body: "{}" });
    state.acknowledged.add(id);
    button.replaceWith(el("span", { class: "acked" }, bi("Acknowledged", "已确认")));
    refresh();
  } catch (error) {
    if (error instanceof SignedOut) return;
    button.disabled = false;
    if (error instanceof HttpError && error.status === 409) { // acknowledged or resolved meanwhile
      state.acknowledged.add(id);
      refresh();
      return;
    }
    status.textContent = error instanceof HttpError && error.status === 403
      ? `not allowed / 无权确认: ${error.detail}` : `acknowledge failed / 确认失败: ${error.message}`;
    status.classList.add("error");
  }
}

// ------------------------------------------------------------------ audit
async function search(event) {
  if (event) event.preventDefault();
  const params = new URLSearchParams();
  for (const input of $$("#search input")) if (input.value.trim()) params.set(input.name, input.value.trim());
  params.set("limit", "100");
  const d = await getJSON("/audit/search", params);
  $("#search-note").textContent = `${d.items.length}${d.items.length === 100 ? "+" : ""} complaints`;
  table("results", [
    ["Registered", (r) => fmt.time(r.registered_at)],
    ["Title", (r) => r.title],
    ["Customer", (r) => r.customer_id],
    ["Product", (r) => r.product || "–"],
  ], d.items, (r) => openComplaint(r.complaint_id));
}

function openComplaint(id) {
  if (!mayView("audit")) return;
  state.complaint = id;
  state.selectedVersion = null;
  if (location.hash !== `#audit/${id}`) history.replaceState(null, "", `#audit/${id}`);
  show("audit");
}

async function complaintView() {
  if (!state.complaint) return;
  const t = await getJSON(`/audit/complaints/${state.complaint}/timeline`);
  const h = await getJSON(`/audit/complaints/${state.complaint}/history`);
  $("#complaint").hidden = false;
  $("#complaint-title").textContent = t.title || t.complaint_id;
  $("#complaint-meta").replaceChildren(
    el("span", {}, "status ", chip(t.status)),
    el("span", {}, `first response due ${fmt.time(t.first_response_due)}`),
    el("span", {}, `resolution due ${fmt.time(t.resolution_due)}`),
    el("span", {}, el("code", {}, t.complaint_id)));
  // Each SLA clock with its life so far (warnings and breaches are stored moments).
  const sla = await getJSON(`/audit/complaints/${state.complaint}/sla`);
  const clockTone = { warning: "at_risk", fulfilled: "met" };
  table("clocks", [
    ["Clock", (k) => `${fmt.label(k.metric)}${k.metric === "next_response" ? ` #${k.cycle}` : ""}`],
    ["Status", (k) => chip(k.status, clockTone[k.status] || k.status)],
    ["Due", (k) => fmt.time(k.due_at)],
    ["Life", (k) => el("span", { class: "life" }, k.life.map((m) => `${m.event} ${fmt.time(m.at)}`).join(" · "))],
  ], sla.clocks);
  const selected = state.selectedVersion || t.items[t.items.length - 1].version;
  $("#timeline").replaceChildren(...t.items.map((item) => el("li",
    { class: item.version === selected ? "selected" : "", dataset: { version: item.version },
      onclick: () => { state.selectedVersion = item.version; complaintView(); } },
    el("div", { class: "when" }, `v${item.version} · ${fmt.time(item.at)} · +${fmt.minutes(item.since_registration_minutes)}`),
    el("div", { class: "what" }, item.summary),
    el("div", { class: "who" }, `by ${item.actor} → `, chip(item.status)))));
  const entry = h.events.find((e) => e.version === selected);
  $("#diff").hidden = false;
  $("#diff-title").textContent = `Changes in v${entry.version}: ${entry.event_type} by ${entry.actor}`;
  const show = (v) => el("span", { class: "val" }, v === null || v === undefined ? "–" : typeof v === "object" ? JSON.stringify(v) : String(v));
  table("diff-table", [
    ["Field", (r) => r[0]],
    ["Before", (r) => show(r[1].before), "before"],
    ["After", (r) => show(r[1].after), "after"],
  ], Object.entries(entry.changes));
  // What the complaint looked like right after this event, rebuilt by the aggregate's code.
  const then = await getJSON(`/audit/complaints/${state.complaint}/state`, new URLSearchParams({ version: selected }));
  $("#state-title").textContent = `The complaint as of v${then.version}`;
  const fields = ["status", "priority", "category", "severity", "team", "agent", "first_response_due",
    "resolution_due", "first_responded_at", "resolved_at", "handovers", "reopen_count", "escalation_level"];
  table("state-table", [["Field", (r) => r], ["Value", (r) => show(then.state[r])]], fields.filter((f) => f in then.state));
}

async function audit() {
  if (!$("#results table") && !$("#results .empty")) await search();
  await complaintView();
}

// ------------------------------------------------------------------ signing in
// The session (token, who, expiry) lives in sessionStorage: this tab only, gone when it
// closes; never localStorage. The authorization request in flight (PKCE verifier, state,
// the view to return to) is kept there too, until the provider sends the browser back.
const SESSION_KEY = "complaints.session";
const OIDC_KEY = "complaints.oidc";
const auth = { config: null, rules: {}, session: null };

// A label in both languages: "English / 中文".
function bi(en, zh) {
  return el("span", { class: "bi" }, el("span", { lang: "en" }, en), " / ", el("span", { lang: "zh-CN" }, zh));
}

const roleLabel = (role) => (auth.rules[role] ? `${auth.rules[role].en} / ${auth.rules[role].zh}` : role);
const teamLabel = (team) => `team ${team} / 团队 ${team}`;

function roleRules() {
  return (auth.session ? auth.session.user.roles : []).map((role) => auth.rules[role]).filter(Boolean);
}

function allowedViews() {
  const granted = new Set(roleRules().flatMap((rule) => rule.views));
  return Object.keys(VIEWS).filter((view) => granted.has(view));
}

const mayView = (view) => allowedViews().includes(view);
const mayDo = (what) => roleRules().some((rule) => rule[what] === true); // "export", "models", "acknowledge"

// Where a role lands after signing in: its own dashboard, when it has one; else the first
// view it may open.
const HOME = { agent: "supervisor", supervisor: "supervisor", quality: "product", executive: "executive" };

function homeView() {
  const views = allowedViews();
  const own = auth.session.user.roles.map((role) => HOME[role]).find((view) => views.includes(view));
  return own || views[0];
}

// Like the server's rule: team-bound when every role held is (a role without the rule lifts it).
function teamBound() {
  const roles = auth.session ? auth.session.user.roles : [];
  return roles.length > 0 && roles.every((role) => auth.rules[role] && auth.rules[role].team_bound);
}

function readSession() {
  try {
    const session = JSON.parse(sessionStorage.getItem(SESSION_KEY) || "null");
    return session && session.token && session.user && (!session.expires_at || session.expires_at > Date.now()) ? session : null;
  } catch (_) {
    return null;
  }
}

function startSession(session) {
  sessionStorage.setItem(SESSION_KEY, JSON.stringify(session));
  auth.session = session;
  state.generation += 1;
  enter();
}

// Signs out: forgets the token and what was shown, then the sign-in view (with `note`, a
// pair [en, zh], when there is something to say). `byUser`: the sign-out button, which
// also forgets where the page was (the next user starts at its own view) and, in OIDC
// mode, ends the provider's session too (else the next sign-in would be silent). After
// a 401 the page stays where it was, to come back there once signed in again.
function signOut(note, { byUser = false } = {}) {
  const was = auth.session;
  sessionStorage.removeItem(SESSION_KEY);
  auth.session = null;
  state.generation += 1;
  state.view = null;
  clearViews();
  if (byUser) history.replaceState(null, "", location.pathname);
  if (byUser && was && was.mode === "oidc" && auth.config && auth.config.mode === "oidc") {
    const params = new URLSearchParams({ client_id: auth.config.client_id, post_logout_redirect_uri: redirectUri() });
    if (was.id_token) params.set("id_token_hint", was.id_token);
    location.assign(`${oidcEndpoint("logout")}?${params}`);
    return;
  }
  showSignIn(note);
}

function showSignIn(note) {
  for (const id of ["signed-in", "tabs", "live-box", "who"]) document.getElementById(id).hidden = true;
  $("#signin").hidden = false;
  const box = $("#signin-note");
  box.hidden = !note;
  box.replaceChildren(...(note ? [Array.isArray(note) ? bi(...note) : note] : []));
  const mode = auth.config && auth.config.mode;
  $("#signin-dev").hidden = mode !== "development";
  $("#signin-oidc").hidden = mode !== "oidc";
  if (mode === "development") loadDevUsers();
  if (mode === "oidc") $("#oidc-issuer").textContent = auth.config.issuer;
}

function signInError(en, zh, detail) {
  const box = $("#signin-note");
  box.hidden = false;
  box.replaceChildren(bi(en, zh), detail ? el("div", { class: "detail" }, detail) : null);
}

// ---- development: the demo users, one per role, grouped by role
async function loadDevUsers() {
  let users;
  try {
    const response = await fetch("/auth/dev/users", { headers: { accept: "application/json" } });
    if (!response.ok) throw new Error(`${response.status} ${response.statusText}`);
    users = await response.json();
  } catch (error) {
    signInError("The demo users cannot be loaded", "无法加载演示用户", error.message);
    return;
  }
  const groups = new Map(Object.keys(auth.rules).map((role) => [role, []]));
  for (const user of users) {
    const role = user.roles[0] || "";
    if (!groups.has(role)) groups.set(role, []);
    groups.get(role).push(user);
  }
  $("#dev-users").replaceChildren(...[...groups].filter(([, members]) => members.length).map(([role, members]) =>
    el("section", { class: "dev-role", dataset: { role } },
      el("h3", {}, roleLabel(role)),
      members.map((user) => el("button", {
        type: "button", class: "dev-user", dataset: { username: user.username },
        onclick: () => devSignIn(user.username),
      },
      el("span", { class: "name" }, user.name),
      el("span", { class: "meta" }, [user.roles.map(roleLabel).join(", "), user.team ? teamLabel(user.team) : null]
        .filter(Boolean).join(" · ")))))));
}

async function devSignIn(username) {
  try {
    const response = await fetch("/auth/dev/token", {
      method: "POST", headers: { "content-type": "application/json", accept: "application/json" },
      body: JSON.stringify({ username }),
    });
    if (!response.ok) throw new Error(`${response.status} ${response.statusText}`);
    const d = await response.json();
    startSession({ mode: "development", token: d.access_token, expires_at: Date.now() + 1000 * d.expires_in, user: d.user });
  } catch (error) {
    signInError("Sign-in failed", "登录失败", error.message);
  }
}

// ---- OpenID Connect: authorization code with PKCE (S256), the page as a public client
const redirectUri = () => `${location.origin}/dashboard`;
const oidcEndpoint = (name) => `${auth.config.issuer.replace(/\/+$/, "")}/protocol/openid-connect/${name}`;

function base64url(bytes) {
  let text = "";
  for (const byte of new Uint8Array(bytes)) text += String.fromCharCode(byte);
  return btoa(text).replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "");
}

const randomText = (bytes) => base64url(window.crypto.getRandomValues(new Uint8Array(bytes)));

async function oidcSignIn() {
  if (!(window.crypto && window.crypto.subtle)) {
    signInError("Signing in needs this page over https (or on localhost): the browser offers no window.crypto.subtle here",
      "登录需要通过 https（或 localhost）访问本页：此处浏览器不提供 window.crypto.subtle");
    return;
  }
  const verifier = randomText(48);
  const challenge = base64url(await window.crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier)));
  const request = { verifier, state: randomText(24), hash: location.hash };
  sessionStorage.setItem(OIDC_KEY, JSON.stringify(request));
  const params = new URLSearchParams({
    response_type: "code", client_id: auth.config.client_id, redirect_uri: redirectUri(), scope: "openid",
    state: request.state, code_challenge: challenge, code_challenge_method: "S256",
  });
  location.assign(`${oidcEndpoint("auth")}?${params}`);
}

// The provider sent the browser back (?code=…&state=… or ?error=…): exchange the code for
// tokens. Returns whether this load was such a return.
async function oidcReturn() {
  const query = new URLSearchParams(location.search);
  if (!query.has("state") || !(query.has("code") || query.has("error"))) return false;
  const request = JSON.parse(sessionStorage.getItem(OIDC_KEY) || "null");
  sessionStorage.removeItem(OIDC_KEY);
  history.replaceState(null, "", `${location.pathname}${request ? request.hash : ""}`); // the code is used once
  if (!request || request.state !== query.get("state")) {
    throw new Error("The sign-in answer does not match this page's request (state): sign in again / 登录应答与本页请求不符，请重新登录");
  }
  if (query.has("error")) throw new Error(`${query.get("error")}: ${query.get("error_description") || ""}`);
  const response = await fetch(oidcEndpoint("token"), {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded", accept: "application/json" },
    body: new URLSearchParams({
      grant_type: "authorization_code", code: query.get("code"), redirect_uri: redirectUri(),
      client_id: auth.config.client_id, code_verifier: request.verifier,
    }),
  });
  const d = await response.json().catch(() => ({}));
  if (!response.ok || !d.access_token) {
    throw new Error(`The identity provider refused the code / 身份提供方拒绝了授权码: ${d.error_description || d.error || response.status}`);
  }
  startSession({ mode: "oidc", token: d.access_token, id_token: d.id_token || null,
    expires_at: Date.now() + 1000 * (d.expires_in || 300), user: userOf(claimsOf(d.access_token)) });
  return true;
}

// What the page shows of who signed in, read from the token (the API verifies it; the
// page only displays it), from the claims the server names in /auth/config.
function claimsOf(token) {
  const part = (token.split(".")[1] || "").replaceAll("-", "+").replaceAll("_", "/");
  const padded = part.padEnd(Math.ceil(part.length / 4) * 4, "=");
  return JSON.parse(new TextDecoder().decode(Uint8Array.from(atob(padded), (c) => c.charCodeAt(0))));
}

function userOf(claims) {
  const path = (auth.config && auth.config.roles_claim || "realm_access.roles").split(".");
  const found = path.reduce((at, step) => (at && typeof at === "object" ? at[step] : undefined), claims);
  const roles = (Array.isArray(found) ? found : []).filter((role) => role in auth.rules);
  const teamClaim = claims[(auth.config && auth.config.team_claim) || "team"];
  let team = Array.isArray(teamClaim) ? teamClaim[0] : teamClaim;
  team = team ? String(team).replace(/^\/+|\/+$/g, "") : null;
  // Chinese names family name first and without a space, as the server records them
  // (providers build `name` as given name, space, family name).
  const cjk = /[\u4e00-\u9fff]/;
  const name = claims.given_name && claims.family_name && cjk.test(claims.given_name + claims.family_name)
    ? claims.family_name + claims.given_name
    : claims.name || claims.preferred_username || claims.sub;
  return { username: claims.preferred_username || claims.sub, name, roles, team };
}

// ------------------------------------------------------------------ signed in: the role's own views
function enter() {
  const user = auth.session.user;
  $("#signin").hidden = true;
  for (const id of ["signed-in", "tabs", "live-box", "who"]) document.getElementById(id).hidden = false;
  $("#who-name").textContent = user.name;
  $("#who-role").textContent = user.roles.length ? user.roles.map(roleLabel).join(", ") : "no role / 无角色";
  $("#who-team").textContent = user.team ? teamLabel(user.team) : "";
  $("#who-team").hidden = !user.team;
  const views = allowedViews();
  for (const tab of $$(".tabs button")) tab.hidden = !views.includes(tab.dataset.view);
  fixTeam();
  $("#export").hidden = !mayDo("export");
  $("#no-views").hidden = views.length > 0;
  $("#filters").hidden = views.length === 0;
  $("#live-box").hidden = views.length === 0;
  if (!views.length) {
    $("#status").textContent = "";
    return;
  }
  if (mayDo("models")) loadOptions();
  const hash = location.hash.slice(1);
  if (hash.startsWith("audit/") && views.includes("audit")) openComplaint(hash.slice(6));
  else show(views.includes(hash) ? hash : homeView());
}

// A team-bound user's team filter is its team, fixed (the server forces it anyway).
function fixTeam() {
  const select = $("#filters select[name=team]");
  const label = select.closest("label");
  if (teamBound() && auth.session.user.team) {
    const team = auth.session.user.team;
    if (![...select.options].some((option) => option.value === team)) select.append(el("option", { value: team }, team));
    select.value = team;
    select.disabled = true;
    select.title = "Your role sees your team's complaints only / 您的角色只能查看本团队的投诉";
    label.classList.add("fixed");
  } else {
    select.disabled = false;
    select.title = "";
    label.classList.remove("fixed");
  }
}

// Forgets every figure shown, so the next user sees nothing of the previous one's.
function clearViews() {
  for (const node of $$(".chart")) {
    Plotly.purge(node);
    node.replaceChildren();
  }
  for (const node of $$(".kpis, .table, #timeline")) node.replaceChildren();
  for (const section of $$(".view")) {
    section.hidden = true;
    section.classList.remove("is-denied");
  }
  $("#complaint").hidden = true;
  $("#diff").hidden = true;
  $("#search").reset();
  $("#search-note").textContent = "";
  for (const field of $$("#filters select, #filters input")) field.value = field.name === "period" ? "30d" : "";
  const team = $("#filters select[name=team]");
  team.replaceChildren(el("option", { value: "" }, "All"));
  fixTeam();
  Object.assign(state, { view: null, complaint: null, selectedVersion: null, again: false, acknowledged: new Set() });
  $("#status").textContent = "";
  $("#status").classList.remove("error");
}

// A 403 in a panel: the message instead of the figures (the audit view keeps its search).
function deny(view, detail) {
  const section = document.getElementById(`view-${view}`);
  let box = $(":scope > .denied", section);
  if (!box) {
    box = el("div", { class: "denied card", role: "alert" },
      el("h2", {}, bi("Your role may not see this", "您的角色无权查看此内容")), el("p", { class: "detail" }));
    section.prepend(box);
  }
  $(".detail", box).textContent = detail || "";
  section.classList.add("is-denied");
}

// ------------------------------------------------------------------ wiring
const VIEWS = { supervisor, product, executive, audit };

function show(view) {
  const views = allowedViews();
  if (!views.includes(view)) view = views[0];
  if (!view) return;
  state.view = view;
  for (const tab of $$(".tabs button")) tab.classList.toggle("active", tab.dataset.view === view);
  for (const section of $$(".view")) section.hidden = section.id !== `view-${view}`;
  $("#filters").classList.toggle("audit", view === "audit");
  if (view !== "audit" && location.hash !== `#${view}`) history.replaceState(null, "", `#${view}`);
  refresh();
}

async function refresh() {
  // Only a view the signed-in role may open (a timer or a change may outlive the user who chose it).
  if (!auth.session || !state.view || !allowedViews().includes(state.view)) return;
  if (state.inFlight === state.generation) { // one at a time; a change meanwhile runs once more after it
    state.again = true;
    return;
  }
  const generation = state.generation;
  const view = state.view;
  state.inFlight = generation;
  state.again = false;
  const status = $("#status");
  try {
    await VIEWS[view]();
    if (generation !== state.generation) return;
    document.getElementById(`view-${view}`).classList.remove("is-denied");
    state.refreshes += 1;
    status.textContent = `updated ${new Date().toLocaleTimeString("en-GB")}`;
    status.dataset.refreshes = state.refreshes;
    status.classList.remove("error");
  } catch (error) {
    if (error instanceof SignedOut || generation !== state.generation) return;
    if (error instanceof HttpError && error.status === 403) {
      deny(view, error.detail);
      status.textContent = "not allowed / 无权查看";
    } else {
      status.textContent = `error: ${error.message}`;
    }
    status.classList.add("error");
  } finally {
    if (state.inFlight === generation) state.inFlight = null;
    if (state.again && generation === state.generation) refresh();
  }
}

// Export: fetched with the token (a plain link would send none), saved from a Blob.
async function exportView() {
  const dataset = EXPORTS[state.view];
  const params = filterParams();
  params.set("format", "csv");
  const button = $("#export");
  button.disabled = true;
  try {
    const response = await api(`/export/${dataset}`, params);
    const blob = await response.blob();
    const named = /filename="?([^";]+)"?/.exec(response.headers.get("content-disposition") || "");
    const url = URL.createObjectURL(blob);
    const link = el("a", { href: url, download: named ? named[1] : `${dataset}.csv`, hidden: "" });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60_000);
  } catch (error) {
    if (error instanceof SignedOut) return;
    const status = $("#status");
    status.textContent = error instanceof HttpError && error.status === 403
      ? `export not allowed / 无权导出: ${error.detail}` : `export failed / 导出失败: ${error.message}`;
    status.classList.add("error");
  } finally {
    button.disabled = false;
  }
}

async function loadOptions() {
  try {
    const d = await getJSON("/dimensions");
    for (const name of ["team", "product"]) {
      const select = $(`#filters select[name=${name}]`);
      const current = select.value;
      select.replaceChildren(el("option", { value: "" }, "All"), ...d[name].map((v) => el("option", { value: v }, v)));
      select.value = current;
    }
    fixTeam();
  } catch (_) { /* signed out meanwhile, or the read node still starting: the drop-downs stay at "All" */ }
}

function wire() {
  for (const tab of $$(".tabs button")) tab.addEventListener("click", () => show(tab.dataset.view));
  for (const field of $$("#filters select, #filters input")) field.addEventListener("change", refresh);
  $("#release").addEventListener("change", refresh);
  $("#reset").addEventListener("click", () => {
    for (const field of $$("#filters select, #filters input")) {
      if (!field.disabled) field.value = field.name === "period" ? "30d" : "";
    }
    refresh();
  });
  $("#export").addEventListener("click", exportView);
  $("#search").addEventListener("submit", (e) => search(e).catch((err) => {
    if (err instanceof SignedOut) return;
    if (err instanceof HttpError && err.status === 403) deny("audit", err.detail);
    else $("#search-note").textContent = err.message;
  }));
  $("#sign-out").addEventListener("click", () => signOut(null, { byUser: true }));
  $("#oidc-sign-in").addEventListener("click", oidcSignIn);
  setInterval(() => {
    const asOf = $("#filters input[name=as_of]").value;
    if (auth.session && $("#live").checked && !document.hidden && !asOf) refresh();
  }, REFRESH_MS);
}

async function loadPublic(path) {
  const response = await fetch(path, { headers: { accept: "application/json" } });
  if (!response.ok) throw new Error(`${path}: ${response.status} ${response.statusText}`);
  return response.json();
}

async function start() {
  wire();
  try {
    [auth.config, auth.rules] = await Promise.all([loadPublic("/auth/config"), loadPublic("/static/access.json")]);
  } catch (error) {
    showSignIn();
    signInError("Signing in is not available here", "此处无法登录", error.message);
    return;
  }
  try {
    if (auth.config.mode === "oidc" && await oidcReturn()) return;
  } catch (error) {
    showSignIn();
    signInError("Sign-in failed", "登录失败", error.message);
    return;
  }
  const session = readSession();
  if (session && session.mode === auth.config.mode) {
    auth.session = session;
    state.generation += 1;
    enter();
  } else {
    sessionStorage.removeItem(SESSION_KEY);
    showSignIn();
  }
}

start();
