// The agents' workspace: queues from the read API (/queue), one complaint with its SLA clocks
// and timeline, the commands its status and the user's role allow (the command API says
// which: `allowed_actions`), and an intake form. The view lives in the URL (queue, sort,
// filters, the open complaint), so a link reproduces it and back and forward work.
//
// Signed in through the dashboard: the session (token, who) is the one it keeps in this
// tab's sessionStorage. Every command carries the version the user saw
// (`expected_version`): a complaint changed meanwhile is a 409, shown as "changed by
// someone else" with a reload; the page never overwrites.
"use strict";

const SESSION_KEY = "complaints.session";
const SAVED_KEY = "complaints.workspace.saved";
const LIVE_MS = 3000;
const PAGE = 50;
// The read API's filters a list may carry (a dashboard's drill-through sets them too).
const FILTERS = ["status", "category", "severity", "channel", "product", "team", "agent", "region", "tier",
  "period", "start", "end", "dated_by"];
const QUEUES = ["mine", "team", "unassigned", "breached", "at_risk", "all"];

I18N.add({
  brand: ["Workspace", "工作台"], dashboard: ["Dashboard", "仪表盘"], sign_out: ["Sign out", "退出登录"],
  "signin.title": ["Sign in first", "请先登录"], "signin.how": ["The workspace uses the dashboard's sign-in.",
    "工作台使用仪表盘的登录。"], "signin.go": ["Sign in", "登录"],
  "queue.mine": ["Mine", "我的"], "queue.team": ["My team", "本组"], "queue.unassigned": ["Unassigned", "待领取"],
  "queue.breached": ["Breached", "已超时"], "queue.at_risk": ["At risk", "即将超时"], "queue.all": ["All", "全部"],
  sort: ["Sort by", "排序"], "sort.due": ["Due time", "到期时间"], "sort.priority": ["Priority", "优先级"],
  "sort.age": ["Age", "时长"], order: ["Order", "顺序"], "order.default": ["Most urgent first", "最紧急在前"],
  "order.asc": ["Ascending", "升序"], "order.desc": ["Descending", "降序"],
  "field.status": ["Status", "状态"], "field.category": ["Category", "类别"], "field.severity": ["Severity", "严重程度"],
  "field.channel": ["Channel", "渠道"], "field.product": ["Product", "产品"], "field.priority": ["Priority", "优先级"],
  "field.region": ["Region", "地区"], "field.tier": ["Tier", "客户等级"], "field.team": ["Team", "组"],
  "field.agent": ["Agent", "处理人"], "field.version": ["Version", "版本"], "field.customer": ["Customer", "客户"],
  "field.registered_at": ["Registered", "登记时间"], "field.impact": ["Impact", "影响范围"],
  "field.description": ["Description", "描述"], "field.escalation": ["Escalation level", "升级级别"],
  any: ["(any)", "（全部）"], "status.open": ["(open)", "（未结）"], saved: ["Saved filters", "已存筛选"], "saved.none": ["(none)", "（无）"],
  "saved.save": ["Save these filters", "保存当前筛选"], "saved.name": ["Name for these filters:", "筛选名称："],
  "filters.clear": ["Clear", "清除"], "intake.open": ["New complaint", "登记投诉"],
  "col.title": ["Complaint", "投诉"], "col.due": ["Next due", "最近到期"], "col.age": ["Age", "时长"],
  "col.owner": ["Team / agent", "组 / 处理人"], "page.prev": ["Previous", "上一页"], "page.next": ["Next", "下一页"],
  "page.info": ["{from}–{to} of {total}", "第 {from}–{to} 条，共 {total} 条"],
  "queue.empty": ["Nothing here.", "暂无投诉。"], "live.at": ["Updated {time}", "更新于 {time}"],
  "live.error": ["Not updated: {error}", "未能更新：{error}"], "drill": ["The complaints behind the figure: {what}",
    "该数字背后的投诉：{what}"],
  breached: ["breached", "已超时"], at_risk: ["at risk", "即将超时"], unassigned: ["(unassigned)", "（未分派）"],
  "conflict.text": ["Changed by someone else since you opened it: nothing was overwritten. Reload to see the change.",
    "此投诉在您打开后已被他人修改，未覆盖任何内容。请重新加载查看最新内容。"],
  "conflict.reload": ["Reload", "重新加载"], actions: ["Actions", "操作"], "actions.none": ["Nothing you may do now.",
    "当前没有您可执行的操作。"], clocks: ["SLA clocks", "SLA 时钟"], "clock.metric": ["Clock", "时钟"],
  "clock.status": ["State", "状态"], "clock.due": ["Due", "到期"], "clock.stopped": ["Stopped", "停止"],
  timeline: ["Timeline", "处理记录"], "timeline.hidden": ["Your role does not see the timeline.", "您的角色无权查看处理记录。"],
  submit: ["Submit", "提交"], cancel: ["Cancel", "取消"], done: ["Done: {action}, now version {version}.",
    "已完成：{action}，当前版本 {version}。"],
  "intake.title": ["Register a complaint", "登记投诉"], "intake.customer_id": ["Customer id", "客户编号"],
  "intake.name": ["Customer name", "客户姓名"], "intake.contact": ["Phone or e-mail", "电话或邮箱"],
  "intake.subject": ["Title", "标题"], "intake.description": ["Description", "描述"], "intake.submit": ["Register", "登记"],
  "error.http": ["{status}: {detail}", "{status}：{detail}"], "error.network": ["The server did not answer: {detail}",
    "服务器未响应：{detail}"],
  // The commands, as buttons.
  "action.triage": ["Triage", "分类定级"], "action.assign": ["Assign", "分派"], "action.take": ["Take it", "领取"],
  "action.add_note": ["Add note", "添加备注"], "action.record_contact": ["Record contact", "记录联系"],
  "action.wait_on_customer": ["Wait on customer", "等待客户"], "action.customer_replied": ["Customer replied", "客户已回复"],
  "action.propose_resolution": ["Propose resolution", "提出方案"], "action.resolve": ["Resolve", "解决"],
  "action.verify": ["Record verification", "记录客户确认"], "action.close": ["Close", "关闭"], "action.reopen": ["Reopen", "重新打开"],
  "action.escalate": ["Escalate", "升级"], "action.withdraw": ["Withdraw", "撤回"], "action.mark_duplicate": ["Mark duplicate", "标记重复"],
  // Their fields.
  "input.category": ["Category", "类别"], "input.severity": ["Severity", "严重程度"], "input.impact": ["Impact", "影响范围"],
  "input.team": ["Team", "组"], "input.agent": ["Agent (user id)", "处理人（用户名）"], "input.text": ["Note", "备注"],
  "input.direction": ["Direction", "方向"], "input.channel": ["Channel", "渠道"], "input.summary": ["Summary", "摘要"],
  "input.visibility": ["Visibility", "可见范围"], "input.reason": ["Reason", "原因"], "input.proposal": ["Proposal", "方案"],
  "input.resolution": ["Resolution", "解决方案"], "input.csat": ["Satisfaction (1–5)", "满意度（1–5）"],
  "input.level": ["Level (1–3)", "级别（1–3）"], "input.duplicate_of": ["Original complaint id", "原投诉编号"],
  "option.inbound": ["inbound", "客户来电/来信"], "option.outbound": ["outbound", "我方联系客户"],
  "option.public": ["public", "客户可见"], "option.internal": ["internal", "仅内部"],
  "action.update_fields": ["Fields", "自定义字段"], "action.add_tag": ["Add tag", "添加标签"],
  "action.remove_tag": ["Remove tag", "移除标签"], tags: ["Tags", "标签"], "tags.new": ["new tag", "新标签"],
  "tags.add": ["Add", "添加"], "tags.remove": ["Remove this tag", "移除此标签"],
  "fields.none": ["No custom field applies to this complaint.", "此投诉没有适用的自定义字段。"],
  yes: ["yes", "是"], no: ["no", "否"],
});

// Each command: its path under /complaints/{id}/ and its fields (`codes`: options from the vocabulary).
const ACTIONS = {
  triage: { path: "triage", fields: [{ name: "category", codes: "category" }, { name: "severity", codes: "severity" },
    { name: "impact", codes: "impact" }] },
  assign: { path: "assign", fields: [{ name: "team" }, { name: "agent", optional: true }] },
  add_note: { path: "notes", fields: [{ name: "text", long: true }] },
  record_contact: { path: "contacts", fields: [{ name: "direction", options: ["outbound", "inbound"] },
    { name: "channel", codes: "channel" }, { name: "visibility", options: ["public", "internal"] },
    { name: "summary", long: true }] },
  wait_on_customer: { path: "wait-on-customer", fields: [{ name: "reason", long: true }] },
  customer_replied: { path: "customer-replied", fields: [{ name: "summary", long: true }] },
  propose_resolution: { path: "propose-resolution", fields: [{ name: "proposal", long: true }] },
  resolve: { path: "resolve", fields: [{ name: "resolution", long: true }] },
  verify: { path: "verify", fields: [{ name: "csat", number: [1, 5] }] },
  close: { path: "close", fields: [] },
  reopen: { path: "reopen", fields: [{ name: "reason", long: true }] },
  escalate: { path: "escalate", fields: [{ name: "level", number: [1, 3] }, { name: "reason", long: true }] },
  withdraw: { path: "withdraw", fields: [{ name: "reason", long: true }] },
  mark_duplicate: { path: "mark-duplicate", fields: [{ name: "duplicate_of" }] },
  // Custom fields: a form made from the desk's field definitions (GET /field-definitions).
  update_fields: { path: "update-fields", custom: true },
};
// Tags: added from the complaint's tag line, removed by the x on each.
const TAG_PATHS = { add_tag: "tags", remove_tag: "remove-tag" };
let definitions = { fields: [] }; // the desk's custom fields, loaded once signed in

const $ = (id) => document.getElementById(id);
const t = (key, vars) => I18N.t(key, vars);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value === true ? "" : value);
  }
  node.append(...children.filter((child) => child !== null && child !== undefined));
  return node;
}

// ------------------------------------------------------------------ session and requests
const session = (() => {
  try {
    const s = JSON.parse(sessionStorage.getItem(SESSION_KEY) || "null");
    return s && s.token && (!s.expires_at || s.expires_at > Date.now()) ? s : null;
  } catch (_) {
    return null;
  }
})();
// The token's subject: who "mine" is, and whom "take" assigns to (the API records the same).
const subject = session ? JSON.parse(atob(session.token.split(".")[1].replaceAll("-", "+").replaceAll("_", "/"))).sub : null;

class HttpError extends Error {
  constructor(status, body) {
    const detail = body && body.detail;
    super(typeof detail === "string" ? detail : Array.isArray(detail)
      ? detail.map((d) => `${(d.loc || []).slice(1).join(".")}: ${d.msg}`).join("; ") : String(status));
    this.status = status;
    this.body = body || {};
  }
}

async function api(path, { params, body } = {}) {
  const url = params && [...params].length ? `${path}?${params}` : path;
  const init = { headers: { authorization: `Bearer ${session.token}`, "accept-language": I18N.lang } };
  if (body !== undefined) {
    init.method = "POST";
    init.headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(url, init);
  if (response.status === 401) {
    sessionStorage.removeItem(SESSION_KEY);
    location.assign(`/dashboard`);
    throw new HttpError(401, {});
  }
  let answer = null;
  try { answer = await response.json(); } catch (_) { /* no JSON body */ }
  if (!response.ok) throw new HttpError(response.status, answer);
  return answer;
}

// ------------------------------------------------------------------ the view, in the URL
function view() {
  const q = new URLSearchParams(location.search);
  // A link with filters and no queue (a dashboard's drill-through) lists what they select.
  const queue = QUEUES.includes(q.get("queue")) ? q.get("queue") : FILTERS.some((key) => q.has(key)) ? "all" : "mine";
  return { q, queue, complaint: q.get("complaint"), intake: q.get("intake") === "1" };
}

function go(changes, { replace = false } = {}) {
  const q = new URLSearchParams(location.search);
  for (const [key, value] of Object.entries(changes)) {
    if (value === null || value === undefined || value === "") q.delete(key);
    else q.set(key, value);
  }
  const url = `${location.pathname}?${q}`;
  if (replace) history.replaceState(null, "", url);
  else history.pushState(null, "", url);
  render();
}

function queueParams(v) {
  const params = new URLSearchParams({ queue: v.queue, limit: String(PAGE) });
  for (const key of ["sort", "order", "offset", ...FILTERS]) if (v.q.get(key)) params.set(key, v.q.get(key));
  return params;
}

// ------------------------------------------------------------------ the queue
let shownQueue = null; // what the list shows: its request, so a late answer never replaces a newer one

async function loadQueue() {
  const v = view();
  const params = queueParams(v);
  const asked = params.toString();
  shownQueue = asked;
  try {
    const answer = await api("/queue", { params });
    if (shownQueue !== asked) return;
    drawQueue(v, answer);
    $("live-status").textContent = t("live.at", { time: I18N.dateTime(new Date().toISOString()) });
  } catch (error) {
    if (shownQueue === asked) $("live-status").textContent = t("live.error", { error: error.message });
  }
}

function drawQueue(v, answer) {
  const body = $("queue").tBodies[0];
  body.replaceChildren(...answer.rows.map((row) => el("tr", {
    dataset: { complaint: row.complaint_id, version: row.version }, class: row.complaint_id === v.complaint ? "selected" : null,
    onclick: () => go({ complaint: row.complaint_id, intake: null }),
  },
  el("td", {}, el("a", { href: `?${withParam("complaint", row.complaint_id)}`, onclick: (e) => e.preventDefault(),
    text: row.title || row.complaint_id.slice(0, 8) }),
  el("div", { class: "muted small", text: [I18N.label("category", row.category), row.product].filter((x) => x && x !== "–").join(" · ") })),
  el("td", { text: I18N.label("status", row.status) }),
  el("td", {}, el("span", { class: `priority p-${row.priority || "none"}`, text: I18N.label("priority", row.priority) })),
  el("td", {}, el("span", { text: I18N.dateTime(row.next_due_at) }),
    row.breached ? el("span", { class: "badge bad", text: t("breached") }) : null,
    row.at_risk ? el("span", { class: "badge warn", text: t("at_risk") }) : null),
  el("td", { text: I18N.duration(row.age_seconds) }),
  el("td", { text: `${row.team || "–"} / ${row.agent || t("unassigned")}` }))));
  if (!answer.rows.length) body.append(el("tr", {}, el("td", { colspan: "6", class: "muted", text: t("queue.empty") })));
  $("queue-count").textContent = `(${I18N.number(answer.total)})`;
  const from = answer.total ? answer.offset + 1 : 0;
  $("page-info").textContent = t("page.info", { from, to: answer.offset + answer.rows.length, total: answer.total });
  $("prev").disabled = answer.offset === 0;
  $("next").disabled = answer.offset + answer.rows.length >= answer.total;
}

function withParam(key, value) {
  const q = new URLSearchParams(location.search);
  q.set(key, value);
  return q.toString();
}

// ------------------------------------------------------------------ one complaint
let shown = null; // the complaint on screen: its state as the command API gave it

async function loadComplaint(id, { keepForm = false } = {}) {
  $("error").hidden = true;
  if (!keepForm) closeForm();
  try {
    shown = await api(`/complaints/${encodeURIComponent(id)}`);
  } catch (error) {
    shown = null;
    $("c-title").textContent = id;
    showError(error);
    return;
  }
  $("conflict").hidden = true;
  drawComplaint();
  loadClocks(id);
  loadTimeline(id);
}

function fact(key, value) {
  return [el("dt", { text: t(`field.${key}`) }), el("dd", { text: value ?? "–" })];
}

function drawComplaint() {
  const c = shown;
  $("c-title").textContent = c.title || c.id;
  const customer = c.customer_personal ? `${c.customer_personal.name || ""} ${c.customer_personal.contact || ""}` : "";
  $("c-facts").replaceChildren(
    ...fact("status", I18N.label("status", c.status)), ...fact("priority", I18N.label("priority", c.priority)),
    ...fact("severity", I18N.label("severity", c.severity)), ...fact("category", I18N.label("category", c.category)),
    ...fact("impact", I18N.label("impact", c.impact)),
    ...fact("product", c.product), ...fact("channel", I18N.label("channel", c.channel)), ...fact("region", c.region),
    ...fact("team", c.team), ...fact("agent", c.agent || t("unassigned")),
    ...fact("customer", `${customer.trim()} (${(c.customer || {}).id || "–"}, ${I18N.label("tier", (c.customer || {}).tier)})`),
    ...fact("registered_at", I18N.dateTime(c.registered_at)), ...fact("escalation", I18N.number(c.escalation_level)),
    ...fact("version", String(c.version)), ...fact("description", c.description),
    ...Object.entries(c.fields || {}).flatMap(([name, value]) => [
      el("dt", { text: fieldLabel(name) }), el("dd", { dataset: { field: name }, text: fieldText(name, value) })]));
  drawTags(c);
  // Tags are added and removed on their own line; every other command has a button.
  const buttons = (c.allowed_actions || []).filter((action) => action in ACTIONS).map((action) => {
    const take = action === "assign" && !canAssignOthers();
    return el("button", { type: "button", class: "action", dataset: { action },
      text: t(take ? "action.take" : `action.${action}`), onclick: () => (take ? take_() : openForm(action)) });
  });
  $("c-actions").replaceChildren(...(buttons.length ? buttons : [el("span", { class: "muted", text: t("actions.none") })]));
}

// An agent's assignment is taking it: to itself, in its own team (the API allows no other).
function canAssignOthers() {
  const roles = session.user.roles || [];
  return roles.some((role) => !["agent", "intake"].includes(role));
}

// ---- custom fields and tags
const definitionOf = (name) => definitions.fields.find((f) => f.name === name && !f.retired_in)
  || definitions.fields.find((f) => f.name === name);
const fieldLabel = (name) => { const d = definitionOf(name); return d ? d.label[I18N.lang === "zh-CN" ? "zh" : "en"] : name; };
const optionLabel = (d, value) => {
  const option = d && (d.options || []).find((o) => o.value === value);
  return option ? option[I18N.lang === "zh-CN" ? "zh" : "en"] : String(value);
};

function fieldText(name, value) {
  const d = definitionOf(name);
  if (value === null || value === undefined) return "–";
  if (Array.isArray(value)) return value.map((v) => optionLabel(d, v)).join("、");
  if (typeof value === "boolean") return t(value ? "yes" : "no");
  if (typeof value === "number") return I18N.number(value);
  if (value && typeof value === "object") return value.name || (value.lat !== undefined ? `${value.lat}, ${value.lon}` : JSON.stringify(value));
  if (d && d.type === "date") return I18N.date(value);
  return d && d.type === "single_select" ? optionLabel(d, value) : String(value);
}

function drawTags(c) {
  const allowed = new Set(c.allowed_actions || []);
  const chips = (c.tags || []).map((tag) => el("span", { class: "tag", dataset: { tag } }, tag,
    allowed.has("remove_tag") ? el("button", { type: "button", class: "untag", title: t("tags.remove"), text: "×",
      onclick: () => sendTag("remove_tag", tag) }) : null));
  const input = el("input", { id: "new-tag", maxlength: "100", placeholder: t("tags.new") });
  const add = allowed.has("add_tag") ? el("form", { class: "add-tag", onsubmit: (event) => {
    event.preventDefault();
    if (input.value.trim()) sendTag("add_tag", input.value);
  } }, input, el("button", { type: "submit", class: "link", text: t("tags.add") })) : null;
  $("c-tags").replaceChildren(el("span", { class: "muted", text: `${t("tags")}: ` }),
    ...(chips.length ? chips : [el("span", { class: "muted", text: "–" })]), add);
}

function sendTag(action, tag) {
  send(action, { tag }, TAG_PATHS[action]);
}

// The applicable fields (for every category, or the complaint's), not retired, as inputs
// holding the current values; only what is changed is sent.
function openFieldsForm() {
  const c = shown;
  const lang = I18N.lang === "zh-CN" ? "zh" : "en";
  const applicable = definitions.fields.filter((d) => !d.retired_in && d.type !== "attachment"
    && (!d.categories.length || d.categories.includes(c.category)));
  const inputs = applicable.map((d) => {
    const current = (c.fields || {})[d.name];
    const name = `field:${d.name}`;
    let input;
    if (d.type === "single_select" || d.type === "multi_select") {
      input = el("select", { name, multiple: d.type === "multi_select" },
        ...(d.type === "single_select" ? [el("option", { value: "", text: "–" })] : []),
        ...d.options.filter((o) => !o.retired).map((o) => el("option", { value: o.value, text: o[lang],
          selected: Array.isArray(current) ? current.includes(o.value) : current === o.value })));
    } else if (d.type === "boolean") {
      input = el("select", { name }, el("option", { value: "", text: "–" }),
        el("option", { value: "true", text: t("yes"), selected: current === true }),
        el("option", { value: "false", text: t("no"), selected: current === false }));
    } else if (d.type === "geolocation") {
      input = el("input", { name, placeholder: "31.23, 121.47", value: current ? `${current.lat}, ${current.lon}` : "" });
    } else {
      input = el("input", { name, type: { number: "number", date: "date" }[d.type] || "text", step: "any",
        value: current ?? "" });
    }
    return el("label", {}, el("span", { text: d.label[lang] + (d.required_at ? " *" : "") }), input);
  });
  const form = $("action-form");
  form.dataset.action = "update_fields";
  form.replaceChildren(el("h4", { text: t("action.update_fields") }),
    ...(inputs.length ? inputs : [el("p", { class: "muted", text: t("fields.none") })]),
    el("div", {}, el("button", { type: "submit", class: "primary", text: t("submit") }),
      el("button", { type: "button", class: "link", text: t("cancel"), onclick: closeForm })));
  form.hidden = false;
}

// The form's values as the API takes them (null clears a field); only the changed ones.
function changedFields(form) {
  const changed = {};
  for (const d of definitions.fields) {
    const input = form.elements[`field:${d.name}`];
    if (!input) continue;
    let value;
    if (d.type === "multi_select") value = [...input.selectedOptions].map((o) => o.value);
    else if (input.value.trim() === "") value = null;
    else if (d.type === "number") value = Number(input.value);
    else if (d.type === "boolean") value = input.value === "true";
    else if (d.type === "geolocation") {
      const [lat, lon] = input.value.split(",").map((part) => Number(part.trim()));
      value = { lat, lon };
    } else value = input.value.trim();
    if (d.type === "multi_select" && !value.length) value = null;
    const current = (shown.fields || {})[d.name] ?? null;
    if (JSON.stringify(value) !== JSON.stringify(current)) changed[d.name] = value;
  }
  return changed;
}

function take_() {
  send("assign", { team: session.user.team, agent: subject });
}

// The clocks and the timeline come from the read model: kept, so a language switch redraws them.
const readModel = { clocks: null, timeline: null };

async function loadClocks(id) {
  try {
    readModel.clocks = (await api(`/audit/complaints/${encodeURIComponent(id)}/sla`)).clocks;
  } catch (error) {
    readModel.clocks = error;
  }
  drawClocks();
}

function drawClocks() {
  const body = $("c-clocks").tBodies[0];
  const clocks = readModel.clocks;
  if (clocks instanceof Error) {
    body.replaceChildren(el("tr", {}, el("td", { colspan: "4", class: "muted",
      text: clocks.status === 403 ? t("timeline.hidden") : clocks.message })));
    return;
  }
  body.replaceChildren(...(clocks || []).map((clock) => el("tr", {},
    el("td", { text: I18N.label("metric", clock.metric) + (clock.cycle > 1 ? ` #${clock.cycle}` : "") }),
    el("td", { class: `clock-${clock.status}`, text: I18N.label("clock_status", clock.status) }),
    el("td", { text: I18N.dateTime(clock.due_at) }),
    el("td", { text: clock.stopped_at ? `${I18N.dateTime(clock.stopped_at)} (${I18N.label("stop_reason", clock.stop_reason)})` : "–" }))));
}

// The complaint's timeline; returns the last version the read model holds.
async function loadTimeline(id) {
  try {
    readModel.timeline = (await api(`/audit/complaints/${encodeURIComponent(id)}/timeline`)).items;
  } catch (error) {
    readModel.timeline = error;
  }
  drawTimeline();
  const items = Array.isArray(readModel.timeline) ? readModel.timeline : [];
  return items.length ? items[items.length - 1].version : 0;
}

function drawTimeline() {
  const items = readModel.timeline;
  if (items instanceof Error) {
    $("c-timeline").replaceChildren(el("li", { class: "muted",
      text: items.status === 403 ? t("timeline.hidden") : items.message }));
    return;
  }
  const zh = I18N.lang === "zh-CN";
  $("c-timeline").replaceChildren(...(items || []).map((item) => el("li", {},
    el("span", { class: "when", text: I18N.dateTime(item.at) }),
    el("strong", { text: ` ${I18N.label("event_type", item.event_type)} ` }),
    el("span", { class: "muted", text: `v${item.version} · ${item.actor} · ${I18N.label("status", item.status)}` }),
    el("div", { class: "summary", text: (zh && item.summary_zh) || item.summary }))));
}

function inputFor(field) {
  const label = t(`input.${field.name}`);
  let input;
  if (field.codes || field.options) {
    const values = field.codes ? I18N.codes(field.codes) : field.options;
    input = el("select", { name: field.name, required: !field.optional },
      ...values.map((value) => el("option", { value,
        text: field.codes ? I18N.label(field.codes, value) : t(`option.${value}`) })));
  } else if (field.number) {
    input = el("input", { name: field.name, type: "number", min: field.number[0], max: field.number[1], required: true });
  } else if (field.long) {
    input = el("textarea", { name: field.name, rows: "3", required: !field.optional });
  } else {
    input = el("input", { name: field.name, required: !field.optional, maxlength: "200" });
  }
  if (field.name === "team" && session.user.team) input.value = session.user.team;
  return el("label", {}, el("span", { text: label }), input);
}

function openForm(action) {
  if (ACTIONS[action].custom) {
    openFieldsForm();
    return;
  }
  const form = $("action-form");
  form.dataset.action = action;
  form.replaceChildren(el("h4", { text: t(`action.${action}`) }), ...ACTIONS[action].fields.map(inputFor),
    el("div", {}, el("button", { type: "submit", class: "primary", text: t("submit") }),
      el("button", { type: "button", class: "link", text: t("cancel"), onclick: closeForm })));
  form.hidden = false;
  const first = form.querySelector("input, textarea, select");
  if (first) first.focus();
}

function closeForm() {
  $("action-form").hidden = true;
  $("action-form").replaceChildren();
}

// One command on the complaint on screen, at the version the user saw. A retry of the same
// submission reuses its command id: the API answers it as the first time, never twice.
let pending = null;
async function send(action, fields, path = ACTIONS[action].path) {
  const key = JSON.stringify([shown.id, shown.version, action, fields]);
  if (!pending || pending.key !== key) pending = { key, id: crypto.randomUUID() };
  $("error").hidden = true;
  try {
    const result = await api(`/complaints/${encodeURIComponent(shown.id)}/${path}`, {
      body: { ...fields, command_id: pending.id, expected_version: shown.version } });
    pending = null;
    await loadComplaint(shown.id);
    $("error").hidden = false;
    $("error").className = "done";
    $("error").textContent = t("done", { action: t(`action.${action}`), version: result.version });
    followUntil(result.version);
  } catch (error) {
    if (error.status === 409 && error.body.current_version !== undefined && error.body.current_version !== shown.version) {
      $("conflict").hidden = false; // the form keeps what was typed; reload shows the change
    } else {
      showError(error);
    }
  }
}

function showError(error, box = $("error")) {
  box.className = "error";
  box.hidden = false;
  box.textContent = error.status ? t("error.http", { status: error.status, detail: error.message })
    : t("error.network", { detail: error.message });
}

// After a command, the complaint's clocks, timeline and list follow the read model as soon
// as it holds the new version.
async function followUntil(version) {
  const id = shown && shown.id;
  for (let i = 0; i < 40 && id && shown && shown.id === id; i += 1) {
    if (await loadTimeline(id) >= version) break;
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
  if (id && shown && shown.id === id) loadClocks(id);
  loadQueue();
}

$("action-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const form = event.currentTarget;
  if (form.dataset.action === "update_fields") {
    send("update_fields", { fields: changedFields(form) });
    return;
  }
  const fields = {};
  for (const field of ACTIONS[form.dataset.action].fields) {
    const value = form.elements[field.name].value.trim();
    if (value === "" && field.optional) continue;
    fields[field.name] = field.number ? Number(value) : value;
  }
  send(form.dataset.action, fields);
});

// ------------------------------------------------------------------ intake
let intakeCommand = null;
$("intake-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.currentTarget; // (null once the handler awaits)
  const f = form.elements;
  const body = {
    channel: f.channel.value, customer: { id: f.customer_id.value.trim(), tier: f.tier.value },
    customer_personal: { name: f.name.value.trim(), contact: f.contact.value.trim() },
    title: f.title.value.trim(), description: f.description.value.trim(),
    product: f.product.value.trim() || null, region: f.region.value.trim() || null,
  };
  const key = JSON.stringify(body);
  if (!intakeCommand || intakeCommand.key !== key) intakeCommand = { key, id: crypto.randomUUID() };
  $("intake-error").hidden = true;
  try {
    const result = await api("/complaints", { body: { ...body, command_id: intakeCommand.id } });
    intakeCommand = null;
    form.reset();
    fillCodes();
    go({ intake: null, complaint: result.complaint_id });
  } catch (error) {
    showError(error, $("intake-error"));
  }
});

// ------------------------------------------------------------------ drawing the view
function fillCodes() {
  for (const select of document.querySelectorAll("select[data-codes]")) {
    const kept = select.value;
    const inFilters = select.closest("#filters");
    const extra = inFilters ? [el("option", { value: "", text: t("any") })] : [];
    if (inFilters && select.name === "status") extra.push(el("option", { value: "open", text: t("status.open") }));
    select.replaceChildren(...extra,
      ...I18N.codes(select.dataset.codes).map((code) => el("option", { value: code, text: I18N.label(select.dataset.codes, code) })));
    // A filter keeps its choice ("any" by default); a form's field starts at its first option.
    select.value = kept || (inFilters ? "" : select.options[0].value);
  }
}

function translate() {
  for (const node of document.querySelectorAll("[data-t]")) node.textContent = t(node.dataset.t);
  document.title = `${t("brand")} · ${t("dashboard")}`;
  fillCodes();
  drawSaved();
}

function drawFilters(v) {
  for (const name of ["sort", "order", "status", "category", "severity", "channel", "product"]) {
    const input = document.querySelector(`#filters [name="${name}"]`);
    input.value = v.q.get(name) || (name === "sort" ? "due" : "");
  }
  const drilled = FILTERS.filter((key) => !["status", "category", "severity", "channel", "product"].includes(key) && v.q.get(key));
  $("drill-note").hidden = !drilled.length;
  $("drill-note").textContent = t("drill", { what: drilled.map((key) => `${key}=${v.q.get(key)}`).join(", ") });
}

function render() {
  const v = view();
  for (const tab of document.querySelectorAll("#queues button")) tab.classList.toggle("active", tab.dataset.queue === v.queue);
  $("queue-title").textContent = t(`queue.${v.queue}`);
  drawFilters(v);
  $("intake").hidden = !v.intake;
  $("detail").hidden = v.intake || !v.complaint;
  for (const row of document.querySelectorAll("#queue tbody tr")) row.classList.toggle("selected", row.dataset.complaint === v.complaint);
  loadQueue();
  if (v.complaint && !v.intake && (!shown || shown.id !== v.complaint)) loadComplaint(v.complaint);
}

// ------------------------------------------------------------------ saved filters
function savedFilters() {
  try { return JSON.parse(localStorage.getItem(SAVED_KEY) || "{}"); } catch (_) { return {}; }
}

function drawSaved() {
  const saved = savedFilters();
  $("saved").replaceChildren(el("option", { value: "", text: t("saved.none") }),
    ...Object.keys(saved).sort().map((name) => el("option", { value: name, text: name })));
}

$("save-filter").addEventListener("click", () => {
  const name = prompt(t("saved.name"));
  if (!name) return;
  const q = new URLSearchParams(location.search);
  q.delete("complaint");
  q.delete("intake");
  q.delete("offset");
  localStorage.setItem(SAVED_KEY, JSON.stringify({ ...savedFilters(), [name]: q.toString() }));
  drawSaved();
  $("saved").value = name;
});

$("saved").addEventListener("change", (event) => {
  const query = savedFilters()[event.target.value];
  if (query === undefined) return;
  history.pushState(null, "", `${location.pathname}?${query}`);
  render();
});

// ------------------------------------------------------------------ wiring
function wire() {
  for (const tab of document.querySelectorAll("#queues button")) {
    tab.addEventListener("click", () => go({ queue: tab.dataset.queue, offset: null }));
  }
  for (const input of document.querySelectorAll("#filters select[name], #filters input[name]")) {
    input.addEventListener("change", () => go({ [input.name]: input.value, offset: null }));
  }
  $("clear-filters").addEventListener("click", () => go(Object.fromEntries([...FILTERS, "sort", "order", "offset"].map((k) => [k, null]))));
  $("prev").addEventListener("click", () => go({ offset: Math.max(0, Number(view().q.get("offset") || 0) - PAGE) || null }));
  $("next").addEventListener("click", () => go({ offset: Number(view().q.get("offset") || 0) + PAGE }));
  $("new-complaint").addEventListener("click", () => go({ intake: "1", complaint: null }));
  $("intake-cancel").addEventListener("click", () => go({ intake: null }));
  $("reload").addEventListener("click", () => loadComplaint(shown.id, { keepForm: true }));
  $("sign-out").addEventListener("click", () => {
    sessionStorage.removeItem(SESSION_KEY);
    location.assign("/dashboard");
  });
  window.addEventListener("popstate", () => { shown = null; render(); });
  window.addEventListener("languagechange", () => {
    translate();
    render();
    if (shown) {
      drawComplaint();
      drawClocks();
      drawTimeline();
    }
  });
  // Live: the list follows the read model while the tab is in view.
  setInterval(() => { if (document.visibilityState === "visible") loadQueue(); }, LIVE_MS);
}

async function start() {
  $("lang").append(I18N.switcher());
  if (!session) {
    $("signed-out").hidden = false;
    await I18N.ready.catch(() => null);
    translate();
    return;
  }
  $("who-name").textContent = session.user.name;
  $("signed-in").hidden = false;
  await I18N.ready;
  definitions = await api("/field-definitions").catch(() => definitions);
  translate();
  wire();
  render();
}

start();
