"""The README's first command: the smallest end-to-end run of what exists."""

from __future__ import annotations

import gen
from hw import spec as hwspec


def main() -> None:
    for name in hwspec.names():
        spec = hwspec.load(name)
        isa = gen.build(spec).isa
        program = [
            isa.Load(n0=64, n1=8, n2=1, dram_s1=64, sram_s1=64),
            isa.Matmul(dtype=isa.DTYPE_INT8, m=8, n=8, k=64, a_stride=64, b_stride=64),
            isa.End(),
        ]
        blob = isa.encode_program(program)
        assert isa.decode_program(blob) == program
        print(
            f"{name:>10}: {spec.npu.num_pes} PEs, {spec.pe.mac.rows}x{spec.pe.mac.cols} MACs, "
            f"{spec.peak_tflops('bf16'):.2f} bf16 TFLOPS, {spec.total_sram_bytes >> 20} MiB SRAM, "
            f"{spec.dram_gbytes_per_s:.0f} GB/s DRAM; a 3-instruction program is {len(blob)} bytes"
        )


if __name__ == "__main__":
    main()
