"""Evidently reports: the ``report`` stage (``stage``: data quality, drift, classification quality,
a workspace with a dashboard) and ``ontime monitor`` (``monitor``: drift of served traffic against the
training reference). ``adapters`` is the Evidently boundary (datasets, runs, stable ids, HTML pages),
``builders`` runs one report each, ``workspace`` holds the Evidently workspace and its dashboard."""
