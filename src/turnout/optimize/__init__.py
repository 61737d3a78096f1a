"""``turnout optimize``: a model version made cheaper (fusion, int8, fp16,
pruning) and written as a new version, with a report of what it costs in
agreement and gains in speed, size and load time."""


class OptimizeError(Exception):
    """Why an optimisation cannot run: the message is for the person who asked."""
