"""The real runtime data shipped with the tests is what its README says it is: every
file listed with its size and SHA-256, and, where the shared originals are beside the
project (``../shared/data``), byte for byte the same as them."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from tests.conftest import METADATA_DIR

README = METADATA_DIR / "README.md"
ORIGINALS = Path(__file__).resolve().parents[2].parent / "shared" / "data"
ROW = re.compile(r"^\| `([^`]+\.scale)` \| (\d+) \| `([0-9a-f]{64})` \|$", re.MULTILINE)


def listed() -> dict[str, tuple[int, str]]:
    return {name: (int(size), digest) for name, size, digest in ROW.findall(README.read_text())}


def test_every_shipped_file_is_listed_with_its_checksum() -> None:
    rows = listed()
    shipped = {path.name for path in METADATA_DIR.glob("*.scale")}
    assert shipped, f"no real runtime data in {METADATA_DIR}"
    assert set(rows) == shipped, "README.md's checksum table and the files differ"
    for name, (size, digest) in rows.items():
        data = (METADATA_DIR / name).read_bytes()
        assert len(data) == size, name
        assert hashlib.sha256(data).hexdigest() == digest, name


def test_every_shipped_file_has_its_provenance() -> None:
    text = README.read_text()
    provenance = text[text.index("## Provenance") : text.index("## Checksums")]
    for name in listed():
        assert f"| `{name}` |" in provenance, f"{name}: no provenance row in README.md"


def test_copies_equal_the_shared_originals() -> None:
    if not ORIGINALS.is_dir():
        pytest.skip(f"no originals to compare with at {ORIGINALS} (only beside a checkout)")
    for name in listed():
        original = ORIGINALS / name
        assert original.exists(), f"{name} is no longer in {ORIGINALS}"
        assert (METADATA_DIR / name).read_bytes() == original.read_bytes(), name
