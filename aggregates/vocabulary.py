"""The names people read for the codes the domain stores: one table per kind of code,
each entry (en, zh-CN).

The dashboard and the workspace show every status, category, channel... by these names
(served as /static/vocabulary.json); `tests/test_vocabulary.py` keeps each table complete
against the domain's own lists of codes.
"""

from __future__ import annotations

from aggregates.access import ROLE_NAMES

Names = dict[str, tuple[str, str]]

STATUS: Names = {
    "received": ("received", "已受理"),
    "triaged": ("triaged", "已分级"),
    "assigned": ("assigned", "已分派"),
    "waiting_on_customer": ("waiting on customer", "等待客户"),
    "resolution_proposed": ("resolution proposed", "已提出方案"),
    "resolved": ("resolved", "已解决"),
    "verified": ("verified", "已回访"),
    "closed": ("closed", "已关闭"),
    "withdrawn": ("withdrawn", "已撤回"),
    "duplicate": ("duplicate", "重复投诉"),
}
# The categories the triage rules (aggregates/rules.toml), the SLA policy and the demo use.
CATEGORY: Names = {
    "product_defect": ("product defect", "产品缺陷"),
    "logistics": ("logistics", "物流配送"),
    "billing": ("billing", "账单计费"),
    "service_attitude": ("service attitude", "服务态度"),
    "account": ("account", "账户问题"),
    "feature_request": ("feature request", "功能建议"),
    "other": ("other", "其他"),
}
CHANNEL: Names = {
    "phone": ("phone", "电话"),
    "wechat": ("WeChat", "微信"),
    "web": ("web", "网站"),
    "app": ("app", "应用"),
    "email": ("e-mail", "电子邮件"),
    "store": ("store", "门店"),
    "social_media": ("social media", "社交媒体"),
    "sales_visit": ("sales visit", "销售拜访"),
    "referral": ("referral", "转介"),
    "postal_mail": ("postal mail", "邮寄信件"),
    "fax": ("fax", "传真"),
    "other": ("other", "其他"),
}
SEVERITY: Names = {
    "fatal": ("fatal", "致命"),
    "major": ("major", "严重"),
    "normal": ("normal", "一般"),
    "minor": ("minor", "轻微"),
}
PRIORITY: Names = {
    "urgent": ("urgent", "紧急"),
    "high": ("high", "高"),
    "medium": ("medium", "中"),
    "low": ("low", "低"),
}
IMPACT: Names = {
    "one_user": ("one user", "单个用户"),
    "some_users": ("some users", "部分用户"),
    "all_users": ("all users", "全部用户"),
}
TIER: Names = {
    "vip": ("VIP", "VIP 客户"),
    "regular": ("regular", "普通客户"),
}
METRIC: Names = {
    "first_response": ("first response", "首次响应"),
    "next_response": ("next response", "后续响应"),
    "resolution": ("resolution", "解决"),
}
# The states of an SLA clock now, and the moments of its life.
CLOCK_STATUS: Names = {
    "activated": ("running", "计时中"),
    "paused": ("paused", "已暂停"),
    "warning": ("due soon", "即将超时"),
    "breached": ("breached", "已超时"),
    "fulfilled": ("met", "已达成"),
    "cancelled": ("cancelled", "已取消"),
}
CLOCK_EVENT: Names = {
    "activated": ("activated", "启动"),
    "paused": ("paused", "暂停"),
    "resumed": ("resumed", "恢复"),
    "warned": ("warned", "预警"),
    "breached": ("breached", "超时"),
    "fulfilled": ("fulfilled", "达成"),
    "cancelled": ("cancelled", "取消"),
    "reopened": ("reopened", "重开"),
}
STOP_REASON: Names = {
    "responded": ("responded", "已响应"),
    "resolved": ("resolved", "已解决"),
    "withdrawn": ("withdrawn", "已撤回"),
    "duplicate": ("duplicate", "重复投诉"),
    "closed": ("closed", "已关闭"),
    "reopened": ("reopened", "已重开"),
}
ROLE: Names = {role: names for role, names in ROLE_NAMES.items()}
EVENT_TYPE: Names = {
    "Registered": ("registered", "登记"),
    "Triaged": ("triaged", "分级"),
    "Assigned": ("assigned", "分派"),
    "NoteAdded": ("note added", "添加备注"),
    "ContactRecorded": ("contact recorded", "记录联系"),
    "WaitingOnCustomer": ("waiting on customer", "等待客户"),
    "CustomerReplied": ("customer replied", "客户回复"),
    "ResolutionProposed": ("resolution proposed", "提出方案"),
    "Resolved": ("resolved", "解决"),
    "Verified": ("verified", "回访"),
    "Closed": ("closed", "关闭"),
    "Reopened": ("reopened", "重开"),
    "Escalated": ("escalated", "升级"),
    "Withdrawn": ("withdrawn", "撤回"),
    "MarkedDuplicate": ("marked duplicate", "标记重复"),
    "PersonalDataErased": ("personal data erased", "个人数据已删除"),
    "FieldsUpdated": ("fields updated", "字段已更新"),
    "TagAdded": ("tag added", "已添加标签"),
    "TagRemoved": ("tag removed", "已移除标签"),
    "AlertRaised": ("alert raised", "告警产生"),
    "AlertAcknowledged": ("alert acknowledged", "告警已确认"),
    "AlertResolved": ("alert resolved", "告警已解除"),
}
ALERT_SEVERITY: Names = {
    "info": ("info", "提示"),
    "warning": ("warning", "警告"),
    "critical": ("critical", "严重"),
}
ALERT_STATUS: Names = {
    "open": ("open", "待处理"),
    "acknowledged": ("acknowledged", "已确认"),
    "resolved": ("resolved", "已解除"),
}
SUBJECT_TYPE: Names = {
    "complaint": ("complaint", "投诉"),
    "customer": ("customer", "客户"),
    "product": ("product", "产品"),
    "category_product": ("category and product", "类别与产品"),
    "subscription": ("subscription", "订阅"),
}
# The fields of a complaint's state, as the audit view shows them.
FIELD: Names = {
    "status": ("status", "状态"),
    "priority": ("priority", "优先级"),
    "category": ("category", "类别"),
    "severity": ("severity", "严重程度"),
    "impact": ("impact", "影响范围"),
    "team": ("team", "团队"),
    "agent": ("agent", "处理人"),
    "channel": ("channel", "渠道"),
    "product": ("product", "产品"),
    "region": ("region", "地区"),
    "title": ("title", "标题"),
    "description": ("description", "描述"),
    "first_response_due": ("first response due", "首次响应截止"),
    "resolution_due": ("resolution due", "解决截止"),
    "first_responded_at": ("first responded at", "首次响应时间"),
    "resolved_at": ("resolved at", "解决时间"),
    "closed_at": ("closed at", "关闭时间"),
    "handovers": ("handovers", "转交次数"),
    "reopen_count": ("reopened", "重开次数"),
    "escalation_level": ("escalation level", "升级级别"),
    "resolution": ("resolution", "解决方案"),
    "csat": ("CSAT", "满意度"),
    "nps": ("NPS", "净推荐值"),
}

VOCABULARY: dict[str, Names] = {
    "status": STATUS, "category": CATEGORY, "channel": CHANNEL, "severity": SEVERITY, "priority": PRIORITY,
    "impact": IMPACT, "tier": TIER, "metric": METRIC, "clock_status": CLOCK_STATUS, "clock_event": CLOCK_EVENT,
    "stop_reason": STOP_REASON, "role": ROLE, "event_type": EVENT_TYPE, "alert_severity": ALERT_SEVERITY,
    "alert_status": ALERT_STATUS, "subject_type": SUBJECT_TYPE, "field": FIELD,
}


def vocabulary(time_zone: str) -> dict[str, object]:
    """What /static/vocabulary.json holds: every table as {code: [en, zh-CN]}, and the
    desk's time zone (the pages' dates are its)."""
    return {"time_zone": time_zone,
            "labels": {kind: {code: list(names) for code, names in table.items()}
                       for kind, table in VOCABULARY.items()}}
