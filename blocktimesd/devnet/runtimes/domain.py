"""The simulated Auto-EVM domain runtime (``spec_name`` "subspace-evm-domain").

Spec 0 (the base) follows the real ``subspace-evm-domain`` spec 0 runtime (the EVM
domain runtime registered in the genesis of ``chain-spec-raw-devnet.json`` in
``autonomys/subspace``): every pallet name and index, the extrinsic format (a
Frontier ``fp_self_contained`` UncheckedExtrinsic with ``AccountId20`` addresses and
65-byte ``EthereumSignature``) and the shapes of the items the devnet serves:
System (``Events``, ``EventSegments``, ``EventCount``), Timestamp, Balances events,
``Ethereum.transact`` and ``Ethereum.Executed``.

Spec 1 is a simulated upgrade (``transaction_version`` 2): ``Ethereum.transact``
moves from call index 0 to 1 and ``Ethereum.Executed`` from event index 0 to 1 (index
0 stays unused), so a consumer that reuses spec-0 metadata fails to decode every EVM
transaction and ``Executed`` event, and one that hard-codes ``50 00`` misses them.
"""

from __future__ import annotations

import random
from functools import cache
from typing import Any

from blocktimesd.core import codec as c
from blocktimesd.core.runtime_desc import PalletDesc, RuntimeDesc, SignedExtensionDesc

from . import frame
from .primitives import (
    ACCOUNT_ID20,
    BYTES,
    ETHEREUM_SIGNATURE,
    H160,
    H256,
    U256,
    api_id,
    random_bytes,
    u256,
)

__all__ = [
    "BASE_SPEC",
    "SPEC_VERSIONS",
    "UPGRADED_SPEC",
    "domain_runtime",
    "eip1559_transact_args",
    "executed",
    "legacy_transact_args",
]

BASE_SPEC = 0
UPGRADED_SPEC = 1
SPEC_VERSIONS = (BASE_SPEC, UPGRADED_SPEC)

RUNTIME = c.Struct(("evm_domain_runtime", "Runtime"))

# Runtime APIs of subspace-evm-domain spec 0, in `Core_version` order.
_APIS = (
    ("Core", 5),
    ("Metadata", 2),
    ("BlockBuilder", 6),
    ("TaggedTransactionQueue", 3),
    ("OffchainWorkerApi", 2),
    ("SessionKeys", 1),
    ("AccountNonceApi", 1),
    ("TransactionPaymentApi", 4),
    ("DomainCoreApi", 2),
    ("MessengerApi", 3),
    ("RelayerApi", 3),
    ("EthereumRuntimeRPCApi", 5),
    ("ConvertTransactionRuntimeApi", 2),
    ("DomainSudoApi", 1),
    ("EvmTrackerApi", 1),
    ("GenesisBuilder", 1),
)

# Every pallet of subspace-evm-domain spec 0 (CHAIN_FACTS: "Auto-EVM domain specifics").
_PALLET_NAMES = {
    0: "System", 1: "Timestamp", 2: "ExecutivePallet", 8: "Utility", 20: "Balances",
    21: "TransactionPayment", 60: "Messenger", 61: "Transporter", 80: "Ethereum", 81: "EVM",
    82: "EVMChainId", 84: "EVMNoncetracker", 90: "SelfDomainId", 91: "BlockFees", 100: "Sudo",
}  # fmt: skip

# --- Frontier types: the `ethereum` crate and evm_core ------------------------------------
_ETH = "ethereum::transaction::"
_ACTION = c.enum(
    _ETH + "legacy::TransactionAction", ("Call", 0, c.unnamed(H160)), ("Create", 1, ())
)
_ACCESS_LIST = c.Seq(
    c.struct(_ETH + "eip2930::AccessListItem", address=H160, storage_keys=c.Seq(H256))
)
_LEGACY = c.struct(
    _ETH + "legacy::LegacyTransaction",
    nonce=U256,
    gas_price=U256,
    gas_limit=U256,
    action=_ACTION,
    value=U256,
    input=BYTES,
    signature=c.struct(
        _ETH + "legacy::TransactionSignature",
        v=c.newtype(_ETH + "legacy::TransactionRecoveryId", c.U64, "u64"),
        r=H256,
        s=H256,
    ),
)
_EIP2930 = c.struct(
    _ETH + "eip2930::EIP2930Transaction",
    chain_id=c.U64,
    nonce=U256,
    gas_price=U256,
    gas_limit=U256,
    action=_ACTION,
    value=U256,
    input=BYTES,
    access_list=_ACCESS_LIST,
    odd_y_parity=c.BOOL,
    r=H256,
    s=H256,
)
_EIP1559 = c.struct(
    _ETH + "eip1559::EIP1559Transaction",
    chain_id=c.U64,
    nonce=U256,
    max_priority_fee_per_gas=U256,
    max_fee_per_gas=U256,
    gas_limit=U256,
    action=_ACTION,
    value=U256,
    input=BYTES,
    access_list=_ACCESS_LIST,
    odd_y_parity=c.BOOL,
    r=H256,
    s=H256,
)
# ethereum::transaction::TransactionV2
TRANSACTION = c.enum(
    _ETH + "TransactionV2",
    ("Legacy", 0, c.unnamed(_LEGACY)),
    ("EIP2930", 1, c.unnamed(_EIP2930)),
    ("EIP1559", 2, c.unnamed(_EIP1559)),
)

# evm_core::error::ExitReason and its parts; ExitError lists InvalidCode (15) where the
# source declares it, between CreateContractLimit (7) and OutOfOffset (8).
_COW_STR = c.Struct(("Cow",), (c.Field(None, c.STR),), (("T", c.STR),))
_EXIT_ERROR = c.enum(
    "evm_core::error::ExitError",
    ("StackUnderflow", 0, ()),
    ("StackOverflow", 1, ()),
    ("InvalidJump", 2, ()),
    ("InvalidRange", 3, ()),
    ("DesignatedInvalid", 4, ()),
    ("CallTooDeep", 5, ()),
    ("CreateCollision", 6, ()),
    ("CreateContractLimit", 7, ()),
    ("InvalidCode", 15, c.unnamed(c.newtype("evm_core::opcode::Opcode", c.U8, "u8"))),
    ("OutOfOffset", 8, ()),
    ("OutOfGas", 9, ()),
    ("OutOfFund", 10, ()),
    ("PCUnderflow", 11, ()),
    ("CreateEmpty", 12, ()),
    ("Other", 13, c.unnamed(_COW_STR)),
    ("MaxNonce", 14, ()),
)
EXIT_REASON = c.enum(
    "evm_core::error::ExitReason",
    (
        "Succeed",
        0,
        c.unnamed(
            c.enum(
                "evm_core::error::ExitSucceed",
                ("Stopped", 0, ()),
                ("Returned", 1, ()),
                ("Suicided", 2, ()),
            )
        ),
    ),
    ("Error", 1, c.unnamed(_EXIT_ERROR)),
    ("Revert", 2, c.unnamed(c.enum("evm_core::error::ExitRevert", ("Reverted", 0, ())))),
    (
        "Fatal",
        3,
        c.unnamed(
            c.enum(
                "evm_core::error::ExitFatal",
                ("NotSupported", 0, ()),
                ("UnhandledInterrupt", 1, ()),
                ("CallErrorAsFatal", 2, c.unnamed(_EXIT_ERROR)),
                ("Other", 3, c.unnamed(_COW_STR)),
            )
        ),
    ),
)


def _ethereum_pallet(spec_version: int) -> PalletDesc:
    """``pallet_ethereum`` (index 80): ``transact`` and ``Executed`` (its only ones)."""
    index = 0 if spec_version == BASE_SPEC else 1
    executed_fields = c.named(
        **{"from": H160},
        to=H160,
        transaction_hash=H256,
        exit_reason=EXIT_REASON,
        extra_data=BYTES,
    )
    return PalletDesc(
        "Ethereum",
        80,
        calls=c.enum(
            "pallet_ethereum::pallet::Call", ("transact", index, c.named(transaction=TRANSACTION))
        ),
        events=c.enum("pallet_ethereum::pallet::Event", ("Executed", index, executed_fields)),
    )


def _pallets(spec_version: int) -> tuple[PalletDesc, ...]:
    system_events = frame.system_events(ACCOUNT_ID20)
    others = (
        frame.timestamp_pallet(),
        frame.balances_pallet(20, ACCOUNT_ID20, ACCOUNT_ID20, existential_deposit=10**12),
        frame.transaction_payment_pallet(21, ACCOUNT_ID20),
        _ethereum_pallet(spec_version),
    )
    runtime_event = frame.runtime_event(
        "evm_domain_runtime", (PalletDesc("System", 0, events=system_events), *others)
    )
    system = frame.system_pallet(
        ACCOUNT_ID20,
        system_events,
        runtime_event,
        block_hash_count=2400,
        ss58_prefix=6094,
        event_segment_size=100,
    )
    by_index = {p.index: p for p in (system, *others)}
    assert all(_PALLET_NAMES[i] == p.name for i, p in by_index.items())
    return tuple(by_index.get(i, PalletDesc(name, i)) for i, name in sorted(_PALLET_NAMES.items()))


def _signed_extensions() -> tuple[SignedExtensionDesc, ...]:
    """subspace-evm-domain spec 0 signed extensions, in order."""
    return (
        *frame.frame_system_extensions(),
        frame.signed_extension("CheckWeight", "domain_check_weight::CheckWeight"),
        frame.charge_transaction_payment(),
        frame.unit_extension(
            "CheckContractCreation",
            "pallet_evm_tracker::create_contract::CheckContractCreation",
            RUNTIME,
        ),
        frame.unit_extension(
            "MessengerExtension", "pallet_messenger::extensions::MessengerExtension", RUNTIME
        ),
    )


@cache
def domain_runtime(spec_version: int) -> RuntimeDesc:
    """The Auto-EVM runtime at ``spec_version`` (0: base, 1: simulated upgrade)."""
    if spec_version not in SPEC_VERSIONS:
        raise ValueError(
            f"unknown domain spec_version {spec_version}; the devnet knows {SPEC_VERSIONS}"
        )
    desc = RuntimeDesc(
        spec_name="subspace-evm-domain",
        impl_name="subspace-evm-domain",
        spec_version=spec_version,
        transaction_version=1 if spec_version == BASE_SPEC else 2,
        authoring_version=0,
        impl_version=0,
        state_version=1,
        system_version=2,
        apis=tuple((api_id(name), version) for name, version in _APIS),
        runtime_path="evm_domain_runtime::Runtime",
        pallets=_pallets(spec_version),
        signed_extensions=_signed_extensions(),
        address=ACCOUNT_ID20,
        signature=ETHEREUM_SIGNATURE,
        extrinsic_wrapper="fp_self_contained::unchecked_extrinsic::UncheckedExtrinsic",
    )
    return frame.checked(frame.with_version(desc))


# --- value builders -----------------------------------------------------------------------

_GWEI = 10**9


def legacy_transact_args(
    rng: random.Random,
    nonce: int,
    to: bytes | None,
    value: int = 0,
    *,
    gas_price: int = _GWEI,
    gas_limit: int = 21_000,
    input_data: bytes = b"",
    chain_id: int = 870,
) -> dict[str, Any]:
    """``Ethereum.transact`` arguments with a legacy (EIP-155) transaction; ``to=None``
    creates a contract.  The signature is filler from ``rng`` (nobody verifies it)."""
    tx = {
        "nonce": u256(nonce),
        "gas_price": u256(gas_price),
        "gas_limit": u256(gas_limit),
        "action": ("Create", None) if to is None else ("Call", to),
        "value": u256(value),
        "input": input_data,
        "signature": {
            "v": chain_id * 2 + 35 + rng.randrange(2),
            "r": random_bytes(rng, 32),
            "s": random_bytes(rng, 32),
        },
    }
    return {"transaction": ("Legacy", tx)}


def eip1559_transact_args(
    rng: random.Random,
    nonce: int,
    to: bytes | None,
    value: int = 0,
    *,
    max_fee_per_gas: int = _GWEI,
    max_priority_fee_per_gas: int = 0,
    gas_limit: int = 21_000,
    input_data: bytes = b"",
    chain_id: int = 870,
) -> dict[str, Any]:
    """``Ethereum.transact`` arguments with an EIP-1559 transaction (filler signature)."""
    tx = {
        "chain_id": chain_id,
        "nonce": u256(nonce),
        "max_priority_fee_per_gas": u256(max_priority_fee_per_gas),
        "max_fee_per_gas": u256(max_fee_per_gas),
        "gas_limit": u256(gas_limit),
        "action": ("Create", None) if to is None else ("Call", to),
        "value": u256(value),
        "input": input_data,
        "access_list": [],
        "odd_y_parity": bool(rng.randrange(2)),
        "r": random_bytes(rng, 32),
        "s": random_bytes(rng, 32),
    }
    return {"transaction": ("EIP1559", tx)}


SUCCEEDED: tuple[str, Any] = ("Succeed", ("Stopped", None))
REVERTED: tuple[str, Any] = ("Revert", ("Reverted", None))


def executed(
    from_: bytes,
    to: bytes,
    transaction_hash: bytes,
    exit_reason: tuple[str, Any] = SUCCEEDED,
    extra_data: bytes = b"",
) -> dict[str, Any]:
    """``Ethereum.Executed``; ``to`` is the created contract for a Create."""
    return {
        "from": from_,
        "to": to,
        "transaction_hash": transaction_hash,
        "exit_reason": exit_reason,
        "extra_data": extra_data,
    }
