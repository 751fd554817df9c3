"""Configuration: precedence, lists, defaults, the mainnet checks and every message."""

from __future__ import annotations

import ast
import dataclasses
import logging
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from blocktimesd.aio.app import node_expectations, rpc_settings
from blocktimesd.aio.rpc import RpcSettings
from blocktimesd.config.load import build_config, load_config
from blocktimesd.config.model import MAINNET, ChainConfig, Config, MetricsAddr
from blocktimesd.core.chains import ChainKind
from blocktimesd.dataset.layout import is_chain_name
from blocktimesd.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
SRC = "blocktimesd.toml"
CONSENSUS_WS = "wss://rpc.mainnet.autonomys.xyz/ws"
AUTO_EVM_WS = "wss://auto-evm.mainnet.autonomys.xyz/ws"
GENESIS = "0x66455a580aabff303720aa83adbe6c44502922251c03ba73686d5245da9e21bd"

MAINNET_CONSENSUS = ChainConfig(
    chain="consensus",
    kind=ChainKind.CONSENSUS,
    endpoints=(CONSENSUS_WS,),
    k=100,
    expected_chain_name="Autonomys Mainnet",
    expected_genesis_hash=GENESIS,
    domain_ids=(0,),
)
MAINNET_AUTO_EVM = ChainConfig(
    chain="auto-evm",
    kind=ChainKind.AUTO_EVM,
    endpoints=(AUTO_EVM_WS,),
    k=64,
    expected_chain_name="Autonomys Mainnet Domain 0",
)


def build(
    document: dict[str, Any] | None = None,
    environ: dict[str, str] | None = None,
    overrides: dict[str, object] | None = None,
) -> Config:
    return build_config(document or {}, environ or {}, overrides, source=SRC)


def problems(
    document: dict[str, Any] | None = None,
    environ: dict[str, str] | None = None,
    overrides: dict[str, object] | None = None,
) -> list[str]:
    with pytest.raises(ConfigError) as info:
        build(document, environ, overrides)
    header, *lines = str(info.value).split("\n")
    assert header == f"{len(lines)} configuration problem{'s' if len(lines) > 1 else ''}:"
    return lines


# -- defaults and precedence --------------------------------------------------------------------


def test_defaults_follow_mainnet() -> None:
    config = load_config(None, {})
    assert config == Config(chains=(MAINNET_CONSENSUS, MAINNET_AUTO_EVM))
    assert config.data_dir == Path("data")
    assert config.metrics_addr == MetricsAddr("127.0.0.1", 9615)
    assert config.max_rows_per_file == 500_000
    assert config.max_file_minutes == 15
    assert config.max_inflight_requests == 64
    assert config.writer_queue_items == 10_000
    assert config.delta_window == 1000
    assert (config.rpc_batch_size, config.request_timeout_s, config.requests_per_second) == (
        1,
        30.0,
        0.0,
    )


def test_rpc_settings_come_from_the_config() -> None:
    config = build({"rpc_batch_size": 4, "request_timeout_s": 5, "requests_per_second": 20})
    settings = rpc_settings(config, config.chain("auto-evm"))
    assert settings == RpcSettings(
        endpoints=(AUTO_EVM_WS,),
        max_inflight=64,
        batch_size=4,
        request_timeout=5.0,
        requests_per_second=20.0,
    )
    # Unconfigured, the client gets exactly its own defaults.
    default = load_config(None, {})
    base = RpcSettings(endpoints=(CONSENSUS_WS,))
    assert rpc_settings(default, default.chain("consensus")) == base
    expect = node_expectations(default.chain("consensus"))
    assert (expect.chain_name, expect.genesis_hash) == ("Autonomys Mainnet", GENESIS)
    with pytest.raises(KeyError):
        default.chain("nope")


# (setting, env variable, override key, file value, env value, override value, attribute, parsed)
PRECEDENCE = [
    ("data_dir", "DATA_DIR", "/file", "/env", "/flag", "data_dir", Path),
    ("metrics_addr", "METRICS_ADDR", "a:1", "b:2", "c:3", "metrics_addr", None),
    ("max_rows_per_file", "MAX_ROWS_PER_FILE", 10, "20", 30, "max_rows_per_file", int),
    ("max_file_minutes", "MAX_FILE_MINUTES", 1, "2", "3", "max_file_minutes", int),
    ("max_inflight_requests", "MAX_INFLIGHT_REQUESTS", 8, "16", 32, "max_inflight_requests", int),
]


@pytest.mark.parametrize(
    ("key", "env", "in_file", "in_env", "in_flags", "attr", "kind"), PRECEDENCE
)
@pytest.mark.parametrize(
    ("sources", "winner"),
    [
        ((), "default"),
        (("file",), "file"),
        (("env",), "env"),
        (("flags",), "flags"),
        (("file", "env"), "env"),
        (("file", "flags"), "flags"),
        (("env", "flags"), "flags"),
        (("file", "env", "flags"), "flags"),
    ],
)
def test_precedence_flags_env_file_defaults(
    key: str,
    env: str,
    in_file: Any,
    in_env: str,
    in_flags: Any,
    attr: str,
    kind: Any,
    sources: tuple[str, ...],
    winner: str,
) -> None:
    document = {key: in_file} if "file" in sources else {}
    environ = {env: in_env} if "env" in sources else {}
    overrides = {key: in_flags} if "flags" in sources else {}
    got = getattr(build(document, environ, overrides), attr)
    raw = {"file": in_file, "env": in_env, "flags": in_flags, "default": None}[winner]
    if winner == "default":
        expected = getattr(Config(chains=()), attr)
    elif kind is None:
        host, port = str(raw).split(":")
        expected = MetricsAddr(host, int(port))
    else:
        expected = kind(raw)
    assert got == expected


@pytest.mark.parametrize(
    ("document", "environ", "overrides", "k_consensus", "k_auto_evm"),
    [
        ({}, {}, {}, 100, 64),
        ({}, {"K_CONSENSUS": "12", "K_AUTO_EVM": "7"}, {}, 12, 7),
        ({}, {"K_CONSENSUS": "12"}, {"k_consensus": 3}, 3, 64),
        (
            {"chains": [{"kind": "consensus", "k": 50}, {"kind": "auto-evm", "k": 40}]},
            {"K_AUTO_EVM": "9"},
            {},
            50,
            9,
        ),
    ],
)
def test_confirmation_depths(
    document: dict[str, Any],
    environ: dict[str, str],
    overrides: dict[str, object],
    k_consensus: int,
    k_auto_evm: int,
) -> None:
    config = build(document, environ, overrides)
    assert (config.chain("consensus").k, config.chain("auto-evm").k) == (k_consensus, k_auto_evm)


@pytest.mark.parametrize(
    ("environ", "overrides", "consensus", "auto_evm"),
    [
        ({"CONSENSUS_RPC_WS": "ws://a:1"}, {}, ("ws://a:1",), (AUTO_EVM_WS,)),
        (
            {"CONSENSUS_RPC_WS": " ws://a:1 , wss://b/ws,", "AUTO_EVM_RPC_WS": "ws://c"},
            {},
            ("ws://a:1", "wss://b/ws"),
            ("ws://c",),
        ),
        (
            {"AUTO_EVM_RPC_WS": "ws://c"},
            {"auto_evm_rpc_ws": ["ws://d", "ws://e"]},
            (CONSENSUS_WS,),
            ("ws://d", "ws://e"),
        ),
        ({"CONSENSUS_RPC_WS": "  "}, {}, (CONSENSUS_WS,), (AUTO_EVM_WS,)),  # empty: unset
    ],
)
def test_endpoint_lists(
    environ: dict[str, str],
    overrides: dict[str, object],
    consensus: tuple[str, ...],
    auto_evm: tuple[str, ...],
) -> None:
    config = build({}, environ, overrides)
    assert config.chain("consensus").endpoints == consensus
    assert config.chain("auto-evm").endpoints == auto_evm


def test_file_lists_and_generic_chains() -> None:
    config = build(
        {
            "chains": [
                {
                    "name": "taurus",
                    "kind": "consensus",
                    "endpoints": ["wss://one/ws", "wss://two/ws"],
                    "domain_ids": [0, 1],
                },
                {"name": "other", "kind": "generic", "endpoints": ["ws://127.0.0.1:9944"]},
            ]
        }
    )
    assert config.chains == (
        ChainConfig("taurus", ChainKind.CONSENSUS, ("wss://one/ws", "wss://two/ws"), 100,
                    domain_ids=(0, 1)),
        ChainConfig("other", ChainKind.GENERIC, ("ws://127.0.0.1:9944",), 100),
    )  # fmt: skip


@pytest.mark.parametrize(
    ("document", "environ", "former", "new", "attr", "value"),
    [
        ({"max_inflight_headers": 8}, {}, f"max_inflight_headers ({SRC})",
         "max_inflight_requests", "max_inflight_requests", 8),
        ({}, {"MAX_INFLIGHT_HEADERS": "9"}, "MAX_INFLIGHT_HEADERS", "MAX_INFLIGHT_REQUESTS",
         "max_inflight_requests", 9),
        ({"writer_queue_rows": 50}, {}, f"writer_queue_rows ({SRC})", "writer_queue_items",
         "writer_queue_items", 50),
    ],
)  # fmt: skip
def test_a_former_name_still_counts_with_a_warning(
    document: dict[str, Any],
    environ: dict[str, str],
    former: str,
    new: str,
    attr: str,
    value: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="blocktimesd.config"):
        config = build(document, environ)
    assert getattr(config, attr) == value
    assert f"{former}: this name is deprecated; rename it to {new}" in caplog.messages


def test_the_new_name_wins_over_a_former_one_from_a_lower_source() -> None:
    config = build({"max_inflight_headers": 8}, {"MAX_INFLIGHT_REQUESTS": "16"})
    assert config.max_inflight_requests == 16


@pytest.mark.parametrize(
    ("document", "environ", "problem"),
    [
        ({"max_inflight_requests": 8, "max_inflight_headers": 8}, {},
         f"max_inflight_requests ({SRC}): also given under its former name "
         "max_inflight_headers; remove max_inflight_headers"),
        ({}, {"MAX_INFLIGHT_REQUESTS": "8", "MAX_INFLIGHT_HEADERS": "8"},
         "MAX_INFLIGHT_REQUESTS: also given under its former name MAX_INFLIGHT_HEADERS; "
         "remove MAX_INFLIGHT_HEADERS"),
    ],
)  # fmt: skip
def test_a_setting_under_both_names_is_a_problem(
    document: dict[str, Any], environ: dict[str, str], problem: str
) -> None:
    assert problems(document, environ) == [problem]


def test_chain_names_follow_the_dataset_rule() -> None:
    """A configured chain may take any name its directory may have, and no other."""
    config = build(chain(name="taurus.v2"))
    assert config.chains[0].chain == "taurus.v2"
    assert is_chain_name("taurus.v2")
    for bad in ("a/b", ".hidden", "_x", "a=b", ""):
        assert not is_chain_name(bad)
        assert problems(chain(name=bad))[0].startswith(f"chains[0].name ({SRC}): {bad!r} is not")


def test_overrides_of_none_are_not_given() -> None:
    config = build({"data_dir": "/file"}, {}, {"data_dir": None, "k_consensus": None})
    assert config.data_dir == Path("/file")
    assert config.chain("consensus").k == 100


# -- which chain the node must be on ------------------------------------------------------------


@pytest.mark.parametrize(
    ("document", "environ", "name", "genesis"),
    [
        # The defaults are mainnet, so mainnet is checked.
        ({}, {}, "Autonomys Mainnet", GENESIS),
        # The user's own node: nothing asked for, nothing checked.
        ({}, {"CONSENSUS_RPC_WS": "ws://127.0.0.1:9944"}, None, None),
        ({"chains": [{"kind": "consensus", "endpoints": ["ws://node:9944"]}]}, {}, None, None),
        # Failover between the user's node and the public one: both must be mainnet.
        ({}, {"CONSENSUS_RPC_WS": f"ws://127.0.0.1:9944,{CONSENSUS_WS}"}, "Autonomys Mainnet",
         GENESIS),
        # Explicit expectations hold wherever the endpoints point.
        ({"chains": [{"kind": "consensus", "expected_chain_name": "Autonomys Taurus",
                      "expected_genesis_hash": GENESIS.upper().replace("0X", "0x")}]},
         {"CONSENSUS_RPC_WS": "ws://taurus:9944"}, "Autonomys Taurus", GENESIS),
        # "" switches a check off, even on mainnet.
        ({"chains": [{"kind": "consensus", "expected_chain_name": "",
                      "expected_genesis_hash": ""}]}, {}, None, None),
    ],
)  # fmt: skip
def test_expected_chain_follows_the_endpoints(
    document: dict[str, Any], environ: dict[str, str], name: str | None, genesis: str | None
) -> None:
    chain = build(document, environ).chain("consensus")
    assert (chain.expected_chain_name, chain.expected_genesis_hash) == (name, genesis)
    expect = node_expectations(chain)
    assert (expect.chain_name, expect.genesis_hash) == (name, genesis)


def test_auto_evm_on_mainnet_checks_the_name_only() -> None:
    chain = build().chain("auto-evm")
    assert chain.expected_chain_name == MAINNET[ChainKind.AUTO_EVM].chain_name
    assert chain.expected_genesis_hash is None
    own = build({}, {"AUTO_EVM_RPC_WS": "ws://127.0.0.1:9945"}).chain("auto-evm")
    assert own.expected_chain_name is None


# -- validation -------------------------------------------------------------------------------

URL_FIX = "set it to one or more WebSocket RPC URLs, e.g. wss://rpc.mainnet.autonomys.xyz/ws"
KIND_FIX = "set it to consensus, auto-evm or generic"
ADDR_FIX = "set it to the address to serve /metrics on, e.g. 127.0.0.1:9615"
BAD_HOST = (
    "has a host that is neither an IP address nor a DNS name (labels of 1 to 63 characters, "
    "253 in all)"
)
TOO_DEEP = (
    "is above the maximum of 100000: a block would wait for over 100000 blocks (about a week) "
    "to be written"
)
LABEL_64 = "a" * 64
TABLES_FIX = "write each chain as a [[chains]] table"


def chain(**table: Any) -> dict[str, Any]:
    return {"chains": [{"kind": "consensus", **table}]}


MESSAGES: list[tuple[dict[str, Any], dict[str, str], dict[str, object], str]] = [
    ({}, {"K_CONSENSUS": "abc"}, {},
     "K_CONSENSUS: 'abc' is not a whole number; set it to the confirmation depth, e.g. 100"),
    ({}, {"K_CONSENSUS": str(10**20)}, {},
     f"K_CONSENSUS: '{10**20}' {TOO_DEEP}; set it to the confirmation depth, e.g. 100"),
    (chain(k=100_001), {}, {},
     f"chains[0].k ({SRC}): 100001 {TOO_DEEP}; set it to the confirmation depth, e.g. 100"),
    ({"delta_window": 10**20}, {}, {},
     f"delta_window ({SRC}): {10**20} is above the maximum of 1000000: the quantiles sort the "
     "whole window at every scrape; set it to how many recent deltas per chain the quantiles "
     "cover, e.g. 1000"),
    ({"max_file_minutes": "15"}, {}, {},
     f"max_file_minutes ({SRC}): '15' is a string, not a whole number (remove the quotes); "
     "set it to the most minutes a Parquet file stays open, e.g. 15"),
    (chain(k="100"), {}, {},
     f"chains[0].k ({SRC}): '100' is a string, not a whole number (remove the quotes); set it "
     "to the confirmation depth, e.g. 100"),
    ({"request_timeout_s": "30"}, {}, {},
     f"request_timeout_s ({SRC}): '30' is a string, not a number (remove the quotes); set it "
     "to the seconds to wait for an answer, e.g. 30"),
    ({}, {"K_AUTO_EVM": "0"}, {},
     "K_AUTO_EVM: '0' is below the minimum of 1; set it to the confirmation depth, e.g. 64"),
    (chain(k=2.5), {}, {},
     f"chains[0].k ({SRC}): 2.5 is not a whole number; set it to the confirmation depth, "
     "e.g. 100"),
    ({"max_rows_per_file": 1.5}, {}, {},
     f"max_rows_per_file ({SRC}): 1.5 is not a whole number; set it to the most rows in one "
     "Parquet file, e.g. 500000"),
    ({"max_file_minutes": True}, {}, {},
     f"max_file_minutes ({SRC}): True is not a whole number; set it to the most minutes a "
     "Parquet file stays open, e.g. 15"),
    ({}, {"MAX_INFLIGHT_REQUESTS": "-1"}, {},
     "MAX_INFLIGHT_REQUESTS: '-1' is below the minimum of 1; set it to the most requests in "
     "flight per connection (blocks fetched at once included), e.g. 64"),
    ({}, {"MAX_ROWS_PER_FILE": "lots"}, {},
     "MAX_ROWS_PER_FILE: 'lots' is not a whole number; set it to the most rows in one Parquet "
     "file, e.g. 500000"),
    ({}, {"MAX_FILE_MINUTES": "0"}, {},
     "MAX_FILE_MINUTES: '0' is below the minimum of 1; set it to the most minutes a Parquet "
     "file stays open, e.g. 15"),
    ({"rpc_batch_size": 0}, {}, {},
     f"rpc_batch_size ({SRC}): 0 is below the minimum of 1; set it to the calls per JSON-RPC "
     "batch (1 sends them one by one), e.g. 1"),
    ({"request_timeout_s": 0}, {}, {},
     f"request_timeout_s ({SRC}): 0 is not above 0; set it to the seconds to wait for an "
     "answer, e.g. 30"),
    ({"head_poll_s": 0}, {}, {},
     f"head_poll_s ({SRC}): 0 is not above 0; set it to the seconds without a new head after "
     "which the node's best head is asked for (a node may drop a subscription silently), "
     "e.g. 15"),
    ({"checkpoint_s": -1}, {}, {},
     f"checkpoint_s ({SRC}): -1 is below the minimum of 0; set it to the seconds between "
     "writes of each chain's open file as it stands (rows are durable within about this "
     "long; 0 writes complete files only), e.g. 60"),
    ({"request_timeout_s": "soon"}, {}, {},
     f"request_timeout_s ({SRC}): 'soon' is not a number; set it to the seconds to wait for "
     "an answer, e.g. 30"),
    ({"requests_per_second": -1}, {}, {},
     f"requests_per_second ({SRC}): -1 is below the minimum of 0; set it to the most requests "
     "per second per chain (0 for no limit), e.g. 0"),
    ({"requests_per_second": "nan"}, {}, {},
     f"requests_per_second ({SRC}): 'nan' is not a number; set it to the most requests per "
     "second per chain (0 for no limit), e.g. 0"),
    ({"delta_window": 0}, {}, {},
     f"delta_window ({SRC}): 0 is below the minimum of 1; set it to how many recent deltas per "
     "chain the quantiles cover, e.g. 1000"),
    ({"writer_queue_items": "many"}, {}, {},
     f"writer_queue_items ({SRC}): 'many' is not a whole number; set it to the most items "
     "(rows, or a batch of rows) waiting for the writer, e.g. 10000"),
    ({"shutdown_deadline_s": -3}, {}, {},
     f"shutdown_deadline_s ({SRC}): -3 is not above 0; set it to the seconds a clean shutdown "
     "may take, e.g. 8"),
    ({"data_dir": 5}, {}, {},
     f"data_dir ({SRC}): 5 is not a string; set it to the directory for Parquet files, "
     "e.g. /var/lib/blocktimesd"),
    ({}, {}, {"data_dir": " "},
     "data_dir (command line): ' ' is empty; set it to the directory for Parquet files, "
     "e.g. /var/lib/blocktimesd"),
    ({}, {"METRICS_ADDR": "9615"}, {},
     "METRICS_ADDR: '9615' is not host:port with a port from 0 to 65535; set it to the "
     "address to serve /metrics on, e.g. 127.0.0.1:9615"),
    ({}, {"METRICS_ADDR": "localhost:99999"}, {},
     "METRICS_ADDR: 'localhost:99999' is not host:port with a port from 0 to 65535; set it to "
     "the address to serve /metrics on, e.g. 127.0.0.1:9615"),
    ({}, {"METRICS_ADDR": f"{LABEL_64}.example:9615"}, {},
     f"METRICS_ADDR: '{LABEL_64}.example:9615' {BAD_HOST}; {ADDR_FIX}"),
    ({}, {"METRICS_ADDR": f"{'h' * 300}:9615"}, {},
     f"METRICS_ADDR: '{'h' * 300}:9615' {BAD_HOST}; {ADDR_FIX}"),
    ({}, {"METRICS_ADDR": "no host!:9615"}, {},
     f"METRICS_ADDR: 'no host!:9615' {BAD_HOST}; {ADDR_FIX}"),
    ({}, {"CONSENSUS_RPC_WS": f"ws://{LABEL_64}.example:9944"}, {},
     f"CONSENSUS_RPC_WS: 'ws://{LABEL_64}.example:9944' {BAD_HOST}; {URL_FIX}"),
    ({}, {"CONSENSUS_RPC_WS": "ws://node:0"}, {},
     f"CONSENSUS_RPC_WS: 'ws://node:0' has port 0, not a port from 1 to 65535; {URL_FIX}"),
    ({}, {"CONSENSUS_RPC_WS": "ws://node:65536"}, {},
     f"CONSENSUS_RPC_WS: 'ws://node:65536' is not a ws:// or wss:// URL; {URL_FIX}"),
    # Credentials never appear in a message.
    ({}, {"CONSENSUS_RPC_WS": "http://alice:S3cret@node/rpc?apikey=KEY"}, {},
     f"CONSENSUS_RPC_WS: 'http://***@node/rpc?apikey=***' is not a ws:// or wss:// URL; "
     f"{URL_FIX}"),
    (chain(endpoints=[f"wss://alice:S3cret@{LABEL_64}/?apikey=KEY"]), {}, {},
     f"chains[0].endpoints ({SRC}): 'wss://***@{LABEL_64}/?apikey=***' {BAD_HOST}; {URL_FIX}"),
    ({"chains": [{"kind": "auto-evm"}]}, {"CONSENSUS_RPC_WS": "ws://alice:S3cret@a/?k=KEY, ws://b"},
     {},
     "CONSENSUS_RPC_WS: 'ws://***@a/?k=***,ws://b' applies to the chain of kind 'consensus', "
     f"but none is configured; add one to the chains of {SRC}, or unset CONSENSUS_RPC_WS"),
    ({}, {"CONSENSUS_RPC_WS": "https://rpc.mainnet.autonomys.xyz/ws"}, {},
     f"CONSENSUS_RPC_WS: 'https://rpc.mainnet.autonomys.xyz/ws' is not a ws:// or wss:// URL; "
     f"{URL_FIX}"),
    ({}, {"AUTO_EVM_RPC_WS": " , "}, {},
     "AUTO_EVM_RPC_WS: ' , ' lists no endpoints; set it to one or more WebSocket RPC URLs, "
     "e.g. wss://auto-evm.mainnet.autonomys.xyz/ws"),
    (chain(endpoints=["ws://"]), {}, {},
     f"chains[0].endpoints ({SRC}): 'ws://' is not a ws:// or wss:// URL; {URL_FIX}"),
    (chain(endpoints=5), {}, {},
     f"chains[0].endpoints ({SRC}): 5 is not a list of URLs; {URL_FIX}"),
    ({"chains": [{"kind": "generic", "name": "g"}]}, {}, {},
     f"chains[0].endpoints ({SRC}): missing; a generic chain has no default endpoint, set it "
     "to one or more WebSocket RPC URLs, e.g. ws://127.0.0.1:9944"),
    ({"chains": [{"kind": "evm"}]}, {}, {},
     f"chains[0].kind ({SRC}): 'evm' is not a chain kind; {KIND_FIX}"),
    ({"chains": [{"name": "x"}]}, {}, {},
     f"chains[0].kind ({SRC}): missing; {KIND_FIX}"),
    (chain(name="my chain"), {}, {},
     f"chains[0].name ({SRC}): 'my chain' is not a usable chain name; use letters, digits, "
     "'-', '_' and '.', starting with a letter or digit, e.g. consensus"),
    ({"chains": [{"kind": "consensus"}, {"kind": "generic", "name": "consensus",
                                         "endpoints": ["ws://x"]}]}, {}, {},
     f"chains[1].name ({SRC}): 'consensus' is already the name of chains[0]; give each chain "
     "its own name"),
    (chain(expected_chain_name=5), {}, {},
     f"chains[0].expected_chain_name ({SRC}): 5 is not a string; set it to the name the node "
     'reports in system_chain, e.g. "Autonomys Mainnet", or to "" to skip the check'),
    (chain(expected_genesis_hash="0x12"), {}, {},
     f"chains[0].expected_genesis_hash ({SRC}): '0x12' is not a 0x-prefixed 32-byte hex hash; "
     "set it to the chain's block 0 hash (chain_getBlockHash(0)), or to \"\" to skip the "
     "check"),
    (chain(domain_ids=[0, 0]), {}, {},
     f"chains[0].domain_ids ({SRC}): [0, 0] is not a list of distinct domain ids; set it to "
     "the domains whose bundles are counted, e.g. [0]"),
    ({"chains": [{"kind": "auto-evm", "domain_ids": [0]}]}, {}, {},
     f"chains[0].domain_ids ({SRC}): only consensus chains count domain bundles; remove "
     "domain_ids from this chain"),
    ({"chains": {"kind": "generic"}}, {}, {},
     f"chains ({SRC}): {{'kind': 'generic'}} is not a list of tables; {TABLES_FIX}"),
    ({"chains": []}, {}, {},
     f"chains ({SRC}): the list is empty; add a [[chains]] table, or remove chains to follow "
     "mainnet"),
    ({"chains": [5]}, {}, {},
     f"chains[0] ({SRC}): 5 is not a table; {TABLES_FIX}"),
    (chain(depth=3), {}, {},
     f"chains[0].depth ({SRC}): unknown setting; remove it or correct its spelling (known: "
     "domain_ids, endpoints, expected_chain_name, expected_genesis_hash, k, kind, name)"),
    ({"max_rows": 3}, {}, {},
     f"max_rows ({SRC}): unknown setting; remove it or correct its spelling (known: chains, "
     "checkpoint_s, data_dir, delta_window, head_poll_s, max_file_minutes, "
     "max_inflight_requests, max_rows_per_file, metrics_addr, request_timeout_s, "
     "requests_per_second, rpc_batch_size, shutdown_deadline_s, writer_queue_items)"),
    ({}, {}, {"nope": 1},
     "nope (command line): unknown setting; remove it or correct its spelling (known: "
     "auto_evm_rpc_ws, checkpoint_s, consensus_rpc_ws, data_dir, delta_window, head_poll_s, "
     "k_auto_evm, k_consensus, max_file_minutes, max_inflight_requests, max_rows_per_file, "
     "metrics_addr, request_timeout_s, requests_per_second, rpc_batch_size, "
     "shutdown_deadline_s, writer_queue_items)"),
    ({"chains": [{"kind": "auto-evm"}]}, {"CONSENSUS_RPC_WS": "ws://a"}, {},
     "CONSENSUS_RPC_WS: 'ws://a' applies to the chain of kind 'consensus', but none is "
     f"configured; add one to the chains of {SRC}, or unset CONSENSUS_RPC_WS"),
    ({"chains": [{"kind": "auto-evm"}]}, {}, {"k_consensus": 5},
     "k_consensus (command line): 5 applies to the chain of kind 'consensus', but none is "
     f"configured; add one to the chains of {SRC}, or leave out k_consensus"),
    ({"chains": [{"kind": "consensus", "name": "a"}, {"kind": "consensus", "name": "b"}]},
     {"K_CONSENSUS": "5"}, {},
     "K_CONSENSUS: '5' applies to the one chain of kind 'consensus', but 2 are configured; "
     f"set k in each of their tables in {SRC}, and unset K_CONSENSUS"),
]  # fmt: skip


@pytest.mark.parametrize(("document", "environ", "overrides", "message"), MESSAGES)
def test_every_validation_message(
    document: dict[str, Any], environ: dict[str, str], overrides: dict[str, object], message: str
) -> None:
    assert problems(document, environ, overrides) == [message]


def test_all_problems_are_reported_at_once() -> None:
    lines = problems(
        {"max_rows_per_file": 0, "chains": [{"kind": "consensus", "k": "x"}, {"kind": "nope"}]},
        {"METRICS_ADDR": "nowhere", "CONSENSUS_RPC_WS": "http://a,ws://ok,ftp://b"},
        {"data_dir": ""},
    )
    assert [line.split(":")[0] for line in lines] == [
        "data_dir (command line)",
        "METRICS_ADDR",
        f"max_rows_per_file ({SRC})",
        f"chains[1].kind ({SRC})",
        "CONSENSUS_RPC_WS",
        "CONSENSUS_RPC_WS",
        f"chains[0].k ({SRC})",
    ]
    assert "'http://a'" in lines[4]
    assert "'ftp://b'" in lines[5]


PROBLEMS = [
    "is not a whole number",
    "is below the minimum of",
    "is above the maximum of",
    "is a string, not a whole number (remove the quotes)",
    "is a string, not a number (remove the quotes)",
    "has a host that is neither an IP address nor a DNS name",
    "has port 0, not a port from 1 to 65535",
    "is not a number",
    "is not above 0",
    "is not a string",
    "is empty",
    "is not host:port with a port from 0 to 65535",
    "is not a ws:// or wss:// URL",
    "lists no endpoints",
    "is not a list of URLs",
    "missing; a generic chain has no default endpoint",
    "is not a chain kind",
    "missing; set it to consensus, auto-evm or generic",
    "is not a usable chain name",
    "is already the name of",
    "is not a 0x-prefixed 32-byte hex hash",
    "is not a list of distinct domain ids",
    "only consensus chains count domain bundles",
    "is not a list of tables",
    "the list is empty",
    "is not a table",
    "unknown setting",
    "but none is configured",
    "are configured; set k in each of their tables",
]


def test_every_problem_and_fix_is_tested_and_documented() -> None:
    doc = (ROOT / "docs/runbook/config.md").read_text()
    messages = [message for *_, message in MESSAGES]
    for problem in PROBLEMS:
        assert problem in doc, problem
        assert any(problem in message for message in messages), problem
    for message in messages:
        fix = message.replace(SRC, "FILE").split("; ", 1)[1].split(" (known")[0].split(", e.g.")[0]
        assert fix in doc, message


def test_config_error_maps_to_exit_code_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from blocktimesd import cli
    from blocktimesd.commands import devnet as devnet_cli

    async def run(args: object) -> int:
        load_config(None, {"K_CONSENSUS": "abc", "METRICS_ADDR": "x"})
        return 0

    monkeypatch.setattr(devnet_cli, "run_devnet", run)
    assert cli.main(["devnet"]) == 2
    err = capsys.readouterr().err
    assert "blocktimesd: 2 configuration problems:\n" in err
    assert "K_CONSENSUS: 'abc' is not a whole number" in err


def test_numbers_as_text_come_only_from_the_environment_and_command_line() -> None:
    assert build({}, {"MAX_FILE_MINUTES": "15", "K_CONSENSUS": " 7 "}).max_file_minutes == 15
    assert build({}, {"K_CONSENSUS": " 7 "}).chains[0].k == 7
    assert build({}, {}, {"max_file_minutes": "15"}).max_file_minutes == 15
    assert build({"request_timeout_s": 2.5}).request_timeout_s == 2.5
    assert build(chain(k=100_000)).chains[0].k == 100_000


@pytest.mark.parametrize(
    "url",
    [
        "ws://127.0.0.1:9944",
        "ws://[::1]:9944/ws",
        "wss://rpc.mainnet.autonomys.xyz/ws",
        "wss://node_1.internal/ws?apikey=KEY",
        f"ws://{LABEL_64[:63]}.example",
        "wss://bücher.example/ws",
        "ws://user:pw@node:1/",
    ],
)
def test_endpoints_that_resolve_are_accepted(url: str) -> None:
    assert build({}, {"CONSENSUS_RPC_WS": url}).chains[0].endpoints == (url,)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("METRICS_ADDR", f"{LABEL_64}.example:9615"),
        ("METRICS_ADDR", f"{'h' * 300}:9615"),
        ("CONSENSUS_RPC_WS", "http://alice:S3cret@node/?apikey=KEY"),
    ],
)
def test_a_bad_address_exits_2_naming_the_setting_without_secrets(
    variable: str,
    value: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from blocktimesd import cli

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(variable, value)
    assert cli.main(["run", "--data", str(tmp_path / "data")]) == 2
    out, err = capsys.readouterr()
    assert err.startswith(f"blocktimesd: 1 configuration problem:\n{variable}: ")
    assert "Traceback" not in out + err
    for secret in ("alice", "S3cret", "KEY"):
        assert secret not in out + err


# -- the file -----------------------------------------------------------------------------------


def test_file_is_read_and_paths_are_relative_to_it(tmp_path: Path) -> None:
    path = tmp_path / "conf" / "blocktimesd.toml"
    path.parent.mkdir()
    path.write_text(
        'data_dir = "parquet"\nmax_file_minutes = 5\n'
        '[[chains]]\nkind = "consensus"\nendpoints = ["ws://node:9944"]\nk = 7\n'
    )
    config = load_config(path, {"MAX_FILE_MINUTES": "6"}, {})
    assert config.data_dir == tmp_path / "conf" / "parquet"
    assert config.max_file_minutes == 6
    assert config.chains == (ChainConfig("consensus", ChainKind.CONSENSUS, ("ws://node:9944",), 7,
                                         domain_ids=(0,)),)  # fmt: skip
    assert load_config(path, {"DATA_DIR": "here"}).data_dir == Path("here")
    path.write_text('data_dir = "/abs"\n')
    assert load_config(path, {}).data_dir == Path("/abs")


def test_file_errors(tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    with pytest.raises(ConfigError) as info:
        load_config(missing, {})
    assert str(info.value) == (
        f"{missing}: cannot read the configuration file (No such file or directory); check "
        "the --config path"
    )
    broken = tmp_path / "broken.toml"
    broken.write_text("k = = 3\n")
    with pytest.raises(ConfigError, match=r"broken\.toml: not valid TOML \(.*line 1.*\); fix"):
        load_config(broken, {})
    bad = tmp_path / "bad.toml"
    bad.write_text('[[chains]]\nkind = "consensus"\nk = "x"\n')
    with pytest.raises(ConfigError, match=rf"chains\[0\]\.k \({re.escape(str(bad))}\): 'x'"):
        load_config(bad, {})


def test_example_file_documents_the_defaults() -> None:
    example = ROOT / "config.example.toml"
    assert load_config(example, {}) == load_config(None, {})
    # Uncommented, every setting in it is the default.
    setting = re.compile(r"^# (\[\[chains\]\]|[a-z_]+ = .*)$")
    text = "\n".join(
        m.group(1) if (m := setting.match(line)) else line
        for line in example.read_text().splitlines()
    )
    uncommented = build_config(tomllib.loads(text), {}, base_dir=ROOT)
    # A relative data_dir in a file is relative to the file.
    assert uncommented == dataclasses.replace(load_config(None, {}), data_dir=ROOT / "data")
    keys = set(re.findall(r"^([a-z_]+) = ", text, re.MULTILINE))
    config_keys = {f.name for f in dataclasses.fields(Config)} - {"chains"}
    # A chain table names its chain with `name`.
    chain_keys = {f.name for f in dataclasses.fields(ChainConfig)} - {"chain"} | {"name"}
    assert keys == config_keys | chain_keys


def test_runbook_lists_every_setting_and_variable() -> None:
    doc = (ROOT / "docs/runbook/config.md").read_text()
    names = (
        {f.name for f in dataclasses.fields(Config)}
        | {f.name for f in dataclasses.fields(ChainConfig) if f.name != "chain"}
        | {"name"}
    )
    variables = {
        "CONSENSUS_RPC_WS",
        "AUTO_EVM_RPC_WS",
        "K_CONSENSUS",
        "K_AUTO_EVM",
        "DATA_DIR",
        "METRICS_ADDR",
        "MAX_ROWS_PER_FILE",
        "MAX_FILE_MINUTES",
        "MAX_INFLIGHT_REQUESTS",
    }
    for name in names | variables:
        assert f"`{name}`" in doc, name


def test_the_configuration_depends_on_no_io_layer() -> None:
    """Plain values only: the wiring builds the RPC and preflight settings from them."""
    for path in sorted((ROOT / "blocktimesd" / "config").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [alias.name for alias in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            for name in names:
                assert not name.startswith(("blocktimesd.aio", "blocktimesd.commands")), (
                    f"{path.name}:{node.lineno} imports {name}"
                )
