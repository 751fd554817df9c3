"""FRAME pallets common to both runtimes: System, Timestamp, Balances, TransactionPayment.

The runtimes differ in their account type (``AccountId32`` on the consensus chain,
``AccountId20`` on Auto-EVM), so the builders here take it as a parameter.  Each type
names the real type path it mirrors (from the V14 metadata of ``subspace`` spec 6 and
``subspace-evm-domain`` spec 0); values of the storage defaults and constants are the
real runtimes' values.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from blocktimesd.core import codec as c
from blocktimesd.core.runtime_desc import PalletDesc, RuntimeDesc, SignedExtensionDesc, StorageDesc

from .primitives import (
    BALANCE,
    BLOCK_NUMBER,
    COMPACT_BALANCE,
    COMPACT_U32,
    COMPACT_U64,
    DIGEST,
    ERA,
    H256,
    UNIT,
    WEIGHT,
)

__all__ = [
    "ACCOUNT_DATA",
    "DISPATCH_ERROR",
    "DISPATCH_EVENT_INFO",
    "PHASE",
    "RUNTIME_VERSION",
    "TIMESTAMP_CALLS",
    "account_info",
    "balances_calls",
    "balances_events",
    "balances_pallet",
    "charge_transaction_payment",
    "checked",
    "code_bytes",
    "event_record_codec",
    "frame_system_extensions",
    "plain",
    "runtime_event",
    "signed_extension",
    "system_events",
    "system_pallet",
    "timestamp_pallet",
    "transaction_payment_events",
    "transaction_payment_pallet",
    "unit_extension",
    "version_bytes",
    "with_version",
]

# frame_system::Phase
PHASE = c.enum(
    "frame_system::Phase",
    ("ApplyExtrinsic", 0, c.unnamed(c.U32)),
    ("Finalization", 1, ()),
    ("Initialization", 2, ()),
)

# frame_support::dispatch::{DispatchClass, Pays} and frame_system::DispatchEventInfo
DISPATCH_CLASS = c.enum(
    "frame_support::dispatch::DispatchClass",
    ("Normal", 0, ()),
    ("Operational", 1, ()),
    ("Mandatory", 2, ()),
)
PAYS = c.enum("frame_support::dispatch::Pays", ("Yes", 0, ()), ("No", 1, ()))
DISPATCH_EVENT_INFO = c.Struct(
    ("frame_system", "DispatchEventInfo"),
    (
        c.Field("weight", WEIGHT, "Weight"),
        c.Field("class", DISPATCH_CLASS, "DispatchClass"),
        c.Field("pays_fee", PAYS, "Pays"),
    ),
)


def _unit_enum(path: str, *names: str) -> c.Enum:
    return c.enum(path, *((name, i, ()) for i, name in enumerate(names)))


# sp_runtime::DispatchError and the error enums it carries.
_MODULE_ERROR = c.struct("sp_runtime::ModuleError", index=c.U8, error=c.U8Array(4))
_TOKEN_ERROR = _unit_enum(
    "sp_runtime::TokenError",
    "FundsUnavailable", "OnlyProvider", "BelowMinimum", "CannotCreate", "UnknownAsset",
    "Frozen", "Unsupported", "CannotCreateHold", "NotExpendable", "Blocked",
)  # fmt: skip
_ARITHMETIC_ERROR = _unit_enum(
    "sp_arithmetic::ArithmeticError", "Underflow", "Overflow", "DivisionByZero"
)
_TRANSACTIONAL_ERROR = _unit_enum("sp_runtime::TransactionalError", "LimitReached", "NoLayer")
_TRIE_ERROR = _unit_enum(
    "sp_runtime::proving_trie::TrieError",
    "InvalidStateRoot", "IncompleteDatabase", "ValueAtIncompleteKey", "DecoderError",
    "InvalidHash", "DuplicateKey", "ExtraneousNode", "ExtraneousValue",
    "ExtraneousHashReference", "InvalidChildReference", "ValueMismatch", "IncompleteProof",
    "RootMismatch", "DecodeError",
)  # fmt: skip
DISPATCH_ERROR = c.enum(
    "sp_runtime::DispatchError",
    ("Other", 0, ()),
    ("CannotLookup", 1, ()),
    ("BadOrigin", 2, ()),
    ("Module", 3, c.unnamed(_MODULE_ERROR)),
    ("ConsumerRemaining", 4, ()),
    ("NoProviders", 5, ()),
    ("TooManyConsumers", 6, ()),
    ("Token", 7, c.unnamed(_TOKEN_ERROR)),
    ("Arithmetic", 8, c.unnamed(_ARITHMETIC_ERROR)),
    ("Transactional", 9, c.unnamed(_TRANSACTIONAL_ERROR)),
    ("Exhausted", 10, ()),
    ("Corruption", 11, ()),
    ("Unavailable", 12, ()),
    ("RootNotAllowed", 13, ()),
    ("Trie", 14, c.unnamed(_TRIE_ERROR)),
)


# sp_version::RuntimeVersion: what `Core_version` returns and `System.Version` holds.  The
# names are `Cow<'static, str>` and the APIs `Cow<[([u8; 8], u32)]>` in scale-info.
_COW_STR = c.Struct(("Cow",), (c.Field(None, c.STR),), (("T", c.STR),))
_API_LIST = c.Seq(c.Tuple((c.U8Array(8), c.U32)))
RUNTIME_VERSION = c.Struct(
    ("sp_version", "RuntimeVersion"),
    (
        c.Field("spec_name", _COW_STR, "Cow<'static, str>"),
        c.Field("impl_name", _COW_STR, "Cow<'static, str>"),
        c.Field("authoring_version", c.U32, "u32"),
        c.Field("spec_version", c.U32, "u32"),
        c.Field("impl_version", c.U32, "u32"),
        c.Field(
            "apis", c.Struct(("Cow",), (c.Field(None, _API_LIST),), (("T", _API_LIST),)), "ApisVec"
        ),
        c.Field("transaction_version", c.U32, "u32"),
        c.Field("system_version", c.U8, "u8"),
    ),
)


def version_bytes(desc: RuntimeDesc) -> bytes:
    """The SCALE ``RuntimeVersion`` of ``desc``: ``Core_version``'s answer."""
    last = desc.state_version if desc.system_version is None else desc.system_version
    return RUNTIME_VERSION.encode(
        {
            "spec_name": desc.spec_name,
            "impl_name": desc.impl_name or desc.spec_name,
            "authoring_version": desc.authoring_version,
            "spec_version": desc.spec_version,
            "impl_version": desc.impl_version,
            "apis": [list(api) for api in desc.apis],
            "transaction_version": desc.transaction_version,
            "system_version": last,
        }
    )


def _leb128(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def code_bytes(desc: RuntimeDesc) -> bytes:
    """The runtime's code as ``:code`` holds it: a stand-in, stable per runtime version.

    A real node stores the runtime's WASM blob there; clients only hash it to tell
    runtimes apart.  This is a minimal valid WASM module whose one custom section
    (``runtime_version``, where ``sp_version`` puts it) holds the SCALE
    ``RuntimeVersion``, so it changes with every upgrade.
    """
    name = b"runtime_version"
    body = _leb128(len(name)) + name + version_bytes(desc)
    return b"\x00asm\x01\x00\x00\x00" + b"\x00" + _leb128(len(body)) + body


def with_version(desc: RuntimeDesc) -> RuntimeDesc:
    """``desc`` with its own ``RuntimeVersion`` as the ``System.Version`` constant.

    Real runtimes carry it (frame_system's ``Version`` constant) and clients read the
    runtime version from it (dedot refuses a metadata without it).  It goes after
    ``BlockHashCount``, where frame_system declares it.
    """
    system = desc.pallet("System")
    version = ("Version", RUNTIME_VERSION, version_bytes(desc))
    constants: list[tuple[str, c.Codec, bytes]] = []
    for const in system.constants:
        constants.append(const)
        if const[0] == "BlockHashCount":
            constants.append(version)
    if version not in constants:
        constants.append(version)
    pallets = tuple(
        dataclasses.replace(p, constants=tuple(constants)) if p is system else p
        for p in desc.pallets
    )
    return dataclasses.replace(desc, pallets=pallets)


def plain(name: str, value: c.Codec, default: Any = None, *, optional: bool = False) -> StorageDesc:
    """A plain storage value; ``default`` is encoded with ``value`` (modifier Default)."""
    return StorageDesc(name, value, default=None if optional else value.encode(default))


def system_events(account: c.Codec) -> c.Enum:
    """``frame_system::pallet::Event<Runtime>`` (all 7 variants)."""
    return c.enum(
        "frame_system::pallet::Event",
        ("ExtrinsicSuccess", 0, c.named(dispatch_info=DISPATCH_EVENT_INFO)),
        (
            "ExtrinsicFailed",
            1,
            c.named(dispatch_error=DISPATCH_ERROR, dispatch_info=DISPATCH_EVENT_INFO),
        ),
        ("CodeUpdated", 2, ()),
        ("NewAccount", 3, c.named(account=account)),
        ("KilledAccount", 4, c.named(account=account)),
        ("Remarked", 5, c.named(sender=account, hash=H256)),
        ("UpgradeAuthorized", 6, c.named(code_hash=H256, check_version=c.BOOL)),
    )


def runtime_event(crate: str, pallets: Sequence[PalletDesc]) -> c.Enum:
    """``<crate>::RuntimeEvent``: the same enum ``RuntimeDesc.event_codec`` builds, made
    before the System pallet exists (its storage needs it).  ``pallets`` must include a
    System entry carrying the System events."""
    return c.Enum(
        (crate, "RuntimeEvent"),
        tuple(
            c.Variant(p.name, p.index, c.unnamed(p.events))
            for p in sorted(pallets, key=lambda p: p.index)
            if p.events is not None
        ),
    )


def event_record_codec(runtime_event: c.Codec) -> c.Struct:
    """``frame_system::EventRecord<RuntimeEvent, H256>``."""
    return c.Struct(
        ("frame_system", "EventRecord"),
        (
            c.Field("phase", PHASE, "Phase"),
            c.Field("event", runtime_event, "E"),
            c.Field("topics", c.Seq(H256), "Vec<T>"),
        ),
        (("E", runtime_event), ("T", H256)),
    )


def account_info(account_data: c.Codec) -> c.Struct:
    """``frame_system::AccountInfo<u32, pallet_balances::types::AccountData<u128>>``."""
    return c.struct(
        "frame_system::AccountInfo",
        nonce=c.U32,
        consumers=c.U32,
        providers=c.U32,
        sufficients=c.U32,
        data=account_data,
    )


# pallet_balances::types::{AccountData, ExtraFlags}
ACCOUNT_DATA = c.struct(
    "pallet_balances::types::AccountData",
    free=BALANCE,
    reserved=BALANCE,
    frozen=BALANCE,
    flags=c.newtype("pallet_balances::types::ExtraFlags", BALANCE, "u128"),
)
# The default AccountInfo: all zero except ExtraFlags' "new logic" bit (1 << 127), which
# pallet_balances sets in `ExtraFlags::default()`.
_DEFAULT_ACCOUNT = {
    "nonce": 0,
    "consumers": 0,
    "providers": 0,
    "sufficients": 0,
    "data": {"free": 0, "reserved": 0, "frozen": 0, "flags": 1 << 127},
}


def system_pallet(
    account: c.Codec,
    events: c.Enum,
    runtime_event: c.Enum,
    *,
    block_hash_count: int,
    ss58_prefix: int,
    event_segment_size: int,
) -> PalletDesc:
    """The System pallet (index 0) with its ``events``, and the storage the devnet serves.

    ``Events`` holds ``Vec<EventRecord<RuntimeEvent, H256>>``; Autonomys' fork of
    frame_system also keeps ``EventSegments: Identity(u32) -> Option<Vec<EventRecord>>``
    (``EventSegmentSize`` events a segment: 100 on Auto-EVM, 0 = unused on the
    consensus chain) and ``EventCount``.
    ``runtime_event`` must equal the runtime's ``RuntimeDesc.event_codec`` (see
    :func:`runtime_event`).
    """
    records = c.Seq(event_record_codec(runtime_event))
    return PalletDesc(
        "System",
        0,
        events=events,
        storage=(
            StorageDesc(
                "Account",
                account_info(ACCOUNT_DATA),
                key=account,
                hashers=("Blake2_128Concat",),
                default=account_info(ACCOUNT_DATA).encode(_DEFAULT_ACCOUNT),
            ),
            StorageDesc(
                "BlockHash",
                H256,
                key=BLOCK_NUMBER,
                hashers=("Twox64Concat",),
                default=bytes(32),
            ),
            plain("Number", BLOCK_NUMBER, 0),
            plain("ParentHash", H256, bytes(32)),
            plain("Digest", DIGEST, {"logs": []}),
            plain("Events", records, []),
            plain("EventCount", c.U32, 0),
            StorageDesc("EventSegments", records, key=c.U32, hashers=("Identity",)),
        ),
        constants=(
            ("BlockHashCount", BLOCK_NUMBER, c.U32.encode(block_hash_count)),
            ("SS58Prefix", c.U16, c.U16.encode(ss58_prefix)),
            ("EventSegmentSize", c.U32, c.U32.encode(event_segment_size)),
        ),
    )


# pallet_timestamp::pallet::Call: set { now: Compact<u64> }; MinimumPeriod = 500 ms.
TIMESTAMP_CALLS = c.enum("pallet_timestamp::pallet::Call", ("set", 0, c.named(now=COMPACT_U64)))


def timestamp_pallet() -> PalletDesc:
    return PalletDesc(
        "Timestamp",
        1,
        calls=TIMESTAMP_CALLS,
        storage=(plain("Now", c.U64, 0), plain("DidUpdate", c.BOOL, False)),
        constants=(("MinimumPeriod", c.U64, c.U64.encode(500)),),
    )


def balances_events(account: c.Codec) -> c.Enum:
    """``pallet_balances::pallet::Event`` (all 22 variants)."""
    status = _unit_enum("frame_support::traits::tokens::misc::BalanceStatus", "Free", "Reserved")
    who_amount = c.named(who=account, amount=BALANCE)
    return c.enum(
        "pallet_balances::pallet::Event",
        ("Endowed", 0, c.named(account=account, free_balance=BALANCE)),
        ("DustLost", 1, c.named(account=account, amount=BALANCE)),
        ("Transfer", 2, c.named(**{"from": account}, to=account, amount=BALANCE)),
        ("BalanceSet", 3, c.named(who=account, free=BALANCE)),
        ("Reserved", 4, who_amount),
        ("Unreserved", 5, who_amount),
        (
            "ReserveRepatriated",
            6,
            c.named(**{"from": account}, to=account, amount=BALANCE, destination_status=status),
        ),
        ("Deposit", 7, who_amount),
        ("Withdraw", 8, who_amount),
        ("Slashed", 9, who_amount),
        ("Minted", 10, who_amount),
        ("Burned", 11, who_amount),
        ("Suspended", 12, who_amount),
        ("Restored", 13, who_amount),
        ("Upgraded", 14, c.named(who=account)),
        ("Issued", 15, c.named(amount=BALANCE)),
        ("Rescinded", 16, c.named(amount=BALANCE)),
        ("Locked", 17, who_amount),
        ("Unlocked", 18, who_amount),
        ("Frozen", 19, who_amount),
        ("Thawed", 20, who_amount),
        ("TotalIssuanceForced", 21, c.named(old=BALANCE, new=BALANCE)),
    )


def balances_calls(address: c.Codec) -> c.Enum:
    """Part of ``pallet_balances::pallet::Call``: the transfers the devnet submits."""
    return c.enum(
        "pallet_balances::pallet::Call",
        ("transfer_allow_death", 0, c.named(dest=address, value=COMPACT_BALANCE)),
        ("transfer_keep_alive", 3, c.named(dest=address, value=COMPACT_BALANCE)),
        ("transfer_all", 4, c.named(dest=address, keep_alive=c.BOOL)),
    )


def balances_pallet(
    index: int, account: c.Codec, address: c.Codec | None, *, existential_deposit: int
) -> PalletDesc:
    return PalletDesc(
        "Balances",
        index,
        calls=None if address is None else balances_calls(address),
        events=balances_events(account),
        storage=(plain("TotalIssuance", BALANCE, 0),),
        constants=(("ExistentialDeposit", BALANCE, BALANCE.encode(existential_deposit)),),
    )


def transaction_payment_events(account: c.Codec) -> c.Enum:
    """``pallet_transaction_payment::pallet::Event``."""
    return c.enum(
        "pallet_transaction_payment::pallet::Event",
        ("TransactionFeePaid", 0, c.named(who=account, actual_fee=BALANCE, tip=BALANCE)),
    )


def transaction_payment_pallet(index: int, account: c.Codec) -> PalletDesc:
    return PalletDesc("TransactionPayment", index, events=transaction_payment_events(account))


def signed_extension(
    identifier: str,
    path: str,
    extra: Sequence[c.Field] = (),
    additional_signed: c.Codec = UNIT,
    params: tuple[tuple[str, c.Codec | None], ...] = (),
) -> SignedExtensionDesc:
    """A signed extension whose ``extra`` is the composite at ``path``."""
    struct = c.Struct(tuple(path.split("::")), tuple(extra), params)
    return SignedExtensionDesc(identifier, struct, additional_signed)


def unit_extension(identifier: str, path: str, runtime: c.Codec) -> SignedExtensionDesc:
    """An Autonomys extension that encodes to nothing: ``path<Runtime>`` with no fields."""
    return signed_extension(identifier, path, params=(("Runtime", runtime),))


def frame_system_extensions(nonce: c.Codec = COMPACT_U32) -> tuple[SignedExtensionDesc, ...]:
    """frame_system's CheckNonZeroSender .. CheckNonce (both runtimes, in this order)."""
    ext = "frame_system::extensions::"
    return (
        signed_extension("CheckNonZeroSender", ext + "check_non_zero_sender::CheckNonZeroSender"),
        signed_extension(
            "CheckSpecVersion", ext + "check_spec_version::CheckSpecVersion", (), c.U32
        ),
        signed_extension("CheckTxVersion", ext + "check_tx_version::CheckTxVersion", (), c.U32),
        signed_extension("CheckGenesis", ext + "check_genesis::CheckGenesis", (), H256),
        signed_extension(
            "CheckMortality",
            ext + "check_mortality::CheckMortality",
            (c.Field(None, ERA, "Era"),),
            H256,
        ),
        signed_extension(
            "CheckNonce", ext + "check_nonce::CheckNonce", (c.Field(None, nonce, "T::Nonce"),)
        ),
    )


def charge_transaction_payment() -> SignedExtensionDesc:
    """``pallet_transaction_payment::ChargeTransactionPayment(Compact<Balance>)``: the tip."""
    return signed_extension(
        "ChargeTransactionPayment",
        "pallet_transaction_payment::ChargeTransactionPayment",
        (c.Field(None, COMPACT_BALANCE, "BalanceOf<T>"),),
    )


# --- value builders ---------------------------------------------------------------------


def apply_extrinsic(index: int) -> tuple[str, int]:
    """The ``Phase`` of the extrinsic at ``index`` in its block."""
    return ("ApplyExtrinsic", index)


FINALIZATION: tuple[str, None] = ("Finalization", None)
INITIALIZATION: tuple[str, None] = ("Initialization", None)


def event_record(
    phase: tuple[str, Any], pallet: str, event: str, args: Any = None, topics: Sequence[bytes] = ()
) -> dict[str, Any]:
    """A value for ``EventRecord`` (``System.Events`` / ``System.EventSegments`` items)."""
    return {"phase": phase, "event": (pallet, (event, args)), "topics": list(topics)}


def checked(desc: RuntimeDesc) -> RuntimeDesc:
    """``desc``, after checking that its System storage uses its own ``RuntimeEvent``."""
    records = desc.storage("System", "Events").value
    if not (
        isinstance(records, c.Seq)
        and isinstance(records.inner, c.Struct)
        and records.inner.fields[1].codec == desc.event_codec
    ):
        raise AssertionError(f"{desc.spec_name}/{desc.spec_version}: EventRecord != RuntimeEvent")
    return desc
