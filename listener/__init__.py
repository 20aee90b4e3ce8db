"""listener: real-time killer-whale call detection on live hydrophone streams."""

__version__ = "0.1.0"
