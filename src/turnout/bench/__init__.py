"""``turnout bench``: a load generator for V2 servers, in the spirit of Triton's
perf_analyzer, light enough to drive a server from one core."""
