"""Training stages: the PyTorch model (train, finetune) and the LightGBM baseline."""
