"""Notifications to people: approval requests and decisions to chat webhooks."""

from sluice.notify.webhook import (
    ApprovalLike,
    ApprovalNotice,
    ApprovalNotifier,
    Decision,
    DecisionNotice,
    DeliveryResult,
    NotifyError,
    NotifySpec,
    WebhookNotifier,
    build_message,
)

__all__ = [
    "ApprovalLike",
    "ApprovalNotice",
    "ApprovalNotifier",
    "Decision",
    "DecisionNotice",
    "DeliveryResult",
    "NotifyError",
    "NotifySpec",
    "WebhookNotifier",
    "build_message",
]
