"""Renderers: pure functions of a Snapshot, golden-file tested."""
