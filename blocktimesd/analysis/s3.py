"""DuckDB over a dataset in S3 (``DATA_DIR=s3://bucket/prefix``), read in place.

DuckDB's own S3 support (its ``httpfs`` extension) is downloaded when first used,
which a host without internet access cannot do.  So a connection is given a Python
filesystem for ``s3://`` instead: fsspec's wrapper of the process's pyarrow S3 client
(:func:`blocktimesd.dataset.objects.filesystem`, with its credentials, endpoint and
retries).  The SQL is the same for both homes: ``read_parquet`` and ``glob`` take
``s3://bucket/prefix/block_times/*/*/*.parquet`` as they take a local glob.

DuckDB lists the bucket for a glob (a request per folder level, under the glob's fixed
prefix only), so a query of one chain opens that chain's objects only.  Through this
filesystem, though, DuckDB reads each object it opens whole (measured: twice the bytes
of the objects, whatever the columns or filters), where its own S3 support reads only
the footer and the column chunks a query needs; for datasets far beyond this host's
bandwidth, query with DuckDB's ``httpfs`` or pyarrow (``docs/runbook/object-storage.md``).
A request that fails transiently is retried by the client
(:data:`~blocktimesd.dataset.objects.RETRY_ATTEMPTS` times); one that still fails is a
:class:`duckdb.Error` of the query.
"""

from __future__ import annotations

import duckdb
from fsspec.implementations.arrow import ArrowFSWrapper  # type: ignore[import-untyped]

from blocktimesd.dataset.objects import filesystem

__all__ = ["SCHEME", "ObjectFilesystem", "register"]

SCHEME = "s3"


class ObjectFilesystem(ArrowFSWrapper):  # type: ignore[misc]
    """The pyarrow S3 filesystem as fsspec shows it, answering for ``s3://`` paths
    (fsspec's wrapper names itself after the Arrow type, which DuckDB would not route
    ``s3://`` to)."""

    protocol = (SCHEME,)
    # fsspec would otherwise hand back an earlier wrapper made for an equal-looking
    # client: one with other settings (an endpoint changed since) would be used.
    cachable = False


def register(con: duckdb.DuckDBPyConnection) -> None:
    """Let ``con`` read ``s3://`` paths through the process's S3 client (once)."""
    if SCHEME not in con.list_filesystems():
        con.register_filesystem(ObjectFilesystem(filesystem()))
