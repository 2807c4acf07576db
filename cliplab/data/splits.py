"""Split names and the error raised when a named split does not exist (never a silent fall-back to the whole set)."""
from __future__ import annotations

from cliplab.errors import DatasetError

# Folder names that mean "a split of the collection", never a class.
SPLIT_FOLDER_NAMES = ("train", "test", "val", "validation", "valid")


def is_split_name(name: str) -> bool:
    return name.lower() in SPLIT_FOLDER_NAMES


class SplitError(DatasetError):
    """A requested split that the dataset does not have. ``available`` lists the splits it does have."""

    def __init__(self, dataset: str, split: str, available: list[str] | tuple[str, ...]):
        self.dataset, self.split, self.available = dataset, split, list(available)
        if self.available:
            msg = f"{dataset} has no split {split!r}; its splits: {', '.join(self.available)}"
        else:
            msg = f"{dataset} has no splits (it is used whole), so split {split!r} does not exist; leave the split out"
        super().__init__(msg)
