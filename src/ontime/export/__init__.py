"""Exports of trained models to other runtimes (ONNX) and the candidates that score with them."""
