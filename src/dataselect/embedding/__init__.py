"""The embedding stage: one forward pass per sample, RDS+ pooled embeddings (and losses) to a store."""

from dataselect.embedding.pooling import POOLINGS, pool_hidden

__all__ = ["POOLINGS", "pool_hidden"]
