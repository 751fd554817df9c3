"""The dataset under ``DATA_DIR``: what a row is, where it lives, how it is written,
read back and repaired.  One job per module:

- :mod:`.records`: the row and its columns, the delta rule, reorg and reconciliation
  records, and the one function that forms a row;
- :mod:`.schema`: the Arrow schemas and how a file's bytes are encoded;
- :mod:`.layout`: partitions, file names, temp names, the lock name, the chain-name rule;
- :mod:`.rotation`: when an open file is written (the rotation policy);
- :mod:`.scan`: the one walk of ``DATA_DIR`` and what a data file is (the last durable
  row, the durable tail and runs, the chains on disk, the checks of a file's footer);
- :mod:`.files`: fsync'd file operations, the ``DATA_DIR`` lock, storage errors;
- :mod:`.repair`: removing a chain's rows from a block number on;
- :mod:`.writer`: the asyncio writer task, the only module here that does I/O on the
  event loop (all the others are pure or synchronous, and import no asyncio).
"""
