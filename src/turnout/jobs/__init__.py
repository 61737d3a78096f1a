"""Offline batch inference (``turnout batch``): a file of rows in, the same rows
with the model's predictions out, through the same model code the server runs.

- ``columns``: which columns feed which input, and which columns the outputs
  become; rows that cannot feed the model (pure, on Arrow tables)
- ``formats``: Parquet, CSV and JSON Lines read and written in chunks
- ``resume``: the work directory that makes an interrupted run resumable
- ``model``: the model, loaded as the server loads it, and one table through
  it (shared by both engines)
- ``local``: the in-process engine, with read-ahead and a progress bar
- ``ray_engine``: the same per-chunk code as a Ray Data ``map_batches``

pyarrow and tqdm (``turnout[batch]``) and Ray (``turnout[ray]``) are imported
only by these modules, which the CLI imports only when ``turnout batch`` runs.
"""
