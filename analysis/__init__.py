"""Analysis of run logs: metrics, summaries, reports (reads logs, never runs experiments)."""
