"""Hashes used by Substrate: block hashes (blake2-256) and storage keys (twox, blake2)."""

from __future__ import annotations

import hashlib

import xxhash

__all__ = [
    "HASHERS",
    "blake2_128",
    "blake2_128_concat",
    "blake2_256",
    "hash_key",
    "identity",
    "storage_prefix",
    "twox64_concat",
    "twox128",
    "twox256",
]


def blake2_256(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=32).digest()


def blake2_128(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=16).digest()


def twox64(data: bytes) -> bytes:
    return xxhash.xxh64_intdigest(data, seed=0).to_bytes(8, "little")


def twox128(data: bytes) -> bytes:
    return b"".join(xxhash.xxh64_intdigest(data, seed=s).to_bytes(8, "little") for s in (0, 1))


def twox256(data: bytes) -> bytes:
    return b"".join(
        xxhash.xxh64_intdigest(data, seed=s).to_bytes(8, "little") for s in (0, 1, 2, 3)
    )


def blake2_128_concat(data: bytes) -> bytes:
    return blake2_128(data) + data


def twox64_concat(data: bytes) -> bytes:
    return twox64(data) + data


def identity(data: bytes) -> bytes:
    return data


# Names as they appear in V14 metadata (``StorageHasher``), in index order.
HASHERS = {
    "Blake2_128": blake2_128,
    "Blake2_256": blake2_256,
    "Blake2_128Concat": blake2_128_concat,
    "Twox128": twox128,
    "Twox256": twox256,
    "Twox64Concat": twox64_concat,
    "Identity": identity,
}


def storage_prefix(pallet: str, item: str) -> bytes:
    return twox128(pallet.encode()) + twox128(item.encode())


def hash_key(hasher: str, encoded_key: bytes) -> bytes:
    try:
        return HASHERS[hasher](encoded_key)
    except KeyError:
        raise ValueError(f"unknown storage hasher {hasher!r}") from None
