"""``GroupDataset``: a map-style dataset whose items are whole contrastive groups."""
from __future__ import annotations

from collections.abc import Sequence

from torch.utils.data import Dataset

from coin_lightning.data.collate import EncodedGroup
from coin_lightning.data.examples import Group
from coin_lightning.data.records import DataError


class GroupDataset(Dataset):
    """Dataset whose items are whole contrastive groups (so samplers and ranks never split one).

    ``groups[i]`` is the text form (:class:`~coin_lightning.data.examples.Group`), ``encoded[i]`` the
    tokenized form (:class:`~coin_lightning.data.collate.EncodedGroup`) that ``__getitem__`` returns
    once a tokenizer has been applied (before that, the text form).
    """

    def __init__(self, groups: Sequence[Group], encoded: Sequence[EncodedGroup] | None = None):
        self.groups = list(groups)
        self.encoded = None if encoded is None else list(encoded)

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, i: int) -> EncodedGroup | Group:
        return self.groups[i] if self.encoded is None else self.encoded[i]

    @property
    def lengths(self) -> list[int]:
        """Padded width (tokens) of each item; needs the encoded form."""
        if self.encoded is None:
            raise DataError("the dataset is not tokenized; give the DataModule a tokenizer")
        return [g.max_len for g in self.encoded]
