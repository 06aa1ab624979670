"""Trace formats: parsers and generators for rate and loss traces."""
