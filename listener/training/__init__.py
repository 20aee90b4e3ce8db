"""``listener train``: fit the network on labelled clips through the daemon's own frontend."""
