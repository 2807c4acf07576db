"""Ranking shared by every retrieval task (search, caption retrieval, image retrieval): chunked top-k."""
from cliplab.tasks.caption_retrieval import chunked_topk

__all__ = ["chunked_topk"]
