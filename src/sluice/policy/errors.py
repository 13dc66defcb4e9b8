"""Errors of the policy package."""

from __future__ import annotations

from sluice.errors import ConfigError


class PolicyError(ConfigError):
    """A policy definition is invalid: unknown or cyclic `extends`, bad rule."""
