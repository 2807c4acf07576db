"""Contrastive training / fine-tuning of open_clip models on caption data (``cliplab train``)."""
from cliplab.train.trainer import TINY_CONFIG, TrainConfig, train_clip

__all__ = ["TINY_CONFIG", "TrainConfig", "train_clip"]
