"""Verdicts: what the policy engine decides for one event.

Verdicts are types, never strings or flags. Every verdict names the rule that
produced it (or the connection default) so that errors, audit and recordings
can say why.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True, kw_only=True)
class MaskPlan:
    """Which masking profiles (declared under `masking.profiles`) apply to the
    results of an allowed event, on top of the connection's own profiles."""

    rule: str
    profiles: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Allow:
    rule: str
    reason: str = ""
    mask: MaskPlan | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Block:
    rule: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RequireApproval:
    rule: str
    reason: str
    approver_groups: tuple[str, ...]
    timeout: dt.timedelta = field(default=dt.timedelta(minutes=10))
    mask: MaskPlan | None = None


Verdict = Allow | Block | RequireApproval
