// The dashboard page: three role views and an audit view over the read API's JSON.
// Plain JavaScript; charts are drawn with Plotly (served from the installed package).
// Signing in: the development sign-in (demo users) or the identity provider's
// authorization-code flow with PKCE; the access token is kept in sessionStorage and sent
// as `Authorization: Bearer` with every request to the API. Each role sees the views
// the permission matrix gives it (/static/access.json). Texts, code names, dates and
// numbers in zh-CN or en through I18N (i18n.js). The view, its filters and the opened
// complaint live in the address (query string): a link reproduces the view.
"use strict";

const REFRESH_MS = 5000;
const COLORS = { accent: "#2f6fde", ok: "#1f9d66", warn: "#e0a100", bad: "#d64545", grey: "#9aa3b5",
  series: ["#2f6fde", "#1f9d66", "#e0a100", "#8e5bd6", "#d64545", "#13a3b5", "#7a8599", "#c2549d"] };
const EXPORTS = { supervisor: "sla", product: "trends", executive: "complaints", audit: "events" };
// The filters, by the read API's parameter names (the same names go to the workspace).
const FILTERS = ["period", "start", "end", "team", "product", "category", "region", "channel", "severity", "tier", "tag", "as_of"];
const FONTS = "system-ui, 'Noto Sans CJK SC', 'PingFang SC', 'Microsoft YaHei', 'DejaVu Sans', sans-serif";

// `generation` changes at each sign-in and sign-out: answers to an earlier one are dropped.
// `asked` counts refreshes: only the latest one's answer is drawn (a filter changed meanwhile wins).
// `acknowledged`: alerts acknowledged from this page, until the read model shows it.
const state = { view: null, complaint: null, selectedVersion: null, asked: 0, refreshes: 0,
  generation: 0, acknowledged: new Set(), release: null };

I18N.add({
  title: ["Complaints dashboard", "投诉看板"], brand: ["Complaints dashboard", "投诉看板"],
  "view.supervisor": ["Supervisor", "主管"], "view.product": ["Product & quality", "产品与质量"],
  "view.executive": ["Executive", "管理层"], "view.audit": ["Audit", "审计"],
  live: ["Live", "实时"], workspace: ["Workspace", "工作台"], loading: ["loading…", "加载中…"],
  updated: ["updated {time}", "更新于 {time}"], "as_of.frozen": ["as of {time}", "截至 {time}"],
  "filter.period": ["Period", "时间范围"], "filter.team": ["Team", "团队"], "filter.product": ["Product", "产品"],
  "filter.category": ["Category", "类别"], "filter.region": ["Region", "地区"], "filter.channel": ["Channel", "渠道"],
  "filter.severity": ["Severity", "严重程度"], "filter.tier": ["Tier", "客户等级"], "filter.as_of": ["As of", "截至"],
  "filter.tag": ["Tag", "标签"], "filter.tag.hint": ["complaints carrying this tag now", "当前带有此标签的投诉"],
  "filter.as_of.hint": ["see the figures as they stood then (the desk's time zone)", "查看当时的数据（服务台时区）"],
  "period.today": ["Today", "今天"], "period.7d": ["7 days", "近 7 天"], "period.30d": ["30 days", "近 30 天"],
  "period.90d": ["90 days", "近 90 天"], "period.365d": ["1 year", "近 1 年"], "period.all": ["All", "全部"],
  all: ["All", "全部"], reset: ["Reset", "重置"], export: ["Export CSV", "导出 CSV"],
  "export.hint": ["download this view's main table", "下载本视图的主表"],
  "team.fixed": ["Your role sees your team's complaints only", "您的角色只能查看本团队的投诉"],
  "noviews.title": ["Your role may not see any dashboard here", "您的角色无权查看此处的任何看板"],
  "noviews.hint": ["Sign out and sign in as someone else.", "请退出后以其他用户登录。"],
  "alerts.title": ["Open alerts", "待处理告警"], "alerts.none": ["No open alerts", "暂无待处理告警"],
  "alerts.severity": ["Severity", "级别"], "alerts.alert": ["Alert", "告警"], "alerts.subject": ["Subject", "对象"],
  "alerts.raised": ["Raised", "产生时间"], "alerts.status": ["Status", "状态"],
  acknowledge: ["Acknowledge", "确认"], acknowledged: ["Acknowledged", "已确认"],
  empty: ["No complaints match these filters", "没有符合筛选条件的投诉"], nothing: ["Nothing here", "暂无数据"],
  partial: ["partial", "不完整"], "partial.note": ["hatched: a partial {unit}", "斜线：不完整的{unit}"],
  "unit.day": ["day", "天"], "unit.week": ["week", "周"], "unit.month": ["month", "月"],
  unassigned: ["{n} open, not assigned to an agent", "{n} 件未分配给处理人"],
  "sup.daily": ["New and resolved per day", "每日新增与解决"], "sup.status": ["By status", "按状态"],
  "sup.load": ["Agents' load", "处理人工作量"], "sup.load.hint": ["open now, by state", "当前未结，按状态"],
  "sup.sla": ["SLA attainment", "SLA 达成率"], "sup.breached": ["Breached", "已超时"],
  "sup.breached.hint": ["open and past due", "未结且已过期限"], "sup.risk": ["At risk", "即将超时"],
  "sup.risk.hint": ["due within the warning time", "在预警时间内到期"],
  "kpi.new_today": ["New today", "今日新增"], "kpi.resolved_today": ["Resolved today", "今日解决"],
  "kpi.pending": ["Pending", "待处理"], "kpi.first_response": ["Avg first response", "平均首次响应"],
  "kpi.sla_first_response": ["First response SLA", "首次响应 SLA"], "kpi.sla_resolution": ["Resolution SLA", "解决 SLA"],
  "kpi.sla_next_response": ["Next response SLA", "后续响应 SLA"],
  "hint.in_period": ["{n} in period", "期间内 {n} 件"], "hint.breached": ["{n} breached", "{n} 件已超时"],
  "hint.business": ["business time", "工作时间"], "hint.met": ["{met} of {counted} met", "{counted} 件中 {met} 件达成"],
  "hint.replies": ["{met} of {counted} replies on time", "{counted} 次回复中 {met} 次按时"],
  new: ["new", "新增"], resolved: ["resolved", "已解决"], working: ["working", "处理中"], overdue: ["overdue", "已超时"],
  waiting: ["waiting on customer", "等待客户"], complaints: ["complaints", "投诉数"], target: ["target {p}", "目标 {p}"],
  "col.complaint": ["Complaint", "投诉"], "col.clock": ["Clock", "时钟"], "col.agent": ["Agent", "处理人"],
  "col.priority": ["Priority", "优先级"], "col.overdue": ["Overdue by", "超时"], "col.due_in": ["Due in", "剩余"],
  "prod.products": ["Complaints by product line", "按产品线的投诉"], "prod.categories": ["Top 5 categories", "前 5 类别"],
  "prod.defects": ["Defects around a release", "版本发布前后的缺陷"], "prod.release": ["release", "发布日期"],
  "prod.wow": ["Week over week", "周环比"], "prod.wow.hint": ["last full week vs the one before", "上一整周与前一周对比"],
  "prod.no_release": ["No release date is known: pick one above", "未知发布日期：请在上方选择"],
  "prod.other_categories": ["other categories", "其他类别"], "prod.defects.series": ["product defects", "产品缺陷"],
  "kpi.total": ["Complaints", "投诉数"], "kpi.products": ["Product lines", "产品线"], "kpi.top_product": ["Most complained", "投诉最多"],
  "kpi.top_category": ["Top category", "最多类别"], "kpi.rising": ["Rising > 20% WoW", "周环比增长 > 20%"],
  "kpi.defects_after": ["Defects/day after release", "发布后日均缺陷"],
  "hint.registered": ["registered in period", "期间内登记"], "hint.with_complaints": ["with complaints", "有投诉"],
  "hint.of_all": ["{p} of all", "占全部 {p}"], "hint.none": ["none", "无"], "hint.before": ["before: {n}", "发布前：{n}"],
  "hint.no_release": ["no release date known", "未知发布日期"],
  "exec.sat": ["Satisfaction", "满意度"], "exec.sat.hint": ["CSAT (1–5) and NPS, by week", "CSAT（1–5）与 NPS，按周"],
  "exec.high": ["High-priority complaints per month", "每月高优先级投诉"], "exec.priority": ["Complaints per week", "每周投诉"],
  "exec.priority.hint": ["by priority", "按优先级"], "exec.channel": ["Complaints by channel", "按渠道的投诉"],
  "kpi.fcr": ["First-contact resolution", "首次联系解决率"], "kpi.csat": ["CSAT", "满意度 CSAT"], "kpi.nps": ["NPS", "净推荐值 NPS"],
  "kpi.handling": ["Avg handling time", "平均处理时长"], "kpi.reopen": ["Reopen rate", "重开率"], "kpi.repeat": ["Repeat rate", "重复投诉率"],
  "hint.total": ["{n} complaints in period", "期间内 {n} 件投诉"], "hint.ratings": ["latest week, {n} ratings", "最近一周，{n} 条评分"],
  "hint.no_ratings": ["no ratings", "暂无评分"], "hint.nps": ["promoters − detractors", "推荐者 − 贬损者"],
  "hint.handling": ["registration to close", "登记至关闭"], "hint.reopen": ["of resolved complaints", "占已解决投诉"],
  "hint.repeat": ["same customer again within 7 days", "同一客户 7 天内再次投诉"], "not_triaged": ["not triaged", "未分级"],
  "audit.find": ["Find a complaint", "查找投诉"], "audit.text": ["words in title or description", "标题或描述中的文字"],
  "audit.customer": ["customer id", "客户编号"], "audit.order": ["order", "订单号"], "audit.product": ["product", "产品"],
  "audit.search": ["Search", "搜索"], "audit.results": ["Results", "结果"], "audit.clocks": ["SLA clocks", "SLA 时钟"],
  "audit.found": ["{n} complaints", "{n} 件投诉"], "col.registered": ["Registered", "登记时间"], "col.title": ["Title", "标题"],
  "col.customer": ["Customer", "客户"], "col.product": ["Product", "产品"], "col.status": ["Status", "状态"],
  "col.due": ["Due", "期限"], "col.life": ["Life", "经过"], "col.field": ["Field", "字段"], "col.before": ["Before", "变更前"],
  "col.after": ["After", "变更后"], "col.value": ["Value", "值"],
  "audit.status": ["status", "状态"], "audit.fr_due": ["first response due {time}", "首次响应截止 {time}"],
  "audit.res_due": ["resolution due {time}", "解决截止 {time}"], "audit.by": ["by {actor}", "操作人 {actor}"],
  "audit.changes": ["Changes in v{version}: {event} by {actor}", "v{version} 的变更：{event}（{actor}）"],
  "audit.then": ["The complaint as of v{version}", "v{version} 时的投诉"],
  "status.error": ["error: {message}", "错误：{message}"], "status.denied": ["not allowed", "无权查看"],
  "ack.denied": ["not allowed to acknowledge: {detail}", "无权确认：{detail}"],
  "ack.failed": ["acknowledge failed: {detail}", "确认失败：{detail}"],
  "export.denied": ["export not allowed: {detail}", "无权导出：{detail}"], "export.failed": ["export failed: {detail}", "导出失败：{detail}"],
  "no_role": ["no role", "无角色"],
  "team.named": ["team {team}", "团队 {team}"],
});

// ------------------------------------------------------------------ helpers
const $ = (sel, root = document) => root.querySelector(sel);
const $$ = (sel, root = document) => [...root.querySelectorAll(sel)];
const t = (key, vars) => I18N.t(key, vars);
const label = (kind, code) => I18N.label(kind, code);

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
  int: (n) => I18N.number(n === null || n === undefined ? n : Math.round(n)),
  pct: (x) => I18N.percent(x),
  num: (x, digits = 1) => (x === null || x === undefined ? "–"
    : new Intl.NumberFormat(I18N.lang, { minimumFractionDigits: digits, maximumFractionDigits: digits }).format(x)),
  minutes: (m) => (m === null || m === undefined ? "–" : I18N.duration(60 * m)),
  time: (iso) => I18N.dateTime(iso),
};

// ---- instants in the desk's time zone (the "As of" field is its wall clock)
function wallClock(instant) { // Date -> "YYYY-MM-DDTHH:MM:SS" in the desk's zone
  const parts = Object.fromEntries(new Intl.DateTimeFormat("en-CA", { timeZone: I18N.timeZone, hourCycle: "h23",
    year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit" })
    .formatToParts(instant).map((p) => [p.type, p.value]));
  return `${parts.year}-${parts.month}-${parts.day}T${parts.hour}:${parts.minute}:${parts.second}`;
}

function fromWallClock(text) { // "YYYY-MM-DDTHH:MM[:SS]" in the desk's zone -> Date
  const guess = new Date(`${text.length === 16 ? `${text}:00` : text}Z`);
  let instant = guess;
  for (let i = 0; i < 2; i += 1) instant = new Date(guess - (new Date(`${wallClock(instant)}Z`) - instant));
  return instant;
}

// ---- the view in the address: ?view=…&<filters>&complaint=…&release=…
function filterParams() {
  const params = new URLSearchParams();
  for (const name of FILTERS) {
    const field = $(`#filters [name=${name}]`);
    if (!field || !field.value) continue;
    params.set(name, name === "as_of" ? fromWallClock(field.value).toISOString() : field.value);
  }
  return params;
}

function viewAddress() {
  const params = new URLSearchParams();
  if (state.view) params.set("view", state.view);
  for (const [name, value] of filterParams()) if (!(name === "period" && value === "30d")) params.set(name, value);
  if (state.view === "audit" && state.complaint) params.set("complaint", state.complaint);
  if (state.view === "audit" && state.complaint && state.selectedVersion) params.set("version", state.selectedVersion);
  if (state.view === "product" && state.release) params.set("release", state.release);
  const lang = new URLSearchParams(location.search).get("lang");
  if (lang) params.set("lang", lang);
  return `${location.pathname}?${params}`;
}

// A new entry in the history for each change of view, filter or complaint (back and forward
// walk them); the same address again is no new entry.
function remember() {
  const address = viewAddress();
  if (address !== `${location.pathname}${location.search}`) history.pushState(null, "", address);
}

// The address's filters into the fields (the team-bound team stays fixed).
function restoreFilters() {
  const query = new URLSearchParams(location.search);
  for (const name of FILTERS) {
    const field = $(`#filters [name=${name}]`);
    if (!field || field.disabled) continue;
    const value = query.get(name) || (name === "period" ? "30d" : "");
    if (field.tagName === "SELECT" && value && ![...field.options].some((o) => o.value === value)) {
      field.append(el("option", { value }, field.dataset.kind ? label(field.dataset.kind, value) : value));
    }
    field.value = name === "as_of" && value ? wallClock(new Date(value)).slice(0, 16) : value;
  }
  state.release = query.get("release");
  $("#release").value = state.release || "";
}

// Drill-through: the complaints behind a figure, listed in the workspace, by the read API's
// filter names (the view's filters, and the clicked dimension).
function drill(extra) {
  const params = filterParams();
  for (const [name, value] of Object.entries(extra)) {
    if (value === null) params.delete(name); // e.g. `period`, when a bucket gives start and end
    else params.set(name, value);
  }
  location.assign(`/workspace?${params}`);
}

// ------------------------------------------------------------------ requests with the token
class SignedOut extends Error {
  constructor() { super("signed out"); this.name = "SignedOut"; }
}

class Superseded extends Error { // a later refresh was asked for: this answer is not drawn
  constructor() { super("superseded"); this.name = "Superseded"; }
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

// JSON from the API; `asked`: the refresh it is for (a later one supersedes it).
async function getJSON(path, params, asked = null) {
  const generation = state.generation;
  const response = await api(path, params, { headers: { accept: "application/json" } });
  const body = await response.json();
  if (generation !== state.generation) throw new SignedOut();
  if (asked !== null && asked !== state.asked) throw new Superseded();
  return body;
}

// Plotly's texts in the page's language and fonts; charts with no data say so.
function plot(id, data, layout = {}, onClick = null) {
  const node = document.getElementById(id);
  const base = {
    margin: { l: 44, r: 12, t: 8, b: 36 }, paper_bgcolor: "rgba(0,0,0,0)", plot_bgcolor: "rgba(0,0,0,0)",
    font: { family: FONTS, size: 12, color: "#39425a" },
    legend: { orientation: "h", y: -0.18, x: 0, yanchor: "top" }, hoverlabel: { font: { size: 12, family: FONTS } },
    xaxis: { gridcolor: "#eef1f6", automargin: true }, yaxis: { gridcolor: "#eef1f6", automargin: true, rangemode: "tozero" },
  };
  const merged = { ...base, ...layout, xaxis: { ...base.xaxis, ...(layout.xaxis || {}) }, yaxis: { ...base.yaxis, ...(layout.yaxis || {}) } };
  const empty = data.every((trace) => !(trace.x || trace.values || []).length);
  if (empty) {
    Plotly.purge(node);
    node.replaceChildren(el("div", { class: "empty" }, t("empty")));
    return;
  }
  if (node.querySelector(".empty")) node.replaceChildren();
  // Plotly's bundle holds no Chinese month names: dates on an axis as numbers in zh-CN.
  if (merged.xaxis.type === "date" && !merged.xaxis.tickformat) merged.xaxis.tickformat = I18N.lang === "zh-CN" ? "%m月%d日" : "%b %d";
  Plotly.react(node, data, merged, { displayModeBar: false, responsive: true });
  node.classList.toggle("drill", Boolean(onClick));
  if (typeof node.removeAllListeners === "function") node.removeAllListeners("plotly_click");
  if (onClick) node.on("plotly_click", (event) => event.points.length && onClick(event.points[0]));
}

// KPI tiles: [key, value, hint, tone, drill] (label: the text "kpi.<key>"; drill: the
// workspace's parameters for the complaints behind it).
function kpis(id, items) {
  $(`#${id}`).replaceChildren(...items.map(([key, value, hint, toneClass, behind]) =>
    el("div", { class: `kpi${behind ? " drill" : ""}`, dataset: { kpi: key },
      ...(behind ? { role: "link", tabindex: "0", onclick: () => drill(behind) } : {}) },
    el("div", { class: "label" }, t(`kpi.${key}`)),
    el("div", { class: `value ${toneClass || ""}` }, value),
    el("div", { class: "hint" }, hint || "\u00a0"))));
}

function table(id, columns, rows, onClick) {
  const target = document.getElementById(id);
  if (!rows.length) { target.replaceChildren(el("div", { class: "empty" }, t("nothing"))); return; }
  const head = el("tr", {}, columns.map(([key, , cls]) => el("th", { class: cls || "" }, t(key))));
  const body = rows.map((row) => el("tr", onClick ? { class: "click", onclick: () => onClick(row) } : {},
    columns.map(([, cell, cls]) => el("td", { class: cls || "" }, cell(row)))));
  target.replaceChildren(el("table", {}, el("thead", {}, head), el("tbody", {}, body)));
}

const chip = (kind, code, cls = code) => el("span", { class: `chip ${cls || ""}` }, label(kind, code));
const tone = (rate, target) => (rate === null ? "" : rate >= target ? "ok" : rate >= target - 0.15 ? "warn" : "bad");

// ---- partial buckets: a day, week or month the period covers only part of
const NEXT = { day: (d) => d.setUTCDate(d.getUTCDate() + 1), week: (d) => d.setUTCDate(d.getUTCDate() + 7),
  month: (d) => d.setUTCMonth(d.getUTCMonth() + 1) };

function isPartial(bucket, unit, window) {
  const first = `${String(bucket).slice(0, 10)}T00:00:00`;
  const after = new Date(`${first}Z`);
  NEXT[unit](after);
  const last = after.toISOString().slice(0, 19);
  return wallClock(new Date(window.start)) > first || wallClock(new Date(window.end)) < last;
}

// Bars of partial buckets hatched and lighter, named so in their hover; the card says so.
function partialBars(buckets, unit, window, noteId) {
  const partial = buckets.map((b) => isPartial(b, unit, window));
  const note = document.getElementById(noteId);
  if (note) note.textContent = partial.some(Boolean) ? t("partial.note", { unit: t(`unit.${unit}`) }) : "";
  return { partial, pattern: { shape: partial.map((p) => (p ? "/" : "")), fgopacity: 0.5, solidity: 0.4 },
    opacity: partial.map((p) => (p ? 0.55 : 1)), names: partial.map((p) => (p ? ` (${t("partial")})` : "")) };
}

// ------------------------------------------------------------------ supervisor
async function supervisor(asked) {
  const d = await getJSON("/dashboards/supervisor", filterParams(), asked);
  const c = d.counts;
  const fr = d.sla.first_response, res = d.sla.resolution, next = d.sla.next_response;
  const target = d.sla.target_attainment;
  // Complaints open now, whenever registered.
  const openNow = { period: "all", start: null, end: null };
  kpis("sup-kpis", [
    ["new_today", fmt.int(c.new_today), t("hint.in_period", { n: fmt.int(c.new_in_period) }), "", { period: "today", start: null, end: null }],
    ["resolved_today", fmt.int(c.resolved_today), t("hint.in_period", { n: fmt.int(c.resolved_in_period) }), "",
      { period: "today", start: null, end: null, dated_by: "resolved" }],
    ["pending", fmt.int(c.pending), t("hint.breached", { n: `${fmt.int(d.breached.length)}${d.breached.length >= 20 ? "+" : ""}` }), "",
      { ...openNow, status: "open" }],
    ["first_response", fmt.minutes(d.avg_first_response_business_minutes), t("hint.business")],
    ["sla_first_response", fmt.pct(fr.attainment), t("hint.met", { met: fmt.int(fr.met), counted: fmt.int(fr.counted) }),
      tone(fr.attainment, target), { ...openNow, queue: "breached" }],
    ["sla_resolution", fmt.pct(res.attainment), t("hint.met", { met: fmt.int(res.met), counted: fmt.int(res.counted) }),
      tone(res.attainment, target), { ...openNow, queue: "breached" }],
    ["sla_next_response", fmt.pct(next.attainment), t("hint.replies", { met: fmt.int(next.met), counted: fmt.int(next.counted) }),
      tone(next.attainment, target), { ...openNow, queue: "at_risk" }],
  ]);
  const days = d.daily.map((p) => p.bucket);
  const partDays = partialBars(days, "day", d.window, "sup-daily-note");
  plot("sup-daily", [
    { type: "bar", name: t("new"), x: days, y: d.daily.map((p) => p.new), customdata: partDays.names,
      hovertemplate: `%{x}%{customdata}: %{y}<extra>${t("new")}</extra>`,
      marker: { color: COLORS.accent, opacity: partDays.opacity, pattern: partDays.pattern } },
    { type: "scatter", mode: "lines+markers", name: t("resolved"), x: days, y: d.daily.map((p) => p.resolved),
      line: { color: COLORS.ok, width: 2 }, marker: { size: 5 } },
  ], { xaxis: { type: "date" }, yaxis: { tickformat: ",d" } },
  (point) => drill({ start: dayStart(point.x), end: dayStart(nextDay(point.x)), period: null,
    ...(point.curveNumber === 1 ? { dated_by: "resolved" } : {}) }));
  const statuses = [...d.by_status].sort((a, b) => a.count - b.count);
  plot("sup-status", [{ type: "bar", orientation: "h", x: statuses.map((s) => s.count), y: statuses.map((s) => label("status", s.key)),
    customdata: statuses.map((s) => s.key), marker: { color: COLORS.accent }, text: statuses.map((s) => fmt.int(s.count)), textposition: "auto",
    hovertemplate: "%{y}: %{x}<extra></extra>" }],
  { margin: { l: 130, r: 12, t: 4, b: 28 }, xaxis: { tickformat: ",d" } }, (point) => drill({ status: point.customdata }));
  // Agents only: complaints no agent holds yet are counted apart, not drawn as an agent.
  const unassigned = d.agent_load.filter((a) => !a.agent).reduce((n, a) => n + a.open, 0);
  $("#sup-unassigned").textContent = unassigned ? t("unassigned", { n: fmt.int(unassigned) }) : "";
  const load = d.agent_load.filter((a) => a.agent && a.open > 0).slice(0, 14).reverse();
  const who = load.map((a) => a.agent);
  const loadTrace = (key, x, color, extra) => ({ type: "bar", orientation: "h", name: t(key), y: who, x, customdata: load.map((a) => a.team),
    marker: { color }, hovertemplate: `%{y}: %{x}<extra>${t(key)}</extra>`, meta: extra });
  plot("sup-load", [
    loadTrace("working", load.map((a) => a.open - a.waiting - a.overdue), COLORS.accent, { status: "open" }),
    loadTrace("overdue", load.map((a) => a.overdue), COLORS.bad, { queue: "breached" }),
    loadTrace("waiting", load.map((a) => a.waiting), COLORS.grey, { status: "waiting_on_customer" }),
  ], { barmode: "stack", margin: { l: 150, r: 12, t: 8, b: 28 },
    xaxis: { tickformat: ",d", dtick: Math.max(1, Math.ceil(Math.max(1, ...load.map((a) => a.open)) / 8)) },
    yaxis: { dtick: 1, type: "category", automargin: true } },
  (point) => drill({ ...openNow, agent: point.y, team: point.customdata, ...point.data.meta }));
  const gauges = [["first_response", fr.attainment], ["next_response", next.attainment], ["resolution", res.attainment]];
  plot("sup-sla", [{ type: "bar", name: t("sup.sla"), x: gauges.map((g) => label("metric", g[0])), y: gauges.map((g) => (g[1] === null ? 0 : 100 * g[1])),
    customdata: gauges.map((g) => g[0]), text: gauges.map((g) => fmt.pct(g[1])), textposition: "auto", hovertemplate: "%{x}: %{text}<extra></extra>",
    marker: { color: gauges.map((g) => ({ ok: COLORS.ok, warn: COLORS.warn, bad: COLORS.bad, "": COLORS.grey })[tone(g[1], target)]) } }],
  { yaxis: { range: [0, 100], ticksuffix: "%" },
    shapes: [{ type: "line", xref: "paper", x0: 0, x1: 1, y0: 100 * target, y1: 100 * target, name: "target",
      line: { color: COLORS.bad, width: 2, dash: "dash" } }],
    annotations: [{ xref: "paper", x: 0, y: 100 * target, xanchor: "left", yanchor: "bottom", showarrow: false,
      text: t("target", { p: fmt.pct(target) }), font: { size: 11, color: COLORS.bad } }] },
  () => drill({ ...openNow, queue: "breached" }));
  const dueColumns = (late) => [
    ["col.complaint", (r) => r.title || r.complaint_id.slice(0, 8)],
    ["col.clock", (r) => label("metric", r.metric)],
    ["col.agent", (r) => r.agent || r.team || "–"],
    ["col.priority", (r) => chip("priority", r.priority)],
    [late ? "col.overdue" : "col.due_in", (r) => el("span", { class: late ? "late" : "soon" }, fmt.minutes(r.overdue_minutes)), "num"],
  ];
  // A row opens the complaint's audit view, for the roles that may see it.
  const openRow = mayView("audit") ? (r) => openComplaint(r.complaint_id) : null;
  table("sup-breached", dueColumns(true), d.breached, openRow);
  table("sup-risk", dueColumns(false), d.at_risk, openRow);
  alertsPanel("sup-alerts", d.open_alerts || []);
}

// Calendar days ("YYYY-MM-DD"): the next day or month, and the instant a day starts at the desk.
function nextDay(day) {
  const after = new Date(`${String(day).slice(0, 10)}T00:00:00Z`);
  NEXT.day(after);
  return after.toISOString().slice(0, 10);
}

function nextMonth(day) {
  const after = new Date(`${String(day).slice(0, 10)}T00:00:00Z`);
  NEXT.month(after);
  return after.toISOString().slice(0, 10);
}

const dayStart = (day) => fromWallClock(`${String(day).slice(0, 10)}T00:00`).toISOString();

// ------------------------------------------------------------------ product and quality
async function product(asked) {
  const params = filterParams();
  // A release date is the user's (kept in the address): none is invented.
  if (state.release) params.set("release", state.release);
  const d = await getJSON("/dashboards/product", params, asked);
  alertsPanel("prod-alerts", d.open_alerts || []);
  const top = d.by_product[0];
  const topCategory = d.top_categories[0];
  const rising = d.week_over_week.filter((g) => g.growth !== null && g.growth > 0.2);
  const trend = d.defect_trend;
  kpis("prod-kpis", [
    ["total", fmt.int(d.total), t("hint.registered"), "", {}],
    ["products", fmt.int(d.by_product.length), t("hint.with_complaints")],
    ["top_product", top ? top.key : "–", top ? t("hint.of_all", { p: fmt.pct(top.share) }) : "", "text", top ? { product: top.key } : null],
    ["top_category", topCategory ? label("category", topCategory.key) : "–",
      topCategory ? t("hint.of_all", { p: fmt.pct(topCategory.share) }) : "", "text", topCategory ? { category: topCategory.key } : null],
    ["rising", fmt.int(rising.length), rising.map((g) => g.key).join(", ") || t("hint.none"), rising.length ? "bad" : "ok"],
    ["defects_after", trend.release ? fmt.num(trend.daily_after) : "–",
      trend.release ? t("hint.before", { n: fmt.num(trend.daily_before) }) : t("hint.no_release"),
      trend.release && trend.daily_after > (trend.daily_before || 0) * 1.2 ? "bad" : "",
      trend.release ? { category: "product_defect" } : null],
  ]);
  const ranked = [...d.by_product].reverse();
  plot("prod-products", [{ type: "bar", orientation: "h", y: ranked.map((p) => p.key), x: ranked.map((p) => p.count),
    text: ranked.map((p) => `${fmt.int(p.count)}  (${fmt.pct(p.share)})`), textposition: "auto", marker: { color: COLORS.accent },
    hovertemplate: "%{y}: %{text}<extra></extra>" }],
  { margin: { l: 120, r: 12, t: 4, b: 28 }, xaxis: { tickformat: ",d" } }, (point) => drill({ product: point.y }));
  // The shares are of all complaints (as the KPI's): the rest is one slice of its own.
  const rest = 1 - d.top_categories.reduce((s, c) => s + c.share, 0);
  const slices = [...d.top_categories.map((c) => ({ key: c.key, name: label("category", c.key), count: c.count, share: c.share })),
    ...(rest > 1e-9 ? [{ key: null, name: t("prod.other_categories"), count: Math.round(rest * d.total), share: rest }] : [])];
  plot("prod-categories", [{ type: "pie", hole: 0.55, labels: slices.map((c) => c.name), values: slices.map((c) => c.share),
    customdata: slices.map((c) => c.key), text: slices.map((c) => fmt.pct(c.share)), textinfo: "text", sort: false,
    hovertemplate: "%{label}: %{text}<extra></extra>", marker: { colors: [...COLORS.series.slice(0, d.top_categories.length), "#d5dae3"] } }],
  { margin: { l: 8, r: 8, t: 8, b: 8 }, legend: { orientation: "v", x: 1, y: 0.5, yanchor: "middle" } },
  (point) => point.customdata && drill({ category: point.customdata }));
  const defects = $("#prod-defects");
  if (!trend.release) {
    Plotly.purge(defects);
    defects.replaceChildren(el("div", { class: "empty no-release" }, t("prod.no_release")));
  } else {
    const points = trend.points;
    plot("prod-defects", [{ type: "scatter", mode: "lines+markers", name: t("prod.defects.series"), x: points.map((p) => p.bucket),
      y: points.map((p) => p.count), line: { color: COLORS.bad, width: 2 }, fill: "tozeroy", fillcolor: "rgba(214,69,69,.08)" }],
    { xaxis: { type: "date" }, yaxis: { tickformat: ",d" }, showlegend: false,
      shapes: [{ type: "line", x0: trend.release, x1: trend.release, yref: "paper", y0: 0, y1: 1,
        line: { color: COLORS.grey, dash: "dot", width: 2 } }],
      annotations: [{ x: trend.release, yref: "paper", y: 1, text: t("prod.release"), showarrow: false,
        xanchor: "left", font: { size: 11, color: COLORS.grey } }] },
    (point) => drill({ category: "product_defect", start: dayStart(point.x), end: dayStart(nextDay(point.x)), period: null }));
  }
  const wow = d.week_over_week.filter((g) => g.growth !== null);
  plot("prod-wow", [{ type: "bar", x: wow.map((g) => g.key), y: wow.map((g) => 100 * g.growth),
    text: wow.map((g) => `${fmt.int(g.last_week)}→${fmt.int(g.this_week)}`), textposition: "outside", textangle: 0, cliponaxis: false,
    marker: { color: wow.map((g) => (g.growth > 0.2 ? COLORS.bad : g.growth > 0 ? COLORS.warn : COLORS.ok)) } }],
  { yaxis: { ticksuffix: "%", rangemode: "normal", zeroline: true } }, (point) => drill({ product: point.x }));
}

// ------------------------------------------------------------------ executive
async function executive(asked) {
  const params = filterParams();
  const [d, byPriority, byChannel] = await Promise.all([
    getJSON("/dashboards/executive", params, asked),
    getJSON("/trends", new URLSearchParams([...params, ["dimension", "priority"], ["granularity", "week"], ["limit", "1000"]]), asked),
    getJSON("/trends", new URLSearchParams([...params, ["dimension", "channel"], ["granularity", "month"], ["limit", "1000"]]), asked),
  ]);
  alertsPanel("exec-alerts", d.open_alerts || []);
  const last = d.satisfaction[d.satisfaction.length - 1];
  kpis("exec-kpis", [
    ["fcr", fmt.pct(d.first_contact_resolution_rate), t("hint.total", { n: fmt.int(d.total) }), "", {}],
    ["csat", last ? fmt.num(last.csat, 2) : "–", last ? t("hint.ratings", { n: fmt.int(last.responses) }) : t("hint.no_ratings")],
    ["nps", last ? fmt.num(last.nps, 0) : "–", t("hint.nps"), last && last.nps < 0 ? "bad" : ""],
    ["handling", d.avg_handling_hours === null ? "–" : I18N.duration(3600 * d.avg_handling_hours), t("hint.handling")],
    ["reopen", fmt.pct(d.reopen_rate), t("hint.reopen"), d.reopen_rate > 0.1 ? "bad" : ""],
    ["repeat", fmt.pct(d.repeat_rate), t("hint.repeat")],
  ]);
  const s = d.satisfaction;
  const weeks = partialBars(s.map((p) => p.bucket), "week", d.window, "exec-sat-note");
  plot("exec-sat", [
    { type: "scatter", mode: "lines+markers", name: "CSAT", x: s.map((p) => p.bucket), y: s.map((p) => p.csat), line: { color: COLORS.accent, width: 3 },
      marker: { symbol: weeks.partial.map((p) => (p ? "circle-open" : "circle")), size: 8 }, customdata: weeks.names,
      hovertemplate: "%{x}%{customdata}: %{y:.2f}<extra>CSAT</extra>" },
    { type: "scatter", mode: "lines+markers", name: "NPS", x: s.map((p) => p.bucket), y: s.map((p) => p.nps), yaxis: "y2", line: { color: COLORS.ok, width: 2, dash: "dot" },
      marker: { symbol: weeks.partial.map((p) => (p ? "circle-open" : "circle")), size: 7 } },
  ], { xaxis: { type: "date" }, yaxis: { range: [1, 5], title: { text: "CSAT" }, rangemode: "normal" },
    yaxis2: { overlaying: "y", side: "right", range: [-100, 100], title: { text: "NPS" }, showgrid: false },
    margin: { l: 50, r: 50, t: 8, b: 36 } });
  const months = d.high_priority_monthly.map((p) => p.bucket);
  const partMonths = partialBars(months, "month", d.window, "exec-high-note");
  const monthName = (m) => new Intl.DateTimeFormat(I18N.lang, { timeZone: "UTC", year: "numeric", month: "short" }).format(new Date(`${String(m).slice(0, 10)}T00:00:00Z`));
  plot("exec-high", [{ type: "bar", x: months.map((m, i) => `${monthName(m)}${partMonths.names[i]}`), y: d.high_priority_monthly.map((p) => p.count),
    customdata: months, text: d.high_priority_monthly.map((p) => fmt.int(p.count)), textposition: "auto",
    marker: { color: COLORS.bad, opacity: partMonths.opacity, pattern: partMonths.pattern } }],
  { xaxis: { type: "category" }, yaxis: { tickformat: ",d" } },
  (point) => drill({ start: dayStart(point.customdata), end: dayStart(nextMonth(point.customdata)), period: null }));
  const order = ["urgent", "high", "medium", "low", null];
  const prioColors = { urgent: COLORS.bad, high: COLORS.warn, medium: COLORS.accent, low: COLORS.grey };
  const allWeeks = [...new Set(byPriority.items.map((r) => r.bucket))].sort();
  const partWeeks = partialBars(allWeeks, "week", d.window, "exec-priority-note");
  const weekPartial = Object.fromEntries(allWeeks.map((w, i) => [w, partWeeks.partial[i]]));
  plot("exec-priority", order.map((key) => {
    const rows = byPriority.items.filter((r) => r.key === key);
    return { type: "bar", name: key ? label("priority", key) : t("not_triaged"), x: rows.map((r) => r.bucket), y: rows.map((r) => r.count),
      marker: { color: prioColors[key] || "#c9cfdb", opacity: rows.map((r) => (weekPartial[r.bucket] ? 0.55 : 1)),
        pattern: { shape: rows.map((r) => (weekPartial[r.bucket] ? "/" : "")), fgopacity: 0.5, solidity: 0.4 } },
      customdata: rows.map((r) => (weekPartial[r.bucket] ? ` (${t("partial")})` : "")),
      hovertemplate: `%{x}%{customdata}: %{y}<extra>${key ? label("priority", key) : t("not_triaged")}</extra>` };
  }).filter((trace) => trace.x.length), { barmode: "stack", xaxis: { type: "date" }, yaxis: { tickformat: ",d" } });
  const channels = {};
  for (const r of byChannel.items) channels[r.key] = (channels[r.key] || 0) + r.count;
  const rankedChannels = Object.entries(channels).sort((a, b) => a[1] - b[1]);
  plot("exec-channel", [{ type: "bar", orientation: "h", y: rankedChannels.map((c) => label("channel", c[0])), x: rankedChannels.map((c) => c[1]),
    customdata: rankedChannels.map((c) => c[0]), text: rankedChannels.map((c) => fmt.int(c[1])), textposition: "auto", marker: { color: COLORS.accent },
    hovertemplate: "%{y}: %{x}<extra></extra>" }],
  { margin: { l: 100, r: 12, t: 4, b: 28 }, xaxis: { tickformat: ",d" } }, (point) => drill({ channel: point.customdata }));
}

// ------------------------------------------------------------------ alerts (on every dashboard)
// The active alerts of the view's audience, newest first (at most 20: the API's limit),
// titled in the page's language; "Acknowledge" posts to the command API (same origin,
// with the token) for the roles that may.
const DASHBOARD_ALERTS = 20;

function alertSubject(a) {
  const text = a.subject_type === "complaint" ? a.subject.slice(0, 8) : a.subject;
  const named = `${label("subject_type", a.subject_type)} ${text}`;
  if (!a.complaint_id || !mayView("audit")) return named;
  return el("a", { href: `?view=audit&complaint=${a.complaint_id}`, onclick: (e) => { e.preventDefault(); openComplaint(a.complaint_id); } }, named);
}

function alertAction(a) {
  if (a.status === "open" && state.acknowledged.has(a.alert_id)) return el("span", { class: "acked" }, t("acknowledged"));
  if (a.status !== "open" || !mayDo("acknowledge") || $("#filters input[name=as_of]").value) {
    return a.acknowledged_by ? el("span", { class: "muted" }, a.acknowledged_by) : "";
  }
  const button = el("button", { type: "button", class: "ack", dataset: { alert: a.alert_id } }, t("acknowledge"));
  button.addEventListener("click", () => acknowledge(a.alert_id, button));
  return button;
}

function alertsPanel(id, alerts) {
  const target = document.getElementById(id);
  const count = $(".alert-count", target.closest(".card"));
  count.textContent = alerts.length ? `${alerts.length}${alerts.length >= DASHBOARD_ALERTS ? "+" : ""}` : "";
  if (!alerts.length) {
    target.replaceChildren(el("div", { class: "empty" }, t("alerts.none")));
    return;
  }
  const head = el("tr", {}, ["alerts.severity", "alerts.alert", "alerts.subject", "alerts.raised", "alerts.status"]
    .map((key) => el("th", {}, t(key))), el("th"));
  const title = (a) => (I18N.lang === "zh-CN" ? a.title_zh || a.title_en : a.title_en || a.title_zh) || a.rule;
  const rows = alerts.map((a) => el("tr", { class: `alert sev-${a.severity}`, dataset: { alert: a.alert_id } },
    el("td", {}, chip("alert_severity", a.severity, `sev-${a.severity}`)),
    el("td", { class: "alert-title", title: a.rule }, title(a)),
    el("td", {}, alertSubject(a)),
    el("td", {}, fmt.time(a.raised_at)),
    el("td", {}, chip("alert_status", a.status, `alert-${a.status}`)),
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
    button.replaceWith(el("span", { class: "acked" }, t("acknowledged")));
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
      ? t("ack.denied", { detail: error.detail }) : t("ack.failed", { detail: error.message });
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
  $("#search-note").textContent = t("audit.found", { n: `${fmt.int(d.items.length)}${d.items.length === 100 ? "+" : ""}` });
  table("results", [
    ["col.registered", (r) => fmt.time(r.registered_at)],
    ["col.title", (r) => r.title],
    ["col.customer", (r) => r.customer_id],
    ["col.product", (r) => r.product || "–"],
  ], d.items, (r) => openComplaint(r.complaint_id));
}

function openComplaint(id) {
  if (!mayView("audit")) return;
  state.complaint = id;
  state.selectedVersion = null;
  show("audit");
}

// A field's value as people read it: codes by their names, instants in the desk's zone.
const CODED = { status: "status", priority: "priority", category: "category", severity: "severity", impact: "impact",
  channel: "channel", tier: "tier" };
const INSTANT = /^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}/; // the state's instants: "2026-11-20 06:06:58.053965+00:00"

function fieldValue(name, value) {
  let text;
  if (value === null || value === undefined || value === "") text = "–";
  else if (CODED[name] && typeof value === "string") text = label(CODED[name], value);
  else if (typeof value === "string" && INSTANT.test(value)) text = fmt.time(value.replace(" ", "T"));
  else if (typeof value === "number") text = I18N.number(value);
  else text = typeof value === "object" ? JSON.stringify(value) : String(value);
  return el("span", { class: "val", title: typeof value === "string" ? value : "" }, text);
}

const fieldName = (name) => el("span", { title: name }, label("field", name));

async function complaintView() {
  if (!state.complaint) return;
  const id = state.complaint;
  const [line, h, sla] = await Promise.all([getJSON(`/audit/complaints/${id}/timeline`),
    getJSON(`/audit/complaints/${id}/history`), getJSON(`/audit/complaints/${id}/sla`)]);
  $("#complaint").hidden = false;
  $("#complaint-title").textContent = line.title || line.complaint_id;
  $("#complaint-meta").replaceChildren(
    el("span", {}, `${t("audit.status")} `, chip("status", line.status)),
    el("span", {}, t("audit.fr_due", { time: fmt.time(line.first_response_due) })),
    el("span", {}, t("audit.res_due", { time: fmt.time(line.resolution_due) })),
    el("span", {}, el("code", {}, line.complaint_id)));
  // Each SLA clock with its whole life (a fulfilment undone by a reopening stays in it).
  const clockTone = { warning: "at_risk", fulfilled: "met" };
  table("clocks", [
    ["col.clock", (k) => `${label("metric", k.metric)}${k.metric === "next_response" ? ` #${k.cycle}` : ""}`],
    ["col.status", (k) => chip("clock_status", k.status, clockTone[k.status] || k.status)],
    ["col.due", (k) => fmt.time(k.due_at)],
    ["col.life", (k) => el("span", { class: "life" }, k.life.map((m) => `${label("clock_event", m.event)} ${fmt.time(m.at)}`).join(" · "))],
  ], sla.clocks);
  const selected = state.selectedVersion || line.items[line.items.length - 1].version;
  $("#timeline").replaceChildren(...line.items.map((item) => el("li",
    { class: item.version === selected ? "selected" : "", dataset: { version: item.version },
      onclick: () => { state.selectedVersion = item.version; remember(); complaintView(); } },
    el("div", { class: "when" }, `v${item.version} · ${fmt.time(item.at)} · +${fmt.minutes(item.since_registration_minutes)}`),
    el("div", { class: "what" }, I18N.lang === "zh-CN" ? item.summary_zh : item.summary),
    el("div", { class: "who" }, `${t("audit.by", { actor: item.actor })} → `, chip("status", item.status)))));
  const entry = h.events.find((e) => e.version === selected);
  $("#diff").hidden = false;
  $("#diff-title").textContent = t("audit.changes", { version: entry.version, event: label("event_type", entry.event_type), actor: entry.actor });
  table("diff-table", [
    ["col.field", (r) => fieldName(r[0])],
    ["col.before", (r) => fieldValue(r[0], r[1].before), "before"],
    ["col.after", (r) => fieldValue(r[0], r[1].after), "after"],
  ], Object.entries(entry.changes));
  // What the complaint looked like right after this event, rebuilt by the aggregate's code.
  const then = await getJSON(`/audit/complaints/${id}/state`, new URLSearchParams({ version: selected }));
  $("#state-title").textContent = t("audit.then", { version: then.version });
  const fields = ["status", "priority", "category", "severity", "team", "agent", "first_response_due",
    "resolution_due", "first_responded_at", "resolved_at", "handovers", "reopen_count", "escalation_level"];
  table("state-table", [["col.field", fieldName], ["col.value", (r) => fieldValue(r, then.state[r])]],
    fields.filter((f) => f in then.state));
}

async function audit() {
  if (!$("#results table") && !$("#results .empty")) await search();
  await complaintView();
}

// ------------------------------------------------------------------ signing in
// The session (token, who, expiry) lives in sessionStorage: this tab only, gone when it
// closes; never localStorage (which keeps only the chosen language). The authorization request in flight (PKCE verifier, state,
// the view to return to) is kept there too, until the provider sends the browser back.
const SESSION_KEY = "complaints.session";
const OIDC_KEY = "complaints.oidc";
const auth = { config: null, rules: {}, session: null };

// A text of the sign-in's, in both languages: the stylesheet shows the page's language's.
function bi(en, zh) {
  return el("span", { class: "bi" }, el("span", { lang: "en" }, en), el("span", { lang: "zh-CN" }, zh));
}

const roleLabel = (role) => label("role", role);
const teamLabel = (team) => t("team.named", { team });

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
  const request = { verifier, state: randomText(24), search: location.search };
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
  history.replaceState(null, "", `${location.pathname}${request ? request.search : ""}`); // the code is used once
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
// Roles that act on complaints (register, handle, triage, assign) have the agent workspace too.
const ACTORS = new Set(["intake", "agent", "supervisor", "department_head"]);

function enter() {
  const user = auth.session.user;
  $("#signin").hidden = true;
  for (const id of ["signed-in", "tabs", "live-box", "who"]) document.getElementById(id).hidden = false;
  $("#workspace-link").hidden = !user.roles.some((role) => ACTORS.has(role));
  showWho();
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
  fromAddress();
}

function showWho() {
  const user = auth.session.user;
  $("#who-name").textContent = user.name;
  $("#who-role").textContent = user.roles.length ? user.roles.map(roleLabel).join(", ") : t("no_role");
  $("#who-team").textContent = user.team ? teamLabel(user.team) : "";
  $("#who-team").hidden = !user.team;
}

// The view the address describes (on entering, and on back and forward).
function fromAddress() {
  const query = new URLSearchParams(location.search);
  restoreFilters();
  const views = allowedViews();
  const view = query.get("view");
  state.complaint = view === "audit" && views.includes("audit") ? query.get("complaint") : null;
  state.selectedVersion = state.complaint && query.get("version") ? Number(query.get("version")) : null;
  show(views.includes(view) ? view : homeView(), { push: false });
}

// A team-bound user's team filter is its team, fixed (the server forces it anyway).
function fixTeam() {
  const select = $("#filters select[name=team]");
  const box = select.closest("label");
  if (teamBound() && auth.session.user.team) {
    const team = auth.session.user.team;
    if (![...select.options].some((option) => option.value === team)) select.append(el("option", { value: team }, team));
    select.value = team;
    select.disabled = true;
    select.title = t("team.fixed");
    box.classList.add("fixed");
  } else {
    select.disabled = false;
    select.title = "";
    box.classList.remove("fixed");
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
  for (const name of ["team", "product", "category", "region"]) {
    $(`#filters select[name=${name}]`).replaceChildren(el("option", { value: "", "data-i18n": "all" }, t("all")));
  }
  fixTeam();
  Object.assign(state, { view: null, complaint: null, selectedVersion: null, release: null, acknowledged: new Set() });
  $("#release").value = "";
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

// ------------------------------------------------------------------ the page's language
// The static texts carry their keys (data-i18n, data-i18n-title, data-i18n-placeholder);
// codes in drop-downs (data-kind) are named by I18N.label.
function translatePage() {
  for (const node of $$("[data-i18n]")) node.textContent = t(node.dataset.i18n);
  for (const node of $$("[data-i18n-title]")) node.title = t(node.dataset.i18nTitle);
  for (const node of $$("[data-i18n-placeholder]")) node.placeholder = t(node.dataset.i18nPlaceholder);
  for (const select of $$("select[data-kind]")) {
    for (const option of select.options) if (option.value) option.textContent = label(select.dataset.kind, option.value);
  }
  if (auth.session) {
    showWho();
    fixTeam();
  }
}

// ------------------------------------------------------------------ wiring
const VIEWS = { supervisor, product, executive, audit };

// Shows `view`; `push`: a new entry in the history (not when the address asked for it).
function show(view, { push = true } = {}) {
  const views = allowedViews();
  if (!views.includes(view)) view = views[0];
  if (!view) return;
  state.view = view;
  for (const tab of $$(".tabs button")) tab.classList.toggle("active", tab.dataset.view === view);
  for (const section of $$(".view")) section.hidden = section.id !== `view-${view}`;
  $("#filters").classList.toggle("audit", view === "audit");
  if (push) remember();
  else history.replaceState(null, "", viewAddress());
  refresh();
}

// Draws the view with the filters as they are now. Every call asks anew: an answer to an
// earlier call, arriving after a later one was asked, is not drawn (`asked`).
async function refresh() {
  // Only a view the signed-in role may open (a timer or a change may outlive the user who chose it).
  if (!auth.session || !state.view || !allowedViews().includes(state.view)) return;
  state.asked += 1;
  const asked = state.asked;
  const generation = state.generation;
  const view = state.view;
  const status = $("#status");
  status.dataset.busy = "1";
  try {
    await VIEWS[view](asked);
    if (generation !== state.generation || asked !== state.asked) return;
    document.getElementById(`view-${view}`).classList.remove("is-denied");
    state.refreshes += 1;
    const asOf = $("#filters input[name=as_of]").value;
    status.textContent = asOf ? t("as_of.frozen", { time: fmt.time(fromWallClock(asOf)) })
      : t("updated", { time: new Intl.DateTimeFormat(I18N.lang, { timeZone: I18N.timeZone, timeStyle: "medium" }).format(new Date()) });
    status.dataset.refreshes = state.refreshes;
    status.classList.remove("error");
  } catch (error) {
    if (error instanceof SignedOut || error instanceof Superseded || generation !== state.generation || asked !== state.asked) return;
    if (error instanceof HttpError && error.status === 403) {
      deny(view, error.detail);
      status.textContent = t("status.denied");
    } else {
      status.textContent = t("status.error", { message: error.message });
    }
    status.classList.add("error");
  } finally {
    if (asked === state.asked) delete status.dataset.busy;
  }
}

// A change of filter: into the address (a new history entry), and the figures anew.
function filtersChanged() {
  remember();
  refresh();
}

// Export: fetched with the token (a plain link would send none), saved from a Blob; the
// filters, "As of" among them, as the figures shown.
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
      ? t("export.denied", { detail: error.detail }) : t("export.failed", { detail: error.message });
    status.classList.add("error");
  } finally {
    button.disabled = false;
  }
}

async function loadOptions() {
  try {
    const d = await getJSON("/dimensions");
    const query = new URLSearchParams(location.search);
    for (const name of ["team", "product", "category", "region"]) {
      const select = $(`#filters select[name=${name}]`);
      const current = select.value || query.get(name) || "";
      select.replaceChildren(el("option", { value: "", "data-i18n": "all" }, t("all")),
        ...(d[name] || []).map((v) => el("option", { value: v }, select.dataset.kind ? label(select.dataset.kind, v) : v)));
      if (current && ![...select.options].some((o) => o.value === current)) select.append(el("option", { value: current }, current));
      select.value = current;
    }
    fixTeam();
  } catch (_) { /* signed out meanwhile, or the read node still starting: the drop-downs stay at "All" */ }
}

function wire() {
  for (const tab of $$(".tabs button")) tab.addEventListener("click", () => show(tab.dataset.view));
  for (const field of $$("#filters select, #filters input")) field.addEventListener("change", filtersChanged);
  $("#release").addEventListener("change", () => {
    state.release = $("#release").value || null;
    filtersChanged();
  });
  $("#reset").addEventListener("click", () => {
    for (const field of $$("#filters select, #filters input")) {
      if (!field.disabled) field.value = field.name === "period" ? "30d" : "";
    }
    filtersChanged();
  });
  $("#export").addEventListener("click", exportView);
  $("#search").addEventListener("submit", (e) => search(e).catch((err) => {
    if (err instanceof SignedOut) return;
    if (err instanceof HttpError && err.status === 403) deny("audit", err.detail);
    else $("#search-note").textContent = err.message;
  }));
  $("#sign-out").addEventListener("click", () => signOut(null, { byUser: true }));
  $("#oidc-sign-in").addEventListener("click", oidcSignIn);
  $("#lang").replaceChildren(I18N.switcher());
  window.addEventListener("languagechange", () => {
    const query = new URLSearchParams(location.search); // an address that names the language names the new one
    if (query.has("lang")) {
      query.set("lang", I18N.lang);
      history.replaceState(null, "", `${location.pathname}?${query}`);
    }
    translatePage();
    if (auth.session) refresh();
    else if (!$("#signin").hidden && auth.config && auth.config.mode === "development") loadDevUsers();
  });
  window.addEventListener("popstate", () => {
    if (auth.session && allowedViews().length) fromAddress();
  });
  setInterval(() => {
    const asOf = $("#filters input[name=as_of]").value;
    // A poll waits for an answer still on its way (a change of filter never waits).
    if (auth.session && $("#live").checked && !document.hidden && !asOf && !$("#status").dataset.busy) refresh();
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
    [auth.config, auth.rules] = await Promise.all([loadPublic("/auth/config"), loadPublic("/static/access.json"), I18N.ready]);
  } catch (error) {
    showSignIn();
    signInError("Signing in is not available here", "此处无法登录", error.message);
    return;
  }
  translatePage();
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
