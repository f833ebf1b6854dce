"""Model: base model loading, LoRA, and the CoIN LightningModule."""
