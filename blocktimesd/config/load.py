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

A setting renamed since keeps working under its former name (in the file or the
environment), with a warning naming the new one.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Collection, Iterable, Mapping
from dataclasses import fields, replace
from pathlib import Path
from typing import Any, NamedTuple

from blocktimesd.config import values as v
from blocktimesd.config.model import GENERIC_K, MAINNET, ChainConfig, Config
from blocktimesd.core.chains import ChainKind
from blocktimesd.dataset.layout import CHAIN_NAME_RULE
from blocktimesd.errors import ConfigError

__all__ = ["OVERRIDE_KEYS", "build_config", "command_line_chain", "load_config"]

log = logging.getLogger(__name__)

# A row is written only once k blocks are built on its block, and the k unconfirmed
# blocks are held in memory: 100,000 is about a week of consensus blocks.
_MAX_K = 100_000
_MAX_K_WHY = "a block would wait for over 100000 blocks (about a week) to be written"


# -- the settings ---------------------------------------------------------------------------


class _Setting(NamedTuple):
    parse: v.Parser
    fix: str
    env: str | None = None
    old: tuple[str, str | None] | None = None  # a former name (key, variable), still taken


_SETTINGS: Mapping[str, _Setting] = {
    "data_dir": _Setting(
        env="DATA_DIR",
        parse=v.directory,
        fix="set it to the directory for Parquet files, e.g. /var/lib/blocktimesd",
    ),
    "metrics_addr": _Setting(
        env="METRICS_ADDR",
        parse=v.metrics_addr,
        fix="set it to the address to serve /metrics on, e.g. 127.0.0.1:9615",
    ),
    "max_rows_per_file": _Setting(
        env="MAX_ROWS_PER_FILE",
        parse=v.whole(1),
        fix="set it to the most rows in one Parquet file, e.g. 500000",
    ),
    "max_file_minutes": _Setting(
        env="MAX_FILE_MINUTES",
        parse=v.whole(1),
        fix="set it to the most minutes a Parquet file stays open, e.g. 15",
    ),
    "checkpoint_s": _Setting(
        parse=v.number(0, above=False),
        fix="set it to the seconds between writes of each chain's open file as it stands "
        "(rows are durable within about this long; 0 writes complete files only), e.g. 60",
    ),
    "max_inflight_requests": _Setting(
        env="MAX_INFLIGHT_REQUESTS",
        parse=v.whole(1),
        fix="set it to the most requests in flight per connection (blocks fetched at once "
        "included), e.g. 64",
        old=("max_inflight_headers", "MAX_INFLIGHT_HEADERS"),
    ),
    "rpc_batch_size": _Setting(
        parse=v.whole(1),
        fix="set it to the calls per JSON-RPC batch (1 sends them one by one), e.g. 1",
    ),
    "request_timeout_s": _Setting(
        parse=v.number(0, above=True),
        fix="set it to the seconds to wait for an answer, e.g. 30",
    ),
    "head_poll_s": _Setting(
        parse=v.number(0, above=True),
        fix="set it to the seconds without a new head after which the node's best head "
        "is asked for (a node may drop a subscription silently), e.g. 15",
    ),
    "requests_per_second": _Setting(
        parse=v.number(0, above=False),
        fix="set it to the most requests per second per chain (0 for no limit), e.g. 0",
    ),
    "delta_window": _Setting(
        parse=v.whole(1, 1_000_000, "the quantiles sort the whole window at every scrape"),
        fix="set it to how many recent deltas per chain the quantiles cover, e.g. 1000",
    ),
    "writer_queue_items": _Setting(
        parse=v.whole(1),
        fix="set it to the most items (rows, or a batch of rows) waiting for the writer, "
        "e.g. 10000",
        old=("writer_queue_rows", None),
    ),
    "shutdown_deadline_s": _Setting(
        parse=v.number(0, above=True),
        fix="set it to the seconds a clean shutdown may take, e.g. 8",
    ),
}
_DEFAULTS: Mapping[str, Any] = {f.name: f.default for f in fields(Config) if f.name != "chains"}
_FORMER_KEYS = frozenset(s.old[0] for s in _SETTINGS.values() if s.old is not None)

_KIND_FIX = "set it to consensus, auto-evm or generic"
_NAME_FIX = f"use {CHAIN_NAME_RULE}, e.g. consensus"
_CHAIN_KEYS = (
    "name",
    "kind",
    "endpoints",
    "k",
    "expected_chain_name",
    "expected_genesis_hash",
    "domain_ids",
)


class _Overlay(NamedTuple):
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


class _Raw(NamedTuple):
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
        self.environ = {name: text for name, text in environ.items() if text.strip()}
        self.overrides = {key: value for key, value in overrides.items() if value is not None}
        self.source = source
        self.base_dir = base_dir
        self.problems: list[str] = []

    def parse(self, raw: _Raw, parser: v.Parser, fix: str) -> Any:
        if raw.from_file and isinstance(parser, v.Whole | v.Number):
            parser = replace(parser, text=False)  # TOML has typed numbers
        try:
            return parser(raw.value)
        except v.Invalid as exc:
            for value, problem in exc.problems:
                self.problems.append(f"{raw.label}: {value!r} {problem}; {fix}")
            return None

    def pick(self, key: str, setting: _Setting) -> _Raw | None:
        env = setting.env
        if key in self.overrides:
            return _Raw(self.overrides[key], f"{key} (command line)")
        old_key, old_env = setting.old or (None, None)
        if env is not None and env in self.environ:
            self.given_twice(env, old_env, self.environ)
            return _Raw(self.environ[env], env)
        if old_env is not None and old_env in self.environ:
            self.renamed(old_env, env or key)
            return _Raw(self.environ[old_env], old_env)
        if key in self.document:
            self.given_twice(f"{key} ({self.source})", old_key, self.document)
            return _Raw(self.document[key], f"{key} ({self.source})", from_file=True)
        if old_key is not None and old_key in self.document:
            self.renamed(f"{old_key} ({self.source})", key)
            return _Raw(self.document[old_key], f"{old_key} ({self.source})", from_file=True)
        return None

    def renamed(self, old: str, new: str) -> None:
        """A setting under its former name still counts; the operator is told the new one."""
        log.warning("%s: this name is deprecated; rename it to %s", old, new)

    def given_twice(self, new: str, old: str | None, source: Mapping[str, Any]) -> None:
        """Both names in one source: which one was meant cannot be told."""
        if old is not None and old in source:
            self.problems.append(f"{new}: also given under its former name {old}; remove {old}")

    def unknown(
        self,
        keys: Iterable[str],
        known: Collection[str],
        source: str,
        prefix: str = "",
        former: Collection[str] = (),
    ) -> None:
        for key in keys:
            if key not in known and key not in former:
                self.problems.append(
                    f"{prefix}{key} ({source}): unknown setting; remove it or correct its "
                    f"spelling (known: {', '.join(sorted(known))})"
                )

    def build(self) -> Config:
        self.unknown(self.overrides, OVERRIDE_KEYS, "command line")
        self.unknown(self.document, (*_SETTINGS, "chains"), self.source, former=_FORMER_KEYS)
        values: dict[str, Any] = {}
        for key, setting in _SETTINGS.items():
            raw = self.pick(key, setting)
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
            if chain.chain in names:
                self.problems.append(
                    f"{label}.name ({self.source}): {chain.chain!r} is already the name of "
                    f"{names[chain.chain]}; give each chain its own name"
                )
            names.setdefault(chain.chain, label)
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
            _Raw(table["kind"], f"{label}.kind ({self.source})"), v.kind, _KIND_FIX
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
            shown = v.shown(raw.value) if overlay.key == "endpoints" else raw.value
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
            name = self.parse(name_raw, v.chain_name, _NAME_FIX)

        example = mainnet.endpoint if mainnet is not None else "ws://127.0.0.1:9944"
        endpoints_fix = f"set it to one or more WebSocket RPC URLs, e.g. {example}"
        endpoints_raw = raw("endpoints")
        endpoints: tuple[str, ...] | None = None
        if endpoints_raw is not None:
            endpoints = self.parse(endpoints_raw, v.endpoints, endpoints_fix)
        elif mainnet is not None:
            endpoints = (mainnet.endpoint,)
        elif kind is ChainKind.GENERIC:
            self.problems.append(
                f"{label}.endpoints ({self.source}): missing; a generic chain has no default "
                f"endpoint, {endpoints_fix}"
            )

        default_k = mainnet.k if mainnet is not None else GENERIC_K
        k_raw = raw("k")
        k = default_k
        if k_raw is not None:
            k = self.parse(
                k_raw,
                v.whole(1, _MAX_K, _MAX_K_WHY),
                f"set it to the confirmation depth, e.g. {default_k}",
            )

        # The mainnet expectations hold only where a mainnet endpoint is used; see above.
        on_mainnet = mainnet is not None and endpoints is not None and mainnet.endpoint in endpoints
        chain_name = mainnet.chain_name if on_mainnet and mainnet else None
        name_raw = raw("expected_chain_name")
        if name_raw is not None:
            chain_name = self.parse(
                name_raw,
                v.expected_name,
                "set it to the name the node reports in system_chain, e.g. "
                '"Autonomys Mainnet", or to "" to skip the check',
            )
        genesis = mainnet.genesis_hash if on_mainnet and mainnet else None
        genesis_raw = raw("expected_genesis_hash")
        if genesis_raw is not None:
            genesis = self.parse(
                genesis_raw,
                v.genesis,
                "set it to the chain's block 0 hash (chain_getBlockHash(0)), "
                'or to "" to skip the check',
            )

        domains: tuple[int, ...] = (0,) if kind is ChainKind.CONSENSUS else ()
        domains_raw = raw("domain_ids")
        if domains_raw is not None:
            if kind is ChainKind.CONSENSUS:
                domains = self.parse(
                    domains_raw,
                    v.domain_ids,
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
            chain=name,
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
    import tomllib  # here: most runs are configured by the environment and flags alone

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
