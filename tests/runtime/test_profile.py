"""The profiler's trace: valid Chrome trace JSON with compiler passes and per-PE engines."""

import json

import torch

import stack


def test_profile_trace(tmp_path):
    torch.manual_seed(0)

    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Linear(8, 16)
            self.b = torch.nn.Linear(16, 4)

        def forward(self, x):
            return self.b(torch.cumsum(torch.relu(self.a(x)), 1))
    m = M().eval()
    x = torch.randn(3, 8)
    path = tmp_path / "trace.json"
    r = stack.compile_and_run(m, (x,), fallback="cpu", profile=path)
    ref = m(x).detach()
    assert (r.outputs - ref).abs().max().item() <= 2e-2 * ref.abs().max().item() + 1e-3
    trace = json.loads(path.read_text())
    ev = trace["traceEvents"]
    for e in ev:
        assert e["ph"] in ("X", "M", "C") and isinstance(e["pid"], int) and "name" in e
        if e["ph"] == "X":
            assert e["ts"] >= 0 and e["dur"] >= 0
    names = {(e["pid"], e["args"]["name"]) for e in ev
             if e["ph"] == "M" and e["name"] == "process_name"}
    assert any(n == "compiler" for _, n in names) and any(n == "PE 0" for _, n in names)
    comp = [e for e in ev if e["ph"] == "X" and e.get("cat") == "compiler"]
    assert {"export", "frontend", "partition0.legalize", "partition0.codegen"} <= \
        {e["name"] for e in comp}
    threads = {e["args"]["name"] for e in ev if e["ph"] == "M" and e["name"] == "thread_name"
               and e["pid"] == 0}
    assert {"load", "compute", "store"} <= threads
    per_queue = {e["cat"] for e in ev if e["ph"] == "X" and e["pid"] == 0}
    assert {"load", "compute", "store"} <= per_queue
    assert any(e["ph"] == "X" and e["name"] == "MATMUL" for e in ev)
    assert any(e["ph"] == "X" and e.get("cat") == "cpu" and "cumsum" in e["name"] for e in ev)
