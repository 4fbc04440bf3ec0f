"""Shared pieces of the NPU gateware: the DRAM request port, spec-derived constants.

The DRAM port is a simple request/response channel with 64-bit data. A requester raises
``req_valid`` with an 8-byte aligned ``req_addr``; the request is taken at a rising edge
where ``req_valid`` and ``req_ready`` are both high. Writes carry ``req_wdata`` and a byte
strobe ``req_wstrb`` and get no response. Reads are answered, in request order, by one
cycle of ``resp_valid`` with the 8 bytes at ``req_addr`` in ``resp_data`` (little-endian),
some fixed number of cycles later (the bench's DRAM latency).
"""

from __future__ import annotations

from amaranth.hdl import Array, Const
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from hw.spec import Spec

DRAM_ADDR_BITS = 32
DATA_BITS = 64
DATA_BYTES = DATA_BITS // 8
SRAM_ADDR_BITS = 26  # the width of SRAM address fields in the ISA

ELEM_BYTES = {"int8": 1, "int32": 4, "bf16": 2, "fp32": 4, "fp8_e4m3": 1, "fp8_e5m2": 1,
              "int16": 2}
INT_DTYPES = ("int8", "int16", "int32")
# VECTOR functions the RTL implements (integer inputs only).
RTL_VECTOR_FUNCS = ("copy", "add", "sub", "mul", "max", "min", "relu", "mul_shift", "clamp",
                    "row_sum", "row_max")
# Functions that read src2 (the others ignore it, and it is neither checked nor read).
BINARY_FUNCS = ("add", "sub", "mul", "max", "min", "mul_shift", "div")
ROW_REDUCTIONS = ("row_sum", "row_max")
# MATMUL input types the RTL implements.
RTL_MAC_DTYPES = ("int8",)


def dram_port() -> wiring.Signature:
    """The DRAM port as seen from a requester."""
    return wiring.Signature({
        "req_valid": Out(1),
        "req_ready": In(1),
        "req_we": Out(1),
        "req_addr": Out(DRAM_ADDR_BITS),
        "req_wdata": Out(DATA_BITS),
        "req_wstrb": Out(DATA_BYTES),
        "resp_valid": In(1),
        "resp_data": In(DATA_BITS),
    })


def elem_bytes_table(spec: Spec) -> Array:
    """Element size in bytes by dtype code (0 for codes the ISA lacks)."""
    sizes = [0] * 8
    for name, code in spec.isa.dtypes.items():
        sizes[code] = ELEM_BYTES[name]
    return Array(Const(s, 3) for s in sizes)


def sram_word_bits(spec: Spec) -> int:
    """Address bits of one 8-byte SRAM word."""
    return (spec.sram_bytes_per_pe // DATA_BYTES - 1).bit_length()


def check_rtl_spec(spec: Spec) -> None:
    """Raise ValueError when `spec` asks for something this RTL cannot be built for."""
    if spec.dram_bytes > 1 << DRAM_ADDR_BITS:
        raise ValueError(f"dram.size_mib must be at most {(1 << DRAM_ADDR_BITS) >> 20} for the "
                         f"RTL, got {spec.dram.size_mib}")
    if spec.isa.word_bits != 256:
        raise ValueError(f"isa.word_bits must be 256 for the RTL, got {spec.isa.word_bits}")
    if spec.dma.align_bytes % 4:
        raise ValueError(f"dma.align_bytes must be a multiple of 4 for the RTL, "
                         f"got {spec.dma.align_bytes}")
