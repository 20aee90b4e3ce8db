"""Stages joined: the live station pipeline, the micro-batcher, file scoring."""
