"""Scores over token lists: pure functions, no models (see `metrics.caption`)."""
