"""``listener replay``: archive planning, bucket listing, the replay source, summary."""
