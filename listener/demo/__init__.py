"""``listener demo``: a bundled recording as a live HLS stream plus the daemon."""
