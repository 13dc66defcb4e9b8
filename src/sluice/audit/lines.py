"""Audit lines of the events of every statement, built without event objects.

Compiled with the hot path (`sluice._compiled`): one line per statement.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Final

import orjson

from sluice.audit.events import AuditEvent, identity_json, line_head, refuse_unserialisable
from sluice.audit.stamps import new_id, settle_timestamp, utc_now_text

# Bound once: compiled, a module attribute is looked up at every use.
_DUMPS: Final = orjson.dumps
_UTC_Z: Final = orjson.OPT_UTC_Z

_DEFAULTS: Final[dict[type, dict[str, Any]]] = {}  # per event class: its fields' defaults, in order


class EventLines:
    """JSON lines of one event type with some fields fixed (a session's), no objects.

    For the events of every statement: building a frozen dataclass of a dozen
    fields costs more than the rest of the line, and the file and stdout sinks
    only need the line. `line(values)` gives what `to_json` gives for
    `cls(**fixed, **values)`, as UTF-8 with its newline (tests hold the two
    equal); `event(values)` builds that object, for sinks that need it.
    """

    def __init__(self, cls: type[AuditEvent], **fixed: Any) -> None:
        self.TYPE: str = cls.TYPE
        self._cls = cls
        self._fixed = fixed
        self._head = line_head(cls.TYPE) + b","
        defaults = _DEFAULTS.get(cls)
        if defaults is None:  # id and timestamp: a fresh one per line
            defaults = _DEFAULTS[cls] = {
                f.name: None if f.default is dataclasses.MISSING else f.default
                for f in dataclasses.fields(cls)
            }
        unknown = set(fixed) - set(defaults)
        if unknown:
            raise TypeError(f"{cls.__name__} has no field {', '.join(sorted(unknown))}")
        template = defaults.copy()
        template.update(fixed)
        if template.get("identity") is not None:
            template["identity"] = identity_json(template["identity"])
        self._template = template

    def line(self, values: dict[str, Any]) -> bytes:
        """A new event's line: a fresh id and timestamp, `values` over the fixed fields."""
        members = self._template.copy()
        members["id"] = new_id()
        if "timestamp" in values:
            members.update(values)
            settle_timestamp(members)
        else:  # now, already as text: no datetime to make and serialise
            members["timestamp"] = utc_now_text()
            members.update(values)
        body = _DUMPS(members, option=_UTC_Z, default=refuse_unserialisable)
        return self._head + body[1:] + b"\n"  # the members hold id and timestamp at least

    def event(self, values: dict[str, Any]) -> AuditEvent:
        return self._cls(**self._fixed, **values)
