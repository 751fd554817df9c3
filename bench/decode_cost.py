"""What it costs to read each block fact, per block, by each decoding path.

Builds devnet consensus blocks (bodies and events encoded with the devnet's runtime
descriptions, which agree with the real metadata), then decodes them with runtimes
built from the REAL metadata in ``tests/data/metadata``:

* fast: the functions in ``blocktimesd.core.decode`` (hand-read digests and storage
  values, extrinsic envelopes with metadata-built skippers, call indices by name);
* codec: the metadata-built codecs of ``blocktimesd.core.runtime`` decoding whole
  values (every event record; every extrinsic's call);
* scalecodec 1.2.12 with the same metadata (on fewer blocks: it is slow); it reads
  ``0x45`` extrinsics as bare ones, so its extrinsic figures count misreads too.

Also the one-off cost of parsing the metadata.  Prints µs per block; no assertions.

    python bench/decode_cost.py [--blocks 3000] [--scalecodec-blocks 200] [--seed 1]
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scalecodec.base import RuntimeConfigurationObject, ScaleBytes
from scalecodec.type_registry import load_type_registry_preset

from blocktimesd.core import decode, scale
from blocktimesd.core.header import Header
from blocktimesd.core.metadata import parse_metadata
from blocktimesd.core.runtime import Runtime, RuntimeVersion
from blocktimesd.devnet.network import Network
from blocktimesd.devnet.params import ChainParams

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "metadata"


@dataclass(frozen=True, slots=True)
class Sample:
    header: Header
    extrinsics: list[bytes]
    events: bytes
    now: bytes | None
    bundles: bytes | None


def build_samples(blocks: int, seed: int) -> list[Sample]:
    net = Network(ChainParams(seed=seed, segment_rate=0.02), 1_754_000_000_000)
    net.build_history(blocks)
    content, store = net.content, net.consensus
    samples = []
    for block in store.canonical[1:]:
        samples.append(
            Sample(
                block.header,
                content.body("consensus", block),
                store.storage_value(block, content.events_key, content.lazy_storage) or b"\x00",
                store.storage_value(block, content.now_key),
                store.storage_value(block, content.bundles_key),
            )
        )
    return samples


def per_block(samples: list[Sample], fn: Callable[[Sample], Any], repeat: int = 3) -> float:
    """Best of ``repeat`` runs, in µs per block."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for sample in samples:
            fn(sample)
        best = min(best, time.perf_counter() - start)
    return best / len(samples) * 1e6


class Scalecodec:
    """scalecodec 1.2.12 set up as its README says, with a private configuration."""

    def __init__(self, data: bytes) -> None:
        self.rc = RuntimeConfigurationObject()
        self.rc.update_type_registry(load_type_registry_preset("core"))
        self.meta = self.rc.create_scale_object("MetadataVersioned", data=ScaleBytes(data))
        self.meta.decode()
        self.rc.add_portable_registry(self.meta)
        v14 = self.meta.value[1]["V14"]
        system = next(p for p in v14["pallets"] if p["name"] == "System")
        events = next(e for e in system["storage"]["entries"] if e["name"] == "Events")
        self.events_type = f"scale_info::{events['type']['Plain']}"

    def decode(self, type_string: str, data: bytes) -> Any:
        obj = self.rc.create_scale_object(type_string, data=ScaleBytes(data), metadata=self.meta)
        return obj.decode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--blocks", type=int, default=3000)
    parser.add_argument("--scalecodec-blocks", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    data = (DATA / "subspace-spec6.metadata-v14.scale").read_bytes()
    version = RuntimeVersion.decode((DATA / "subspace-spec6.runtime-version.scale").read_bytes())

    start = time.perf_counter()
    parse_metadata(data)
    ours_ms = (time.perf_counter() - start) * 1e3
    start = time.perf_counter()
    runtime = Runtime.from_metadata(data, version, "consensus")
    for type_id in range(len(runtime.metadata.types)):
        runtime.types.codec(type_id)
        runtime.types.skipper(type_id)
    runtime_ms = (time.perf_counter() - start) * 1e3
    start = time.perf_counter()
    sc = Scalecodec(data)
    scalecodec_ms = (time.perf_counter() - start) * 1e3
    print(f"metadata subspace/6 ({len(data)} bytes), parsed once per spec version:")
    print(f"  blocktimesd.core.metadata reader        {ours_ms:8.1f} ms")
    print(f"  Runtime with every codec and skipper    {runtime_ms:8.1f} ms")
    print(f"  scalecodec MetadataVersioned + registry {scalecodec_ms:8.1f} ms")

    start = time.perf_counter()
    samples = build_samples(args.blocks, args.seed)
    built_s = time.perf_counter() - start
    n_ext = sum(len(s.extrinsics) for s in samples)
    n_ev = sum(scale.decode_compact(s.events)[0] for s in samples)
    print(
        f"\n{len(samples)} devnet blocks (built in {built_s:.1f} s): "
        f"{n_ext / len(samples):.1f} extrinsics and {n_ev / len(samples):.1f} events per block"
    )

    call_type = runtime.types.types[runtime.metadata.extrinsic.type_id].param("Call")
    assert call_type is not None
    call_codec = runtime.types.codec(call_type)

    def all_calls(s: Sample) -> None:
        for ext in s.extrinsics:
            env = runtime.envelope(ext)
            reader = scale.Reader(ext, env.call_offset)
            call_codec.decode_from(reader)
            reader.expect_end("call")

    def bundles_from_events(s: Sample) -> int:
        return sum(1 for e in runtime.decode_events(s.events) if e.name == "BundleStored")

    def fast_all(s: Sample) -> None:
        decode.consensus_slot(s.header)
        decode.segment_commitment_count(s.header)
        decode.timestamp_from_extrinsics(runtime, s.extrinsics)
        decode.bundle_count_from_extrinsics(runtime, s.extrinsics)
        decode.segment_headers_in_block(runtime, s.extrinsics)

    rows: list[tuple[str, str, Callable[[Sample], Any]]] = [
        ("fast", "consensus_slot(header)", lambda s: decode.consensus_slot(s.header)),
        (
            "fast",
            "segment_commitment_count(header)",
            lambda s: decode.segment_commitment_count(s.header),
        ),
        (
            "fast",
            "timestamp_from_storage",
            lambda s: decode.timestamp_from_storage(s.now),
        ),
        (
            "fast",
            "bundle_count_from_storage",
            lambda s: decode.bundle_count_from_storage(s.bundles),
        ),
        (
            "fast",
            "timestamp_from_extrinsics",
            lambda s: decode.timestamp_from_extrinsics(runtime, s.extrinsics),
        ),
        (
            "fast",
            "bundle_count_from_extrinsics",
            lambda s: decode.bundle_count_from_extrinsics(runtime, s.extrinsics),
        ),
        (
            "fast",
            "segment_headers_in_block",
            lambda s: decode.segment_headers_in_block(runtime, s.extrinsics),
        ),
        ("fast", "all header + body facts above", fast_all),
        (
            "fast",
            "envelope() of every extrinsic",
            lambda s: [runtime.envelope(x) for x in s.extrinsics],
        ),
        ("codec", "decode_events (all records)", lambda s: runtime.decode_events(s.events)),
        ("codec", "bundle count via decode_events", bundles_from_events),
        ("codec", "every extrinsic's call, decoded", all_calls),
    ]
    print(f"\n{'path':6} {'what':40} {'µs/block':>10}")
    for path, what, fn in rows:
        print(f"{path:6} {what:40} {per_block(samples, fn):10.1f}")

    few = samples[: args.scalecodec_blocks]
    outcomes: Counter[str] = Counter()

    def sc_extrinsics(s: Sample) -> None:
        for ext in s.extrinsics:
            kind = f"{ext[scale.decode_compact(ext)[1]]:#04x}"
            try:
                sc.decode("Extrinsic", ext)
                outcomes[f"{kind} decoded"] += 1
            except Exception as exc:  # scalecodec raises many kinds of errors
                outcomes[f"{kind} raised {type(exc).__name__}"] += 1

    sc_events = per_block(few, lambda s: sc.decode(sc.events_type, s.events), repeat=1)
    sc_ext = per_block(few, sc_extrinsics, repeat=1)
    print(f"{'scale':6} {'Vec<EventRecord> (all records)':40} {sc_events:10.1f}")
    print(f"{'scale':6} {'every Extrinsic':40} {sc_ext:10.1f}")
    print(f"\nscalecodec on the first {len(few)} blocks, extrinsics by version byte:")
    for outcome, count in sorted(outcomes.items()):
        print(f"  {count:6d}  {outcome}")


if __name__ == "__main__":
    main()
