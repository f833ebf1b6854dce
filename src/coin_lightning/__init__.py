"""coin-lightning."""
