"""Serving: online featurization and scoring, the BentoML service, request logging, predict."""
