"""Evaluation of candidates on the test window, and selection."""
