"""Window scores -> clip decisions (OrcaHello's rule) and encounters."""
