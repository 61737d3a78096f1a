"""Remote endpoint sets: the pure decisions of sending a variant's requests to
replicas of another V2 server (which replica, whether it is out, whether an
extra attempt may go), with the clock and randomness passed in. The I/O that
uses them (connection pools, health probes, attempts) sits above them."""
