"""The model and what a checkpoint holds: `VQAConfig`, `VQAModel` (encoders, fusion, GPT-2 decoder), `VQAProcessor`
(tokenizers and image preprocessing), and the parts they are built from: encoders, fusions (tokens, pooled,
resampler), cross-attention gates, LoRA adapters, freezing, the builders the Hydra `model` group names, FLOP counts.

Imports within `vqa` run one way, down: run -> inspection -> training -> evaluation -> model -> data -> errors.
"""
