"""Evidently reports: the ``report`` stage (data quality, drift, classification quality, a workspace
with a dashboard) and ``ontime monitor`` (drift of served traffic against the training reference)."""
