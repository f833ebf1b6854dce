"""Training: callbacks, loggers and the run procedure behind `python -m coin_lightning.train`."""
