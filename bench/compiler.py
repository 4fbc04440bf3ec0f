"""Compiler benchmark: compile time of a Llama-like decode step, MAC utilisation of a large
GEMM in the cycle model, and decode-step cycles against the DRAM bandwidth bound on `board`.

Last line: name=value pairs.
"""

import time

import torch

import hw.model
import hw.spec
from stack.compiler import compile_model


class Decode(torch.nn.Module):
    """One decode token through `layers` Llama-like blocks (weights dominate DRAM traffic)."""

    def __init__(self, d=512, ff=1408, layers=2):
        super().__init__()
        self.blocks = torch.nn.ModuleList()
        for _ in range(layers):
            self.blocks.append(torch.nn.ModuleDict({
                "qkv": torch.nn.Linear(d, 3 * d, bias=False),
                "o": torch.nn.Linear(d, d, bias=False),
                "up": torch.nn.Linear(d, 2 * ff, bias=False),
                "down": torch.nn.Linear(ff, d, bias=False)}))
        self.ff = ff

    def forward(self, x):
        for b in self.blocks:
            q = b["qkv"](torch.nn.functional.rms_norm(x, x.shape[-1:]))
            x = x + b["o"](q[..., :x.shape[-1]])
            h = b["up"](x)
            x = x + b["down"](torch.nn.functional.silu(h[..., :self.ff]) * h[..., self.ff:])
        return x


def main():
    spec = hw.spec.load("board")
    torch.manual_seed(0)
    m = Decode().eval()
    x = torch.randn(1, 512)
    t0 = time.perf_counter()
    exe = compile_model(m, (x,), spec=spec)
    compile_s = time.perf_counter() - t0
    tl = hw.model.estimate(spec, exe.programs)
    weight_bytes = sum(p.numel() * 2 for p in m.parameters())
    bound = weight_bytes / spec.dram_bytes_per_cycle
    ratio = tl.cycles / bound

    class G(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Linear(1024, 1024, bias=False)

        def forward(self, a):
            return self.w(a)
    g = compile_model(G().eval(), (torch.randn(1024, 1024),), spec=spec)
    gt = hw.model.estimate(spec, g.programs)
    print(f"decode: {tl.cycles} cycles, DRAM bound {bound:.0f} cycles, compile {compile_s:.2f} s")
    print(f"gemm 1024^3: {gt.cycles} cycles, mac_utilization {gt.mac_utilization:.3f}")
    print(f"compile_s={compile_s:.3f} gemm_mac_utilization={gt.mac_utilization:.3f} "
          f"decode_cycles={tl.cycles} decode_vs_dram_bound={ratio:.3f}")


if __name__ == "__main__":
    main()
