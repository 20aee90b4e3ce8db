"""Clip decisions -> events -> sinks (files, webhook, OrcaHello records, clips)."""
