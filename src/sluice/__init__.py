"""Sluice: a Layer-7 gateway that governs what agents and people do to production systems."""

from sluice._compiled import install_guard

__version__ = "0.1.0"

install_guard()
