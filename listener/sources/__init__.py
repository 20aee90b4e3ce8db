"""Where segments come from: HLS and Orcasound playlists, HTTP, the circuit breaker."""
