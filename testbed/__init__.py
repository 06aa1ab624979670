"""Testbed for loss-resilient video conferencing: experiment specs, runners, backends and the CLI."""

__version__ = "0.1.0"
