"""Sluice: a Layer-7 gateway that governs what agents and people do to production systems."""

__version__ = "0.1.0"
