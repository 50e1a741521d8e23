// The dashboard page: three role views and an audit view over the read API's JSON.
// Plain JavaScript; charts are drawn with Plotly (served from the installed package).
"use strict";

const REFRESH_MS = 5000;
const COLORS = { accent: "#2f6fde", ok: "#1f9d66", warn: "#e0a100", bad: "#d64545", grey: "#9aa3b5",
  series: ["#2f6fde", "#1f9d66", "#e0a100", "#8e5bd6", "#d64545", "#13a3b5", "#7a8599", "#c2549d"] };
const EXPORTS = { supervisor: "sla", product: "trends", executive: "complaints", audit: "events" };

const state = { view: "supervisor", complaint: null, selectedVersion: null, inFlight: false, refreshes: 0 };

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

async function getJSON(path, params) {
  const url = params && [...params].length ? `${path}?${params}` : path;
  const response = await fetch(url, { headers: { accept: "application/json" } });
  if (!response.ok) {
    let detail = response.statusText;
    try { detail = JSON.stringify((await response.json()).detail); } catch (_) { /* not JSON */ }
    throw new Error(`${response.status} ${detail}`);
  }
  return response.json();
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
  table("sup-breached", dueColumns(true), d.breached, (r) => openComplaint(r.complaint_id));
  table("sup-risk", dueColumns(false), d.at_risk, (r) => openComplaint(r.complaint_id));
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

// ------------------------------------------------------------------ wiring
const VIEWS = { supervisor, product, executive, audit };

function show(view) {
  state.view = view;
  for (const tab of $$(".tabs button")) tab.classList.toggle("active", tab.dataset.view === view);
  for (const section of $$(".view")) section.hidden = section.id !== `view-${view}`;
  $("#filters").classList.toggle("audit", view === "audit");
  if (view !== "audit" && location.hash !== `#${view}`) history.replaceState(null, "", `#${view}`);
  refresh();
}

async function refresh() {
  if (state.inFlight) return;
  state.inFlight = true;
  const params = filterParams();
  $("#export").href = `/export/${EXPORTS[state.view]}?format=csv&${params}`;
  try {
    await VIEWS[state.view]();
    state.refreshes += 1;
    const status = $("#status");
    status.textContent = `updated ${new Date().toLocaleTimeString("en-GB")}`;
    status.dataset.refreshes = state.refreshes;
    status.classList.remove("error");
  } catch (error) {
    $("#status").textContent = `error: ${error.message}`;
    $("#status").classList.add("error");
  } finally {
    state.inFlight = false;
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
  } catch (_) { /* the read node may still be starting: the drop-downs stay at "All" */ }
}

function start() {
  for (const tab of $$(".tabs button")) tab.addEventListener("click", () => show(tab.dataset.view));
  for (const field of $$("#filters select, #filters input")) field.addEventListener("change", refresh);
  $("#release").addEventListener("change", refresh);
  $("#reset").addEventListener("click", () => {
    for (const field of $$("#filters select, #filters input")) field.value = field.name === "period" ? "30d" : "";
    refresh();
  });
  $("#search").addEventListener("submit", (e) => search(e).catch((err) => { $("#search-note").textContent = err.message; }));
  setInterval(() => {
    const asOf = $("#filters input[name=as_of]").value;
    if ($("#live").checked && !document.hidden && !asOf) refresh();
  }, REFRESH_MS);
  loadOptions();
  const hash = location.hash.slice(1);
  if (hash.startsWith("audit/")) openComplaint(hash.slice(6));
  else show(VIEWS[hash] ? hash : "supervisor");
}

start();
