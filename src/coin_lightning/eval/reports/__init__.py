"""Reports: markdown and CSV tables, figures, logger tables."""
