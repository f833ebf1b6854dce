"""Data: records from sources, templates, contrastive groups, prompts, collation and the DataModule."""
