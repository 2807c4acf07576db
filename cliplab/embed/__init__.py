"""Embedding engine: the only place images and texts go through the model towers for evaluation."""
from cliplab.embed.engine import EmbeddingResult, embed_images, embed_texts

__all__ = ["EmbeddingResult", "embed_images", "embed_texts"]
