"""The embedding stage: one forward pass per sample, RDS+ pooled embeddings (and losses) to a store.

Nothing is imported here, so that the options (:mod:`dataselect.embedding.options`) load without torch.
"""
