"""Run a command under systemd's MemoryDenyWriteExecute= rule, without systemd.

``python wdx.py PROGRAM ARGS...`` installs the seccomp filter that systemd installs for
``MemoryDenyWriteExecute=yes`` (src/shared/seccomp-util.c): ``mmap`` asking for write and
execute at once, ``mprotect``/``pkey_mprotect`` asking for execute, and ``shmat`` with
``SHM_EXEC`` fail with EPERM.  Then it execs the program, which inherits the filter.
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys

PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_RET_ERRNO = 0x00050000
EPERM = 1
PROT_WRITE, PROT_EXEC, SHM_EXEC = 0x2, 0x4, 0o100000

# audit arch, then the syscall numbers of mmap, mprotect, pkey_mprotect, shmat
ARCHES = {
    "x86_64": (0xC000003E, 9, 10, 329, 30),
    "aarch64": (0xC00000B7, 222, 226, 288, 196),
}

LD_W_ABS, JEQ_K, JSET_K, AND_K, RET_K = 0x20, 0x15, 0x45, 0x54, 0x06
OFF_NR, OFF_ARCH, OFF_ARG2 = 0, 4, 16 + 2 * 8  # struct seccomp_data, little-endian


class SockFilter(ctypes.Structure):
    _fields_ = [
        ("code", ctypes.c_uint16),
        ("jt", ctypes.c_uint8),
        ("jf", ctypes.c_uint8),
        ("k", ctypes.c_uint32),
    ]


class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(SockFilter))]


def program() -> list[tuple[int, int, int, int]]:
    arch, mmap, mprotect, pkey_mprotect, shmat = ARCHES[platform.machine()]
    deny = SECCOMP_RET_ERRNO | EPERM
    # Indices: 0-7 dispatch, 8-10 mmap, 11-12 mprotect, 13-14 shmat, 15 deny, 16 allow.
    return [
        (LD_W_ABS, 0, 0, OFF_ARCH),
        (JEQ_K, 0, 14, arch),  # another ABI: allow
        (LD_W_ABS, 0, 0, OFF_NR),
        (JEQ_K, 4, 0, mmap),  # -> 8
        (JEQ_K, 6, 0, mprotect),  # -> 11
        (JEQ_K, 5, 0, pkey_mprotect),  # -> 11
        (JEQ_K, 6, 0, shmat),  # -> 13
        (RET_K, 0, 0, SECCOMP_RET_ALLOW),
        (LD_W_ABS, 0, 0, OFF_ARG2),  # 8: mmap(addr, len, prot, ...)
        (AND_K, 0, 0, PROT_WRITE | PROT_EXEC),
        (JEQ_K, 4, 5, PROT_WRITE | PROT_EXEC),  # -> 15 deny, 16 allow
        (LD_W_ABS, 0, 0, OFF_ARG2),  # 11: mprotect(addr, len, prot)
        (JSET_K, 2, 3, PROT_EXEC),
        (LD_W_ABS, 0, 0, OFF_ARG2),  # 13: shmat(id, addr, flags)
        (JSET_K, 0, 1, SHM_EXEC),
        (RET_K, 0, 0, deny),  # 15
        (RET_K, 0, 0, SECCOMP_RET_ALLOW),  # 16
    ]


def install() -> None:
    insns = program()
    filters = (SockFilter * len(insns))(*(SockFilter(*i) for i in insns))
    prog = SockFprog(len(insns), filters)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "PR_SET_NO_NEW_PRIVS")
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "PR_SET_SECCOMP")


if __name__ == "__main__":
    install()
    os.execvp(sys.argv[1], sys.argv[1:])
