"""Engines beyond one process: Ray (started locally by default, or joined with --address)."""
