"""Which chain a dataset belongs to.

``DATA_DIR/chains/<chain>.json`` records the genesis hash of the chain whose rows are
stored under that name, written when the daemon first connects (or adopted by a
dataset that predates the record).  A node of another chain -- an endpoint swapped
for another network, a simulated chain in a real chain's dataset -- is then a clear
start-up error naming both genesis hashes, instead of a resume failure further on.
"""

from __future__ import annotations

import os

import orjson

from blocktimesd.core.redact import redact_url
from blocktimesd.dataset.object_files import ObjectFiles
from blocktimesd.dataset.objects import DataPath, ObjectPath
from blocktimesd.errors import ConfigError, StorageError

__all__ = ["GENESIS_DIR", "check_genesis", "recorded_genesis"]

GENESIS_DIR = "chains"


def _path(data_dir: DataPath, chain: str) -> DataPath:
    return data_dir / GENESIS_DIR / f"{chain}.json"


def _read(path: DataPath) -> bytes:
    if isinstance(path, ObjectPath):
        return ObjectFiles().read_bytes(path)
    return path.read_bytes()


def recorded_genesis(data_dir: DataPath, chain: str) -> str | None:
    """The genesis hash recorded for ``chain`` in ``data_dir``, if any."""
    path = _path(data_dir, chain)
    try:
        record = orjson.loads(_read(path))
    except FileNotFoundError:
        return None
    except (OSError, orjson.JSONDecodeError) as exc:
        raise StorageError(
            f"{path}: cannot read the dataset's chain record ({exc}); restore it, or delete "
            "it to record the genesis of the node the daemon connects to next",
            str(path),
        ) from None
    genesis = record.get("genesis_hash") if isinstance(record, dict) else None
    if not isinstance(genesis, str):
        raise StorageError(
            f"{path}: the dataset's chain record has no genesis_hash; delete it to record "
            "the genesis of the node the daemon connects to next",
            str(path),
        )
    return genesis


def check_genesis(data_dir: DataPath, chain: str, genesis: str, endpoint: str | None) -> bool:
    """Raise :class:`ConfigError` if ``data_dir`` holds another chain under ``chain``;
    record ``genesis`` when nothing is recorded yet (returns True then)."""
    recorded = recorded_genesis(data_dir, chain)
    if recorded is not None:
        if recorded.lower() != genesis.lower():
            where = "the node" if endpoint is None else redact_url(endpoint)
            raise ConfigError(
                f"{chain}: the dataset {data_dir} holds rows of the chain with genesis "
                f"{recorded}, but {where} serves the chain with genesis {genesis}; point the "
                "endpoint at a node of the dataset's chain, or use another DATA_DIR"
            )
        return False
    path = _path(data_dir, chain)
    record = orjson.dumps({"chain": chain, "genesis_hash": genesis})
    try:
        if isinstance(path, ObjectPath):
            ObjectFiles().write_new(path, record)  # an object appears whole
            return True
        temp = path.with_name(f".{path.name}.tmp")
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(temp, "wb") as file:
            file.write(record)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise StorageError(
            f"{path}: cannot record the dataset's chain ({exc.strerror or exc}); check that "
            "DATA_DIR is writable",
            str(path),
            exc.errno,
        ) from None
    return True
