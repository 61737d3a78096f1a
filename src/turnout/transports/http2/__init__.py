"""HTTP/2 for the gRPC transport: frames, header blocks and a server connection."""
