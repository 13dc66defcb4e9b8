"""Notifications to people: approval requests and decisions to chat webhooks."""

from sluice.notify.webhook import (
    ApprovalNotice,
    Decision,
    DecisionNotice,
    DeliveryResult,
    NotifyError,
    NotifySpec,
    WebhookNotifier,
    build_message,
)

__all__ = [
    "ApprovalNotice",
    "Decision",
    "DecisionNotice",
    "DeliveryResult",
    "NotifyError",
    "NotifySpec",
    "WebhookNotifier",
    "build_message",
]
