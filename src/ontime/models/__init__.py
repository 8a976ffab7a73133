"""Models for flight-delay prediction: the tabular preprocessor and the PyTorch networks.

- `preprocess.Preprocessor`: imputes, scales and encodes a polars frame into model arrays.
- `mlp.MLP`: an MLP with optional periodic or piecewise-linear numeric embeddings.
- `ft_transformer.FTTransformer`: the FT-Transformer of Gorishniy et al. (2021).
- `adapters`: zero-initialised residual bottleneck adapters a network adds after each block with
  `adapter_rank > 0` (the `adapter` fine-tuning strategy).
- `roles`: the parameter roles (embeddings, blocks, adapters, head; no weight decay) each network
  declares, which weight decay and the fine-tuning strategies use.
"""
