"""Network link models and the virtual-time event engine (knows networks, nothing of codecs)."""
