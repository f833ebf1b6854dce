"""Data sources: each yields :class:`~coin_lightning.data.records.Record` objects."""
