"""InterActHuman training: the DiT with reference injection, mask predictor and gated audio, its data
reader over curated shards, trainer, sampler, loaders for released weights, and a synthetic corpus.
See docs/training.md."""
