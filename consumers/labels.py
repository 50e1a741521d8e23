"""Words for the codes notifications show: statuses, severities, event types, in zh-CN and en.

One table per kind of code, each entry (en, zh-CN), so a label is written once and both
languages stay side by side. A code missing from its table is shown as it is: a new
status should read oddly in a message, not stop the message.
"""

from __future__ import annotations

from typing import Literal

from consumers.notices import Language

Table = Literal["status", "severity", "alert_status", "event_type"]

LABELS: dict[Table, dict[str, tuple[str, str]]] = {
    "status": {  # a complaint's status (and "reopened", which customers are told about)
        "received": ("received", "已受理"),
        "triaged": ("triaged", "已分类"),
        "assigned": ("being handled", "处理中"),
        "waiting_on_customer": ("waiting for your reply", "等待您的回复"),
        "resolution_proposed": ("solution proposed", "已提出方案"),
        "resolved": ("resolved", "已解决"),
        "verified": ("confirmed by the customer", "客户已确认"),
        "closed": ("closed", "已关闭"),
        "reopened": ("reopened", "已重新打开"),
        "withdrawn": ("withdrawn", "已撤回"),
        "duplicate": ("duplicate", "重复"),
    },
    "severity": {  # a complaint's severity, then an alert's
        "fatal": ("fatal", "致命"),
        "major": ("major", "重大"),
        "normal": ("normal", "一般"),
        "minor": ("minor", "轻微"),
        "info": ("info", "提示"),
        "warning": ("warning", "警告"),
        "critical": ("critical", "严重"),
    },
    "alert_status": {
        "open": ("open", "待处理"),
        "acknowledged": ("acknowledged", "已确认"),
        "resolved": ("resolved", "已解除"),
    },
    "event_type": {
        "Registered": ("new complaint", "新投诉登记"),
        "Triaged": ("triaged", "已分类"),
        "Assigned": ("assigned", "已分派"),
        "NoteAdded": ("note added", "添加备注"),
        "ContactRecorded": ("contact recorded", "记录联系"),
        "WaitingOnCustomer": ("waiting on the customer", "等待客户回复"),
        "CustomerReplied": ("customer replied", "客户已回复"),
        "ResolutionProposed": ("solution proposed", "已提出方案"),
        "Resolved": ("resolved", "已解决"),
        "Verified": ("verified by the customer", "客户已确认"),
        "Closed": ("closed", "已关闭"),
        "Reopened": ("reopened", "已重新打开"),
        "Escalated": ("escalated", "已升级"),
        "Withdrawn": ("withdrawn", "已撤回"),
        "MarkedDuplicate": ("marked duplicate", "标记为重复"),
        "FieldsUpdated": ("fields updated", "字段已更新"),
        "TagAdded": ("tag added", "已添加标签"),
        "TagRemoved": ("tag removed", "已移除标签"),
        "AlertRaised": ("alert raised", "告警触发"),
        "AlertAcknowledged": ("alert acknowledged", "告警已确认"),
        "AlertResolved": ("alert resolved", "告警已解除"),
    },
}


def label(table: Table, code: str, language: Language) -> str:
    """The words for `code` in `language`; the code itself when the table lacks it."""
    words = LABELS[table].get(code)
    if words is None:
        return code
    return words[1] if language == "zh-CN" else words[0]
