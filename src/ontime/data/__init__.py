"""Data stages: collect -> clean -> featurize -> split."""
