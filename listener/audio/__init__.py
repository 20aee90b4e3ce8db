"""Decoded audio: ffmpeg decoding, timestamped windows, the ring of recent audio."""
