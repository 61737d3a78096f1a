"""Redis Streams: inference requests in, results out, at least once."""
