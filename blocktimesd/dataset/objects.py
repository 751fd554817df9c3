"""The dataset in object storage: ``DATA_DIR=s3://bucket/prefix``.

An :class:`ObjectPath` names an object (or a prefix) of an S3 bucket the way a
:class:`~pathlib.Path` names a file, so the layout code (partitions, file names, the
``/`` joins) is the same for both homes; it prints as its ``s3://`` URL and is *not* an
``os.PathLike`` (``os.fspath`` raises :class:`TypeError`), so a local file operation
that receives one by mistake fails loudly instead of making a folder named ``s3:``.

The S3 client is pyarrow's (:func:`filesystem`), one per process, configured by the
standard AWS settings: credentials from the standard chain (environment, shared files,
instance roles; never logged), ``AWS_REGION``/``AWS_DEFAULT_REGION``, and
``AWS_ENDPOINT_URL_S3``/``AWS_ENDPOINT_URL`` for S3-compatible stores.  Transient
errors (5xx, throttling, connection resets) are retried by the client itself (AWS's
default strategy, :data:`RETRY_ATTEMPTS` attempts: the "standard" one shares a retry
budget that steady throttling of parallel reads exhausts), then surface as
:class:`OSError` for the writer's own retry loop.
"""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path, PurePosixPath
from typing import Any, TypeAlias

__all__ = [
    "RETRY_ATTEMPTS",
    "DataPath",
    "ObjectPath",
    "as_data_path",
    "data_location",
    "filesystem",
    "location_problem",
]

RETRY_ATTEMPTS = 10  # per S3 request, by the client, before the error surfaces
_SCHEMES = ("s3",)
_URL = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://(.*)", re.DOTALL)
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


class ObjectPath(PurePosixPath):
    """``bucket/key...`` of an S3 object or prefix; ``str()`` is its ``s3://`` URL."""

    __slots__ = ()

    def __str__(self) -> str:
        return "s3://" + self.key

    def __repr__(self) -> str:
        return f"ObjectPath({self.key!r})"

    def __fspath__(self) -> str:
        raise TypeError(f"{self} is an object in S3, not a local file")

    @property
    def key(self) -> str:
        """``bucket/key``, as pyarrow's S3 filesystem names it."""
        return PurePosixPath.__str__(self)

    @property
    def bucket(self) -> str:
        return self.parts[0]

    @property
    def object_key(self) -> str:
        """The key within the bucket (empty for the bucket itself)."""
        return "/".join(self.parts[1:])


DataPath: TypeAlias = Path | ObjectPath  # where a dataset (or a file of it) lives


def location_problem(location: str) -> str | None:
    """Why ``location`` cannot be DATA_DIR, or None: a local path, or ``s3://bucket[/prefix]``
    with a valid bucket name.  Another URL scheme taken as a path would quietly make a
    folder named after it, so it is refused."""
    found = _URL.match(location.strip())
    if found is None:
        return None
    scheme, rest = found[1], found[2]
    if scheme.lower() not in _SCHEMES:
        return (
            f"is a URL ({scheme}://), and the dataset lives in a local directory or in S3 "
            "(s3://bucket/prefix); give a directory path or an s3:// URL"
        )
    if scheme != "s3":
        return f"spell the scheme s3:// in lower case (got {scheme}://)"
    bucket = rest.split("/", 1)[0]
    if not _BUCKET.fullmatch(bucket):
        return (
            f"has no valid S3 bucket name ({bucket!r}): use s3://bucket/prefix, the bucket "
            "3 to 63 lower-case letters, digits, '.' and '-'"
        )
    if any(part in (".", "..") for part in rest.split("/")):
        return "has '.' or '..' in its prefix: S3 keys are not resolved like paths"
    return None


def data_location(location: str) -> DataPath:
    """DATA_DIR as given (checked with :func:`location_problem` first): an
    :class:`ObjectPath` for ``s3://``, else a local :class:`Path`."""
    found = _URL.match(location.strip())
    if found is None:
        return Path(location)
    return ObjectPath(found[2].strip("/"))


def as_data_path(data_dir: DataPath | str) -> DataPath:
    """``data_dir`` as a path: a string is read as DATA_DIR is (``s3://`` or local)."""
    return data_location(data_dir) if isinstance(data_dir, str) else data_dir


_lock = threading.Lock()
_filesystem: Any = None


def filesystem() -> Any:
    """The process's pyarrow S3 filesystem (made on first use, from the AWS settings)."""
    global _filesystem
    with _lock:
        if _filesystem is None:
            _filesystem = _make_filesystem()
        return _filesystem


def reset_filesystem() -> None:
    """Forget the filesystem, so the next use reads the AWS settings again (tests)."""
    global _filesystem
    with _lock:
        _filesystem = None


def _make_filesystem() -> Any:
    from pyarrow import fs  # type: ignore[import-untyped, unused-ignore]

    options: dict[str, Any] = {
        "retry_strategy": fs.AwsDefaultS3RetryStrategy(max_attempts=RETRY_ATTEMPTS),
        # An object smaller than a multipart part is one PUT, not three requests.
        "allow_delayed_open": True,
    }
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        options["region"] = region
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        # pyarrow's S3FileSystem does not read these variables itself.
        scheme, _, rest = endpoint.partition("://")
        if not rest:
            scheme, rest = "https", endpoint
        options["endpoint_override"] = rest.rstrip("/")
        options["scheme"] = scheme
        options["force_virtual_addressing"] = False
    return fs.S3FileSystem(**options)
