"""Audit sinks: file (default), stdout, syslog (UDP/TCP), webhook (spooled)."""

from sluice.audit.sinks.base import Sink
from sluice.audit.sinks.file import FileSink
from sluice.audit.sinks.stdout import StdoutSink
from sluice.audit.sinks.syslog import SyslogSink
from sluice.audit.sinks.webhook import WebhookSink

__all__ = ["FileSink", "Sink", "StdoutSink", "SyslogSink", "WebhookSink"]
