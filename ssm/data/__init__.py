"""Data preparation, tokenization and datasets for sequence-model benchmarks."""
