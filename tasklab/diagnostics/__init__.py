"""What happened, for people: history and stats as pandas DataFrames, and timing plots."""
