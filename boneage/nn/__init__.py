"""The network: backbones and heads (the model owns its stage structure) and batched forward passes with TTA."""
