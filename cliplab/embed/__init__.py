"""Embedding: the only place images and texts go through the model towers for evaluation."""
from cliplab.embed.engine import EmbeddingResult, embed_images
from cliplab.embed.texts import class_text_embeddings, embed_texts

__all__ = ["EmbeddingResult", "class_text_embeddings", "embed_images", "embed_texts"]
