"""Settings, from four sources, as frozen dataclasses.

Precedence, highest first: command-line overrides, environment variables, the TOML
file given with ``--config``, built-in defaults.  Without any of them the daemon
follows Autonomys mainnet (consensus chain and Auto-EVM domain) through the public
endpoints.

The environment variables that set a chain's endpoints or depth
(``CONSENSUS_RPC_WS``, ``AUTO_EVM_RPC_WS``, ``K_CONSENSUS``, ``K_AUTO_EVM``) apply to
the one configured chain of that kind.

A node's chain name and genesis hash are checked against the configuration when the
chain's entry sets them.  When it does not, the mainnet values are expected only if
one of the chain's endpoints is the public mainnet endpoint: a user who points the
daemon at another node (a testnet, a devnet, a private network) has not asked for a
mainnet check, and gets none.  ``expected_chain_name = ""`` switches a check off.

Validation collects every problem and raises one :class:`ConfigError` listing them,
one per line, each naming the setting as the user wrote it, the bad value and the fix.
An endpoint URL in a message is shown without its credentials
(:func:`~blocktimesd.core.redact.redact_url`).  ``docs/runbook/config.md`` lists
every setting and message.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import math
import os
import re
import tomllib
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from blocktimesd.aio.chain import ChainKind
from blocktimesd.aio.preflight import NodeExpectations
from blocktimesd.aio.rpc import RpcSettings
from blocktimesd.core.redact import redact_url
from blocktimesd.errors import ConfigError

__all__ = [
    "MAINNET",
    "OVERRIDE_KEYS",
    "ChainConfig",
    "Config",
    "MainnetChain",
    "MetricsAddr",
    "build_config",
    "command_line_chain",
    "load_config",
]


@dataclass(frozen=True, slots=True)
class MainnetChain:
    """What a chain kind defaults to: the public mainnet node and what it must report."""

    endpoint: str
    k: int
    chain_name: str
    genesis_hash: str | None


MAINNET: Mapping[ChainKind, MainnetChain] = {
    ChainKind.CONSENSUS: MainnetChain(
        endpoint="wss://rpc.mainnet.autonomys.xyz/ws",
        k=100,
        chain_name="Autonomys Mainnet",
        genesis_hash="0x66455a580aabff303720aa83adbe6c44502922251c03ba73686d5245da9e21bd",
    ),
    ChainKind.AUTO_EVM: MainnetChain(
        endpoint="wss://auto-evm.mainnet.autonomys.xyz/ws",
        k=64,
        chain_name="Autonomys Mainnet Domain 0",
        genesis_hash=None,
    ),
}
_GENERIC_K = 100  # a generic chain has no mainnet entry; be as careful as on consensus
# A row is written only once k blocks are built on its block, and the k unconfirmed
# blocks are held in memory: 100,000 is about a week of consensus blocks.
_MAX_K = 100_000
_MAX_K_WHY = "a block would wait for over 100000 blocks (about a week) to be written"


@dataclass(frozen=True, slots=True)
class MetricsAddr:
    host: str
    port: int  # 0: any free port

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class ChainConfig:
    name: str  # the chain's label in metrics, logs and file paths
    kind: ChainKind
    endpoints: tuple[str, ...]  # failover order
    k: int  # a block is confirmed once k blocks are built on it
    expected_chain_name: str | None = None  # None: not checked
    expected_genesis_hash: str | None = None  # lower-case 0x hex; None: not checked
    domain_ids: tuple[int, ...] = ()  # consensus: the domains whose bundles are counted

    def expectations(self) -> NodeExpectations:
        return NodeExpectations(
            chain_name=self.expected_chain_name, genesis_hash=self.expected_genesis_hash
        )


@dataclass(frozen=True, slots=True)
class Config:
    chains: tuple[ChainConfig, ...]
    data_dir: Path = Path("data")
    metrics_addr: MetricsAddr = MetricsAddr("127.0.0.1", 9615)
    max_rows_per_file: int = 500_000
    max_file_minutes: int = 15
    checkpoint_s: float = 60.0  # the open file is written as it stands this often; 0: never
    max_inflight_headers: int = 64  # also the cap on requests in flight per connection
    rpc_batch_size: int = 1
    request_timeout_s: float = 30.0
    head_poll_s: float = 15.0  # silence after which the node's best head is asked for
    requests_per_second: float = 0.0  # per chain; 0: no limit
    delta_window: int = 1000  # recent deltas per chain behind the live quantiles
    writer_queue_rows: int = 10_000
    shutdown_deadline_s: float = 8.0  # below the 10 s docker stop gives before SIGKILL

    def chain(self, name: str) -> ChainConfig:
        for chain in self.chains:
            if chain.name == name:
                return chain
        raise KeyError(name)

    def rpc_settings(self, chain: ChainConfig) -> RpcSettings:
        return RpcSettings(
            endpoints=chain.endpoints,
            max_inflight=self.max_inflight_headers,
            batch_size=self.rpc_batch_size,
            request_timeout=self.request_timeout_s,
            requests_per_second=self.requests_per_second,
        )


# -- parsing: each parser returns the value or raises _Invalid ------------------------------


class _Invalid(Exception):
    def __init__(self, *problems: tuple[Any, str]) -> None:
        super().__init__(problems)
        self.problems = problems  # (bad value, what is wrong with it)


_Parser = Callable[[Any], Any]


@dataclass(frozen=True, slots=True)
class _Whole:
    """A whole number from ``minimum`` to ``maximum`` (``why_maximum`` says why).  Text
    is parsed where settings are text (environment, command line); a TOML file has
    numbers, so ``text=False`` refuses a quoted one there."""

    minimum: int
    maximum: int | None = None
    why_maximum: str = ""
    text: bool = True

    def __call__(self, value: Any) -> int:
        number: int | None = None
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        elif isinstance(value, str):
            with contextlib.suppress(ValueError):
                number = int(value.strip())
            if number is not None and not self.text:
                raise _Invalid((value, "is a string, not a whole number (remove the quotes)"))
        if number is None:
            raise _Invalid((value, "is not a whole number"))
        if number < self.minimum:
            raise _Invalid((value, f"is below the minimum of {self.minimum}"))
        if self.maximum is not None and number > self.maximum:
            why = f": {self.why_maximum}" if self.why_maximum else ""
            raise _Invalid((value, f"is above the maximum of {self.maximum}{why}"))
        return number


@dataclass(frozen=True, slots=True)
class _Number:
    """A finite number, at least (or, with ``above``, more than) ``minimum``; text as in
    :class:`_Whole`."""

    minimum: float
    above: bool
    text: bool = True

    def __call__(self, value: Any) -> float:
        number: float | None = None
        if isinstance(value, int | float) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):
            with contextlib.suppress(ValueError):
                number = float(value.strip())
            if number is not None and math.isfinite(number) and not self.text:
                raise _Invalid((value, "is a string, not a number (remove the quotes)"))
        if number is None or not math.isfinite(number):
            raise _Invalid((value, "is not a number"))
        if self.above and number <= self.minimum:
            raise _Invalid((value, f"is not above {self.minimum:g}"))
        if number < self.minimum:
            raise _Invalid((value, f"is below the minimum of {self.minimum:g}"))
        return number


def _whole(minimum: int, maximum: int | None = None, why_maximum: str = "") -> _Whole:
    return _Whole(minimum, maximum, why_maximum)


def _number(minimum: float, *, above: bool) -> _Number:
    return _Number(minimum, above)


def _directory(value: Any) -> Path:
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str):
        raise _Invalid((value, "is not a string"))
    if not value.strip():
        raise _Invalid((value, "is empty"))
    return Path(value.strip())


_BAD_HOST = (
    "has a host that is neither an IP address nor a DNS name (labels of 1 to 63 "
    "characters, 253 in all)"
)
_LABEL = re.compile(r"[A-Za-z0-9_-]{1,63}\Z")


def _valid_host(host: str) -> bool:
    """An IP address, or a name the resolver accepts: IDNA-encodable, in labels of 1 to
    63 characters, 253 in all.  Anything else fails later, inside the socket layer,
    with an error that does not name the setting."""
    with contextlib.suppress(ValueError):
        ipaddress.ip_address(host)
        return True
    try:
        name = host.encode("idna").decode("ascii")
    except UnicodeError:
        return False
    name = name.removesuffix(".")
    return 0 < len(name) <= 253 and all(_LABEL.match(label) for label in name.split("."))


def _metrics_addr(value: Any) -> MetricsAddr:
    if isinstance(value, str):
        host, _, port = value.strip().rpartition(":")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        if host and port.isdigit() and int(port) <= 65535:
            if not _valid_host(host):
                raise _Invalid((value, _BAD_HOST))
            return MetricsAddr(host, int(port))
    raise _Invalid((value, "is not host:port with a port from 0 to 65535"))


def _endpoints(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        items: list[Any] = value.split(",")
    elif isinstance(value, list):
        items = value
    else:
        raise _Invalid((value, "is not a list of URLs"))
    urls = [item.strip() if isinstance(item, str) else item for item in items]
    urls = [url for url in urls if url != ""]
    if not urls:
        raise _Invalid((value, "lists no endpoints"))
    bad = [(_shown(url), problem) for url in urls if (problem := _ws_url_problem(url))]
    if bad:
        raise _Invalid(*bad)
    return tuple(urls)


def _ws_url_problem(url: Any) -> str | None:
    """What is wrong with an endpoint URL, or None."""
    if not isinstance(url, str) or any(c.isspace() for c in url):
        return "is not a ws:// or wss:// URL"
    try:
        parts = urlsplit(url)
        port = parts.port  # raises on a port that is not a number from 0 to 65535
    except ValueError:
        return "is not a ws:// or wss:// URL"
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        return "is not a ws:// or wss:// URL"
    if not _valid_host(parts.hostname):
        return _BAD_HOST
    if port == 0:
        return "has port 0, not a port from 1 to 65535"
    return None


def _shown(value: Any) -> Any:
    """An endpoint setting as a message may show it: each URL without credentials."""
    if isinstance(value, str):
        return ",".join(redact_url(url.strip()) if url.strip() else url for url in value.split(","))
    if isinstance(value, list):
        return [_shown(item) if isinstance(item, str) else item for item in value]
    return value


def _kind(value: Any) -> ChainKind:
    try:
        return ChainKind(value)
    except ValueError:
        raise _Invalid((value, "is not a chain kind")) from None


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*\Z")


def _chain_label(value: Any) -> str:
    if not isinstance(value, str) or not _NAME.match(value):
        raise _Invalid((value, "is not a usable chain name"))
    return value


def _expected_name(value: Any) -> str | None:
    if not isinstance(value, str):
        raise _Invalid((value, "is not a string"))
    return value or None


_HASH = re.compile(r"0x[0-9a-fA-F]{64}\Z")


def _genesis(value: Any) -> str | None:
    if value == "":
        return None
    if not isinstance(value, str) or not _HASH.match(value):
        raise _Invalid((value, "is not a 0x-prefixed 32-byte hex hash"))
    return value.lower()


def _domain_ids(value: Any) -> tuple[int, ...]:
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in value)
        or len(set(value)) != len(value)
    ):
        raise _Invalid((value, "is not a list of distinct domain ids"))
    return tuple(value)


# -- the settings ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Setting:
    parse: _Parser
    fix: str
    env: str | None = None


_SETTINGS: Mapping[str, _Setting] = {
    "data_dir": _Setting(
        env="DATA_DIR",
        parse=_directory,
        fix="set it to the directory for Parquet files, e.g. /var/lib/blocktimesd",
    ),
    "metrics_addr": _Setting(
        env="METRICS_ADDR",
        parse=_metrics_addr,
        fix="set it to the address to serve /metrics on, e.g. 127.0.0.1:9615",
    ),
    "max_rows_per_file": _Setting(
        env="MAX_ROWS_PER_FILE",
        parse=_whole(1),
        fix="set it to the most rows in one Parquet file, e.g. 500000",
    ),
    "max_file_minutes": _Setting(
        env="MAX_FILE_MINUTES",
        parse=_whole(1),
        fix="set it to the most minutes a Parquet file stays open, e.g. 15",
    ),
    "checkpoint_s": _Setting(
        parse=_number(0, above=False),
        fix="set it to the seconds between writes of each chain's open file as it stands "
        "(rows are durable within about this long; 0 writes complete files only), e.g. 60",
    ),
    "max_inflight_headers": _Setting(
        env="MAX_INFLIGHT_HEADERS",
        parse=_whole(1),
        fix="set it to the most blocks fetched at once per chain, e.g. 64",
    ),
    "rpc_batch_size": _Setting(
        parse=_whole(1),
        fix="set it to the calls per JSON-RPC batch (1 sends them one by one), e.g. 1",
    ),
    "request_timeout_s": _Setting(
        parse=_number(0, above=True),
        fix="set it to the seconds to wait for an answer, e.g. 30",
    ),
    "head_poll_s": _Setting(
        parse=_number(0, above=True),
        fix="set it to the seconds without a new head after which the node's best head "
        "is asked for (a node may drop a subscription silently), e.g. 15",
    ),
    "requests_per_second": _Setting(
        parse=_number(0, above=False),
        fix="set it to the most requests per second per chain (0 for no limit), e.g. 0",
    ),
    "delta_window": _Setting(
        parse=_whole(1, 1_000_000, "the quantiles sort the whole window at every scrape"),
        fix="set it to how many recent deltas per chain the quantiles cover, e.g. 1000",
    ),
    "writer_queue_rows": _Setting(
        parse=_whole(1),
        fix="set it to the most rows waiting for the writer, e.g. 10000",
    ),
    "shutdown_deadline_s": _Setting(
        parse=_number(0, above=True),
        fix="set it to the seconds a clean shutdown may take, e.g. 8",
    ),
}
_DEFAULTS: Mapping[str, Any] = {f.name: f.default for f in fields(Config) if f.name != "chains"}

_KIND_FIX = "set it to consensus, auto-evm or generic"
_NAME_FIX = "use letters, digits, '-' and '_', starting with a letter or digit, e.g. consensus"
_CHAIN_KEYS = (
    "name",
    "kind",
    "endpoints",
    "k",
    "expected_chain_name",
    "expected_genesis_hash",
    "domain_ids",
)


@dataclass(frozen=True, slots=True)
class _Overlay:
    """A chain setting from the environment or command line; it targets a kind."""

    kind: ChainKind
    key: str  # the chain table's key it replaces
    env: str

    @property
    def override(self) -> str:
        return self.env.lower()


_OVERLAYS = (
    _Overlay(ChainKind.CONSENSUS, "endpoints", "CONSENSUS_RPC_WS"),
    _Overlay(ChainKind.AUTO_EVM, "endpoints", "AUTO_EVM_RPC_WS"),
    _Overlay(ChainKind.CONSENSUS, "k", "K_CONSENSUS"),
    _Overlay(ChainKind.AUTO_EVM, "k", "K_AUTO_EVM"),
)
OVERRIDE_KEYS = frozenset(_SETTINGS) | {o.override for o in _OVERLAYS}


@dataclass(frozen=True, slots=True)
class _Raw:
    value: Any
    label: str  # the setting as the user wrote it: K_CONSENSUS, "k (config.toml)", ...
    from_file: bool = False


class _Builder:
    def __init__(
        self,
        document: Mapping[str, Any],
        environ: Mapping[str, str],
        overrides: Mapping[str, object],
        source: str,
        base_dir: Path | None,
    ) -> None:
        self.document = document
        # An empty variable counts as unset, as ${VAR:-default} in a shell would.
        self.environ = {k: v for k, v in environ.items() if v.strip()}
        self.overrides = {k: v for k, v in overrides.items() if v is not None}
        self.source = source
        self.base_dir = base_dir
        self.problems: list[str] = []

    def parse(self, raw: _Raw, parser: _Parser, fix: str) -> Any:
        if raw.from_file and isinstance(parser, _Whole | _Number):
            parser = dataclasses.replace(parser, text=False)  # TOML has typed numbers
        try:
            return parser(raw.value)
        except _Invalid as exc:
            for value, problem in exc.problems:
                self.problems.append(f"{raw.label}: {value!r} {problem}; {fix}")
            return None

    def pick(self, key: str, env: str | None) -> _Raw | None:
        if key in self.overrides:
            return _Raw(self.overrides[key], f"{key} (command line)")
        if env is not None and env in self.environ:
            return _Raw(self.environ[env], env)
        if key in self.document:
            return _Raw(self.document[key], f"{key} ({self.source})", from_file=True)
        return None

    def unknown(
        self, keys: Iterable[str], known: Collection[str], source: str, prefix: str = ""
    ) -> None:
        for key in keys:
            if key not in known:
                self.problems.append(
                    f"{prefix}{key} ({source}): unknown setting; remove it or correct its "
                    f"spelling (known: {', '.join(sorted(known))})"
                )

    def build(self) -> Config:
        self.unknown(self.overrides, OVERRIDE_KEYS, "command line")
        self.unknown(self.document, (*_SETTINGS, "chains"), self.source)
        values: dict[str, Any] = {}
        for key, setting in _SETTINGS.items():
            raw = self.pick(key, setting.env)
            if raw is None:
                values[key] = _DEFAULTS[key]
                continue
            value = self.parse(raw, setting.parse, setting.fix)
            if isinstance(value, Path) and raw.from_file and self.base_dir is not None:
                value = self.base_dir / value  # relative to the file, not to the cwd
            values[key] = value
        chains = self.chains()
        if self.problems:
            count = len(self.problems)
            raise ConfigError(
                f"{count} configuration problem{'s' if count > 1 else ''}:\n"
                + "\n".join(self.problems)
            )
        return Config(chains=chains, **values)

    # -- chains ------------------------------------------------------------------------------

    def chains(self) -> tuple[ChainConfig, ...]:
        tables: list[tuple[Mapping[str, Any], str]]
        if "chains" not in self.document:
            tables = [({"kind": kind.value}, "default") for kind in MAINNET]
        else:
            tables = self.chain_tables(self.document["chains"])
        kinds = [self.chain_kind(table, label) for table, label in tables]
        overlays = self.overlays(kinds)
        chains: list[ChainConfig] = []
        names: dict[str, str] = {}
        for i, ((table, label), kind) in enumerate(zip(tables, kinds, strict=True)):
            chain = self.chain(table, label, kind, overlays.get(i, {}))
            if chain is None:
                continue
            if chain.name in names:
                self.problems.append(
                    f"{label}.name ({self.source}): {chain.name!r} is already the name of "
                    f"{names[chain.name]}; give each chain its own name"
                )
            names.setdefault(chain.name, label)
            chains.append(chain)
        return tuple(chains)

    def chain_tables(self, value: Any) -> list[tuple[Mapping[str, Any], str]]:
        fix = "write each chain as a [[chains]] table"
        if not isinstance(value, list):
            self.problems.append(
                f"chains ({self.source}): {value!r} is not a list of tables; {fix}"
            )
            return []
        if not value:
            self.problems.append(
                f"chains ({self.source}): the list is empty; add a [[chains]] table, or remove "
                "chains to follow mainnet"
            )
        tables: list[tuple[Mapping[str, Any], str]] = []
        for i, table in enumerate(value):
            if isinstance(table, dict):
                tables.append((table, f"chains[{i}]"))
                self.unknown(table, _CHAIN_KEYS, self.source, prefix=f"chains[{i}].")
            else:
                self.problems.append(
                    f"chains[{i}] ({self.source}): {table!r} is not a table; {fix}"
                )
        return tables

    def chain_kind(self, table: Mapping[str, Any], label: str) -> ChainKind | None:
        if "kind" not in table:
            self.problems.append(f"{label}.kind ({self.source}): missing; {_KIND_FIX}")
            return None
        kind: ChainKind | None = self.parse(
            _Raw(table["kind"], f"{label}.kind ({self.source})"), _kind, _KIND_FIX
        )
        return kind

    def overlays(self, kinds: list[ChainKind | None]) -> dict[int, dict[str, _Raw]]:
        """Environment and command-line chain settings, by chain index and key."""
        found: dict[int, dict[str, _Raw]] = {}
        for overlay in _OVERLAYS:
            if overlay.override in self.overrides:
                raw = _Raw(self.overrides[overlay.override], f"{overlay.override} (command line)")
                drop = f"leave out {overlay.override}"
            elif overlay.env in self.environ:
                raw = _Raw(self.environ[overlay.env], overlay.env)
                drop = f"unset {overlay.env}"
            else:
                continue
            targets = [i for i, kind in enumerate(kinds) if kind is overlay.kind]
            shown = _shown(raw.value) if overlay.key == "endpoints" else raw.value
            if len(targets) == 1:
                found.setdefault(targets[0], {})[overlay.key] = raw
            elif None in kinds:
                pass  # a chain's kind is wrong or missing; that problem is reported already
            elif not targets:
                self.problems.append(
                    f"{raw.label}: {shown!r} applies to the chain of kind "
                    f"{overlay.kind.value!r}, but none is configured; add one to the chains "
                    f"of {self.source}, or {drop}"
                )
            else:
                self.problems.append(
                    f"{raw.label}: {shown!r} applies to the one chain of kind "
                    f"{overlay.kind.value!r}, but {len(targets)} are configured; set "
                    f"{overlay.key} in each of their tables in {self.source}, and {drop}"
                )
        return found

    def chain(
        self,
        table: Mapping[str, Any],
        label: str,
        kind: ChainKind | None,
        overlay: Mapping[str, _Raw],
    ) -> ChainConfig | None:
        before = len(self.problems)
        mainnet = MAINNET.get(kind) if kind is not None else None

        def raw(key: str) -> _Raw | None:
            if key in overlay:
                return overlay[key]
            if key in table:
                return _Raw(table[key], f"{label}.{key} ({self.source})", from_file=True)
            return None

        name_raw = raw("name")
        name = None if kind is None else kind.value
        if name_raw is not None:
            name = self.parse(name_raw, _chain_label, _NAME_FIX)

        example = mainnet.endpoint if mainnet is not None else "ws://127.0.0.1:9944"
        endpoints_fix = f"set it to one or more WebSocket RPC URLs, e.g. {example}"
        endpoints_raw = raw("endpoints")
        endpoints: tuple[str, ...] | None = None
        if endpoints_raw is not None:
            endpoints = self.parse(endpoints_raw, _endpoints, endpoints_fix)
        elif mainnet is not None:
            endpoints = (mainnet.endpoint,)
        elif kind is ChainKind.GENERIC:
            self.problems.append(
                f"{label}.endpoints ({self.source}): missing; a generic chain has no default "
                f"endpoint, {endpoints_fix}"
            )

        default_k = mainnet.k if mainnet is not None else _GENERIC_K
        k_raw = raw("k")
        k = default_k
        if k_raw is not None:
            k = self.parse(
                k_raw,
                _whole(1, _MAX_K, _MAX_K_WHY),
                f"set it to the confirmation depth, e.g. {default_k}",
            )

        # The mainnet expectations hold only where a mainnet endpoint is used; see above.
        on_mainnet = mainnet is not None and endpoints is not None and mainnet.endpoint in endpoints
        chain_name = mainnet.chain_name if on_mainnet and mainnet else None
        name_raw = raw("expected_chain_name")
        if name_raw is not None:
            chain_name = self.parse(
                name_raw,
                _expected_name,
                "set it to the name the node reports in system_chain, e.g. "
                '"Autonomys Mainnet", or to "" to skip the check',
            )
        genesis = mainnet.genesis_hash if on_mainnet and mainnet else None
        genesis_raw = raw("expected_genesis_hash")
        if genesis_raw is not None:
            genesis = self.parse(
                genesis_raw,
                _genesis,
                "set it to the chain's block 0 hash (chain_getBlockHash(0)), "
                'or to "" to skip the check',
            )

        domains: tuple[int, ...] = (0,) if kind is ChainKind.CONSENSUS else ()
        domains_raw = raw("domain_ids")
        if domains_raw is not None:
            if kind is ChainKind.CONSENSUS:
                domains = self.parse(
                    domains_raw,
                    _domain_ids,
                    "set it to the domains whose bundles are counted, e.g. [0]",
                )
            elif kind is not None:
                self.problems.append(
                    f"{domains_raw.label}: only consensus chains count domain bundles; remove "
                    "domain_ids from this chain"
                )

        if len(self.problems) > before or kind is None or name is None or endpoints is None:
            return None
        return ChainConfig(
            name=name,
            kind=kind,
            endpoints=endpoints,
            k=k,
            expected_chain_name=chain_name,
            expected_genesis_hash=genesis,
            domain_ids=domains,
        )


def build_config(
    document: Mapping[str, Any],
    environ: Mapping[str, str],
    overrides: Mapping[str, object] | None = None,
    *,
    source: str = "config file",
    base_dir: Path | None = None,
) -> Config:
    """The configuration from a parsed TOML document, the environment and overrides.

    ``overrides`` are keyed like the file's top-level settings (``data_dir``, ...) or
    like the chain variables in lower case (``consensus_rpc_ws``, ``k_auto_evm``); a
    value of None means "not given".  Relative paths in the file are relative to
    ``base_dir``.  Raises :class:`ConfigError` listing every problem.
    """
    return _Builder(document, environ, overrides or {}, source, base_dir).build()


def load_config(
    path: str | os.PathLike[str] | None,
    environ: Mapping[str, str],
    overrides: Mapping[str, object] | None = None,
) -> Config:
    """Read the TOML file at ``path`` (if any), then apply the environment and overrides."""
    if path is None:
        return build_config({}, environ, overrides, source="defaults")
    file = Path(path)
    try:
        with file.open("rb") as fh:
            document = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(
            f"{file}: cannot read the configuration file ({exc.strerror}); check the --config path"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: not valid TOML ({exc}); fix the syntax") from None
    return build_config(document, environ, overrides, source=str(file), base_dir=file.parent)


def command_line_chain(
    name: str,
    kind: ChainKind,
    endpoint: str,
    *,
    name_flag: str = "--chain",
    endpoint_flag: str = "--rpc",
) -> ChainConfig:
    """A chain given on the command line (``--chain NAME --rpc URL``) rather than in a
    ``[[chains]]`` table, by the same rules and with the same defaults (depth, domains,
    the mainnet checks where the mainnet endpoint is named); each problem names the
    flag as the user typed it.  Raises :class:`ConfigError`."""
    builder = _Builder({}, {}, {}, "command line", None)
    overlay = {"name": _Raw(name, name_flag), "endpoints": _Raw(endpoint, endpoint_flag)}
    chain = builder.chain({}, name_flag, kind, overlay)
    if chain is None:
        raise ConfigError("\n".join(builder.problems))
    return chain
