"""NPU executables: programs per PE, the constant blob and the I/O bindings, in one file.

File layout (little-endian): magic `NPUX`, u32 format version, u32 header length, 32-byte
SHA-256 of everything after it, the JSON header, then the blobs the header indexes
(each program, the constants). `load` refuses a file whose magic, version, checksum or
spec hash does not match, saying which.
"""

from __future__ import annotations

import hashlib
import json
import logging
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Executable", "ExecutableError", "FORMAT_VERSION", "MAGIC"]

log = logging.getLogger(__name__)

MAGIC = b"NPUX"
FORMAT_VERSION = 1


class ExecutableError(ValueError):
    """An executable file that cannot be used, with the reason."""


@dataclass
class Executable:
    spec_name: str
    spec_hash: str
    programs: dict[int, bytes]  # PE -> encoded program
    consts: bytes
    arena_bytes: int
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    meta: dict[str, Any] = field(default_factory=dict)
    out_tree: Any = None  # host-side: how flat outputs rebuild the eager structure
    host_outputs: list[Any] = field(default_factory=list)

    @property
    def num_pes(self) -> int:
        return len(self.programs)

    def to_bytes(self) -> bytes:
        blobs: list[bytes] = []
        index = {}
        at = 0
        for pe, prog in sorted(self.programs.items()):
            index[f"program{pe}"] = [at, len(prog)]
            blobs.append(prog)
            at += len(prog)
        index["consts"] = [at, len(self.consts)]
        blobs.append(self.consts)
        header = {
            "spec_name": self.spec_name, "spec_hash": self.spec_hash,
            "pes": sorted(self.programs), "arena_bytes": self.arena_bytes,
            "inputs": self.inputs, "outputs": self.outputs, "meta": self.meta, "blobs": index,
        }
        hbytes = json.dumps(header, sort_keys=True).encode()
        body = hbytes + b"".join(blobs)
        return MAGIC + struct.pack("<II", FORMAT_VERSION, len(hbytes)) + \
            hashlib.sha256(body).digest() + body

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_bytes(self.to_bytes())
        log.info("wrote %s (%d bytes)", path, path.stat().st_size)
        return path

    @classmethod
    def from_bytes(cls, data: bytes, spec: Any = None) -> Executable:
        if len(data) < 44 or data[:4] != MAGIC:
            raise ExecutableError("not an NPU executable (bad magic)")
        version, hlen = struct.unpack_from("<II", data, 4)
        if version != FORMAT_VERSION:
            raise ExecutableError(
                f"executable format version {version}; this stack reads version {FORMAT_VERSION}"
                " - recompile the model")
        digest, body = data[12:44], data[44:]
        if hashlib.sha256(body).digest() != digest:
            raise ExecutableError("executable is corrupted (checksum mismatch)")
        try:
            header = json.loads(body[:hlen])
        except ValueError as e:
            raise ExecutableError(f"executable header is not valid JSON: {e}") from None
        if spec is not None and header["spec_hash"] != spec.hash:
            raise ExecutableError(
                f"executable was built for spec {header['spec_name']} "
                f"({header['spec_hash'][:12]}), not {spec.name} ({spec.hash[:12]}); recompile")
        blobs = body[hlen:]

        def blob(name: str) -> bytes:
            at, n = header["blobs"][name]
            return bytes(blobs[at:at + n])
        return cls(header["spec_name"], header["spec_hash"],
                   {pe: blob(f"program{pe}") for pe in header["pes"]}, blob("consts"),
                   header["arena_bytes"], header["inputs"], header["outputs"], header["meta"])

    @classmethod
    def load(cls, path: str | Path, spec: Any = None) -> Executable:
        return cls.from_bytes(Path(path).read_bytes(), spec)
