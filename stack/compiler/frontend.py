"""Lower `torch.export` programs (and FX graphs from torch.compile) into the compiler IR.

Every ATen operator is handled by one function in `HANDLERS`, keyed by its packet name
("add", "linear", ...). Nodes whose tensor inputs are all compile-time constants are
evaluated on the host (constant folding), which is how attention masks, rotary tables
and batch-norm scales become plain constants. Operators the NPU cannot run raise
`UnsupportedOperator` naming the operator and the model's source line.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable
from typing import Any

import torch
import torch.fx

from stack.compiler.ir import Graph, Value

__all__ = ["UnsupportedOperator", "from_exported", "export", "HANDLERS", "source_of"]

log = logging.getLogger(__name__)
aten = torch.ops.aten


class UnsupportedOperator(NotImplementedError):
    """An operator (or an operand form) the compiler cannot map onto the NPU."""

    def __init__(self, op: str, source: str, why: str = ""):
        self.op, self.source = op, source
        where = f" at {source}" if source else ""
        detail = f": {why}" if why else ""
        super().__init__(
            f"operator {op}{where} is not supported on the NPU{detail}; "
            "pass fallback='cpu' to run it on the host"
        )


def source_of(node: torch.fx.Node) -> str:
    """'file:line' of the innermost model frame in the node's stack trace."""
    trace = node.meta.get("stack_trace") or ""
    hits = re.findall(r'File "([^"]+)", line (\d+)', trace)
    return f"{hits[-1][0]}:{hits[-1][1]}" if hits else ""


def export(model: torch.nn.Module, example_inputs: tuple) -> torch.export.ExportedProgram:
    with torch.no_grad():
        return torch.export.export(model, tuple(example_inputs))


class _Lowering:
    def __init__(self, graph: Graph):
        self.g = graph
        self.source = ""
        self.op = ""

    # value helpers

    def const(self, t: torch.Tensor) -> Value:
        t = t.detach()
        dtype = "i32" if not (t.is_floating_point() or t.dtype == torch.bool) else "f32"
        if t.dtype == torch.bool:
            dtype = "bool"
        return Value(self.g.fresh("c"), tuple(t.shape), dtype, "const", const=t)

    def add(self, op: str, inputs: list[Value], shape: tuple[int, ...], dtype: str = "f32",
            **attrs: Any) -> Value:
        return self.g.add(op, inputs, tuple(shape), dtype, self.source, **attrs)

    def unsupported(self, why: str) -> UnsupportedOperator:
        return UnsupportedOperator(self.op, self.source, why)

    def view(self, v: Value, fn: Callable[[torch.Tensor], torch.Tensor]) -> Value:
        """Apply a torch view function to `v`, tracking strides on meta tensors."""
        if v.kind == "const":
            return self.const(fn(v.const))
        root = v.root
        root_meta = torch.empty(root.numel, device="meta")
        base = root_meta.as_strided(v.shape, v.strides, v.offset)
        try:
            out = fn(base)
        except RuntimeError:
            out = None
        if out is None or out._base is not root_meta:
            # Not expressible as a view of this layout: materialise a contiguous copy.
            if v.kind != "view" and out is None:
                raise self.unsupported(f"view of shape {list(v.shape)}")
            return self.view(self.add("copy", [v], v.shape, v.dtype), fn)
        return Value(self.g.fresh("view"), tuple(out.shape), v.dtype, "view", root=root,
                     offset=out.storage_offset(), strides=tuple(out.stride()))

    def contiguous(self, v: Value) -> Value:
        if v.kind == "const":
            return self.const(v.const.contiguous())
        if v.kind != "view" or (v.is_contiguous() and v.numel == v.root.numel):
            return v
        return self.add("copy", [v], v.shape, v.dtype)


def _shape(t: Any) -> tuple[int, ...]:
    return tuple(int(d) for d in t)


# ---------------------------------------------------------------- handlers

HANDLERS: dict[str, Callable[..., Any]] = {}


def handles(*names: str) -> Callable:
    def wrap(fn: Callable) -> Callable:
        for n in names:
            HANDLERS[n] = fn
        return fn
    return wrap


def _views(L: _Lowering, target: Any, x: Value, *args: Any, **kw: Any) -> Value:
    return L.view(x, lambda t: target(t, *args, **kw))


@handles("view", "_unsafe_view", "reshape")
def _reshape(L, target, x, shape):
    shape = list(shape)
    return L.view(x, lambda t: t.view(shape))


for _name in ("transpose", "permute", "t", "slice", "select", "unsqueeze", "squeeze", "expand",
              "flatten", "unflatten", "alias", "narrow", "detach", "as_strided", "unfold",
              "view_as", "expand_as", "movedim"):
    HANDLERS[_name] = _views


@handles("split", "split_with_sizes", "chunk", "unbind")
def _split(L, target, x, *args, **kw):
    meta = torch.empty(x.shape, device="meta")
    n = len(target(meta, *args, **kw))
    return [L.view(x, lambda t, i=i: target(t, *args, **kw)[i]) for i in range(n)]


@handles("contiguous", "clone", "lift_fresh_copy", "dropout", "_to_copy", "to", "type_as",
         "feature_dropout", "alpha_dropout")
def _identity(L, target, x, *args, **kw):
    if target.__name__.startswith("to") or target.__name__.startswith("_to_copy"):
        dtype = kw.get("dtype") or next((a for a in args if isinstance(a, torch.dtype)), None)
        if dtype is not None and not dtype.is_floating_point and x.dtype == "f32":
            raise L.unsupported(f"conversion of an activation to {dtype}")
    return x


def _assert(L, target, *args, **kw):
    return None


HANDLERS["_assert_tensor_metadata"] = _assert
HANDLERS["_assert_scalar"] = _assert
HANDLERS["sym_constrain_range_for_size"] = _assert


def _broadcast_shape(*shapes: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(torch.broadcast_shapes(*shapes))


def _binary(L: _Lowering, func: str, a: Any, b: Any) -> Value:
    if not isinstance(a, Value):
        a, b = b, a
        func = {"sub": "rsub", "div": "rdiv"}.get(func, func)
    if not isinstance(b, Value):
        return L.add("eltwise", [a], a.shape, func=func, scalar=float(b))
    if b.kind == "const" and b.numel == 1 and func != "rdiv":
        return L.add("eltwise", [a], _broadcast_shape(a.shape, b.shape), func=func,
                     scalar=float(b.const.reshape(()).item()))
    if a.kind == "const" and a.numel == 1:
        swapped = {"sub": "rsub", "div": "rdiv"}.get(func, func)
        return L.add("eltwise", [b], _broadcast_shape(a.shape, b.shape), func=swapped,
                     scalar=float(a.const.reshape(()).item()))
    if func == "rsub":
        a, b, func = b, a, "sub"
    if func == "rdiv":
        a, b, func = b, a, "div"
    return L.add("eltwise", [a, b], _broadcast_shape(a.shape, b.shape), func=func)


def _float(L: _Lowering, v: Any) -> Any:
    if isinstance(v, Value) and v.dtype != "f32":
        raise L.unsupported(f"integer or boolean tensor {v.dtype} in floating-point arithmetic")
    return v


@handles("add", "sub", "rsub")
def _add(L, target, a, b, alpha=1):
    func = target.__name__.split(".")[0]
    a, b = _float(L, a), _float(L, b)
    if alpha != 1:
        b = _binary(L, "mul", b, alpha) if isinstance(b, Value) else b * alpha
    return _binary(L, func, a, b)


@handles("mul", "div", "maximum", "minimum")
def _mul(L, target, a, b, rounding_mode=None):
    if rounding_mode is not None:
        raise L.unsupported(f"division with rounding_mode={rounding_mode!r}")
    name = target.__name__.split(".")[0]
    func = {"maximum": "max", "minimum": "min"}.get(name, name)
    return _binary(L, func, _float(L, a), _float(L, b))


_UNARY = {"exp": "exp", "rsqrt": "rsqrt", "relu": "relu", "silu": "silu", "sigmoid": "sigmoid",
          "tanh": "tanh", "reciprocal": "recip", "neg": "neg", "sqrt": "sqrt", "abs": "abs"}


@handles(*_UNARY)
def _unary(L, target, x):
    return L.add("eltwise", [_float(L, x)], x.shape, func=_UNARY[target.__name__.split(".")[0]])


@handles("gelu")
def _gelu(L, target, x, approximate="none"):
    return L.add("eltwise", [x], x.shape, func="gelu_tanh" if approximate == "tanh" else "gelu_erf")


@handles("pow")
def _pow(L, target, x, p):
    if not isinstance(x, Value) or not isinstance(p, (int, float)):
        raise L.unsupported("only tensor ** constant exponent")
    if p == 1:
        return x
    if p == 2:
        return L.add("eltwise", [x, x], x.shape, func="mul")
    if p == 3:
        sq = L.add("eltwise", [x, x], x.shape, func="mul")
        return L.add("eltwise", [sq, x], x.shape, func="mul")
    table = {0.5: "sqrt", -0.5: "rsqrt", -1: "recip"}
    if p in table:
        return L.add("eltwise", [x], x.shape, func=table[p])
    raise L.unsupported(f"exponent {p} (supported: -1, -0.5, 0.5, 1, 2, 3)")


@handles("clamp", "hardtanh", "clip")
def _clamp(L, target, x, lo=None, hi=None):
    if lo is not None:
        x = L.add("eltwise", [x], x.shape, func="max", scalar=float(lo))
    if hi is not None:
        x = L.add("eltwise", [x], x.shape, func="min", scalar=float(hi))
    return x


def _dims(dim: Any, rank: int) -> list[int]:
    if dim is None:
        return list(range(rank))
    dims = [dim] if isinstance(dim, int) else list(dim)
    return sorted(d % rank for d in dims)


def _to_last(L: _Lowering, x: Value, dims: list[int]) -> tuple[Value, list[int]]:
    """Permute `dims` to the end; return the permuted value and the permutation."""
    rank = len(x.shape)
    perm = [d for d in range(rank) if d not in dims] + dims
    if perm == list(range(rank)):
        return x, perm
    return L.contiguous(L.view(x, lambda t: t.permute(perm))), perm


def _from_last(L: _Lowering, y: Value, perm: list[int]) -> Value:
    if perm == list(range(len(perm))):
        return y
    inv = [perm.index(d) for d in range(len(perm))]
    return L.view(y, lambda t: t.permute(inv))


@handles("mean", "sum", "amax")
def _reduce(L, target, x, dim=None, keepdim=False, dtype=None):
    name = target.__name__.split(".")[0]
    rank = len(x.shape)
    dims = _dims(dim, rank)
    xl, _ = _to_last(L, L.contiguous(x), dims)
    xl = L.contiguous(xl)
    inner = math.prod(x.shape[d] for d in dims)
    outer = tuple(x.shape[d] for d in range(rank) if d not in dims)
    flat = L.view(xl, lambda t: t.reshape(math.prod(outer), inner))
    y = L.add("reduce", [flat], (math.prod(outer), 1), func=name)
    if keepdim:
        shape = [1 if d in dims else x.shape[d] for d in range(rank)]
    else:
        shape = list(outer)
    return L.view(y, lambda t: t.reshape(shape))


@handles("softmax", "_softmax", "_safe_softmax", "log_softmax")
def _softmax(L, target, x, dim, *rest):
    if target.__name__.startswith("log_softmax"):
        raise L.unsupported("log_softmax needs log, which the vector unit lacks")
    dim = dim % len(x.shape)
    xl, perm = _to_last(L, L.contiguous(x), [dim])
    y = L.add("softmax", [L.contiguous(xl)], xl.shape)
    return L.contiguous(_from_last(L, y, perm))


@handles("layer_norm")
def _layer_norm(L, target, x, shape, weight=None, bias=None, eps=1e-5, *rest):
    inner = math.prod(shape)
    return _norm(L, x, inner, weight, bias, eps, "layer_norm")


@handles("rms_norm")
def _rms_norm(L, target, x, shape, weight=None, eps=None):
    eps = torch.finfo(torch.float32).eps if eps is None else eps
    return _norm(L, x, math.prod(shape), weight, None, eps, "rms_norm")


def _norm(L, x, inner, weight, bias, eps, kind):
    x = L.contiguous(x)
    flat = L.view(x, lambda t: t.reshape(-1, inner))
    params = []
    for p in (weight, bias):
        if p is not None and p.kind != "const":
            raise L.unsupported(f"{kind} with a computed weight or bias")
        params.append(None if p is None else p.const.reshape(inner).float())
    y = L.add("norm", [flat], flat.shape, kind=kind, eps=float(eps), weight=params[0],
              bias=params[1])
    return L.view(y, lambda t: t.reshape(x.shape))


# matrix products


def _gemm(L: _Lowering, a: Value, b: Value, bias: Value | None = None) -> Value:
    """a[..., M, K] @ b[..., K, N] with numpy-style batch broadcasting."""
    if a.dtype != "f32" or b.dtype != "f32":
        raise L.unsupported("integer matrix products")
    if len(a.shape) == 1:
        a = L.view(a, lambda t: t.unsqueeze(0))
        return L.view(_gemm(L, a, b, bias), lambda t: t.squeeze(-2))
    if len(b.shape) == 1:
        b = L.view(b, lambda t: t.unsqueeze(-1))
        return L.view(_gemm(L, a, b, bias), lambda t: t.squeeze(-1))
    batch = _broadcast_shape(a.shape[:-2], b.shape[:-2])
    M, K = a.shape[-2:]
    N = b.shape[-1]
    if b.shape[-2] != K:
        raise L.unsupported(f"inner dimensions differ: {a.shape} @ {b.shape}")
    if b.kind == "const":
        b = L.const(b.const.float())
    if not b.shape[:-2] and batch:
        # A shared right operand: fold the batch into M (one big GEMM).
        a = L.contiguous(a)
        a2 = L.view(a, lambda t: t.reshape(-1, K))
        y = _gemm(L, a2, b, bias)
        return L.view(y, lambda t: t.reshape(*batch, M, N))
    a = L.view(a, lambda t: t.expand(*batch, M, K)) if a.shape[:-2] != batch else a
    b = L.view(b, lambda t: t.expand(*batch, K, N)) if b.shape[:-2] != batch else b
    inputs = [a, b] + ([bias] if bias is not None else [])
    return L.add("gemm", inputs, (*batch, M, N), act=None, bias=bias is not None)


@handles("linear")
def _linear(L, target, x, w, b=None):
    wt = L.view(w, lambda t: t.t())
    return _gemm(L, x, wt, b)


@handles("matmul", "mm", "bmm")
def _matmul(L, target, a, b):
    return _gemm(L, a, b)


@handles("addmm")
def _addmm(L, target, bias, a, b, beta=1, alpha=1):
    if beta != 1 or alpha != 1:
        y = _gemm(L, a, b)
        y = _binary(L, "mul", y, alpha) if alpha != 1 else y
        bias = _binary(L, "mul", bias, beta) if beta != 1 else bias
        return _binary(L, "add", y, bias)
    return _gemm(L, a, b, bias)


@handles("baddbmm")
def _baddbmm(L, target, bias, a, b, beta=1, alpha=1):
    y = _gemm(L, a, b)
    y = _binary(L, "mul", y, alpha) if alpha != 1 else y
    if beta == 0:
        return y
    bias = _binary(L, "mul", bias, beta) if beta != 1 else bias
    return _binary(L, "add", y, bias)


@handles("scaled_dot_product_attention")
def _sdpa(L, target, q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
          enable_gqa=False):
    E = q.shape[-1]
    Lq, S = q.shape[-2], k.shape[-2]
    scale = 1.0 / math.sqrt(E) if scale is None else scale
    if enable_gqa and k.shape[-3] != q.shape[-3]:
        rep = q.shape[-3] // k.shape[-3]
        k = _repeat_heads(L, k, rep)
        v = _repeat_heads(L, v, rep)
    kt = L.view(k, lambda t: t.transpose(-2, -1))
    scores = _binary(L, "mul", _gemm(L, q, kt), scale)
    mask = None
    if is_causal:
        mask = torch.ones(Lq, S, dtype=torch.bool).tril(diagonal=S - Lq)
    if attn_mask is not None:
        if attn_mask.kind != "const":
            if attn_mask.dtype == "bool":
                raise L.unsupported("a computed boolean attention mask")
            scores = _binary(L, "add", scores, attn_mask)
        else:
            m = attn_mask.const
            mask = m if mask is None else (m & mask if m.dtype == torch.bool else m)
    if mask is not None:
        if mask.dtype == torch.bool:
            mask = torch.zeros(mask.shape).masked_fill(~mask, float("-inf"))
        scores = _binary(L, "add", scores, L.const(mask.float()))
    probs = L.add("softmax", [scores], scores.shape)
    return _gemm(L, probs, v)


def _repeat_heads(L: _Lowering, x: Value, rep: int) -> Value:
    *b, h, s, e = x.shape
    x = L.view(x, lambda t: t.unsqueeze(-3).expand(*b, h, rep, s, e))
    return L.view(L.contiguous(x), lambda t: t.reshape(*b, h * rep, s, e))


@handles("embedding")
def _embedding(L, target, weight, idx, *rest):
    if weight.kind != "const":
        raise L.unsupported("an embedding table computed at run time")
    if idx.kind == "const":
        return L.const(torch.nn.functional.embedding(idx.const, weight.const))
    if idx.dtype != "i32":
        raise L.unsupported("embedding indices must be an integer tensor")
    idx = L.contiguous(idx)
    flat = L.view(idx, lambda t: t.reshape(-1))
    D = weight.shape[1]
    y = L.add("gather", [flat], (flat.numel, D), table=weight.const.float())
    return L.view(y, lambda t: t.reshape(*idx.shape, D))


@handles("cat", "concat", "concatenate")
def _cat(L, target, xs, dim=0):
    xs = [x for x in xs if x.numel > 0 or len(x.shape) > 1]
    if all(x.kind == "const" for x in xs):
        return L.const(torch.cat([x.const for x in xs], dim))
    dim = dim % len(xs[0].shape)
    shape = list(xs[0].shape)
    shape[dim] = sum(x.shape[dim] for x in xs)
    xs = [L.const(x.const.float()) if x.kind == "const" else x for x in xs]
    return L.add("cat", xs, tuple(shape), xs[0].dtype, dim=dim)


# convolution and pooling (NCHW)


def _pair(v: Any) -> tuple[int, int]:
    v = list(v) if isinstance(v, (list, tuple)) else [v]
    return (int(v[0]), int(v[-1]))


@handles("conv2d", "convolution")
def _conv2d(L, target, x, w, b=None, stride=1, padding=0, dilation=1, *rest):
    if target.__name__.startswith("convolution"):
        transposed, _, groups = rest[0], rest[1], rest[2]
        if transposed:
            raise L.unsupported("transposed convolution")
    else:
        groups = rest[0] if rest else 1
    if groups != 1:
        raise L.unsupported(f"grouped convolution (groups={groups})")
    if isinstance(padding, str):
        raise L.unsupported(f"padding={padding!r}; give explicit padding")
    if w.kind != "const":
        raise L.unsupported("convolution weights computed at run time")
    if len(x.shape) != 4:
        raise L.unsupported("only 2-D convolution on NCHW inputs")
    (sh, sw), (ph, pw), (dh, dw) = _pair(stride), _pair(padding), _pair(dilation)
    N, C, H, W = x.shape
    OC, _, KH, KW = w.shape
    OH = (H + 2 * ph - dh * (KH - 1) - 1) // sh + 1
    OW = (W + 2 * pw - dw * (KW - 1) - 1) // sw + 1
    x = L.contiguous(x)
    cols = L.add("im2col", [x], (N * OH * OW, C * KH * KW), kernel=(KH, KW), stride=(sh, sw),
                 padding=(ph, pw), dilation=(dh, dw), out_hw=(OH, OW))
    wt = L.const(w.const.float().reshape(OC, -1).t())
    y = _gemm(L, cols, wt, b)
    y = L.view(y, lambda t: t.reshape(N, OH, OW, OC).permute(0, 3, 1, 2))
    return L.contiguous(y)


@handles("batch_norm", "_native_batch_norm_legit_no_training", "_native_batch_norm_legit")
def _batch_norm(L, target, x, w, b, mean, var, *rest):
    name = target.__name__
    if name.startswith("batch_norm"):
        training, eps = rest[0], rest[2]
    elif name.startswith("_native_batch_norm_legit_no_training"):
        training, eps = False, rest[1]
    else:
        training, eps = rest[0], rest[2]
    if training:
        raise L.unsupported("batch norm in training mode; call model.eval()")
    C = x.shape[1]
    scale = torch.rsqrt(var.const.float() + eps)
    if w is not None:
        scale = scale * w.const.float()
    shift = -mean.const.float() * scale
    if b is not None:
        shift = shift + b.const.float()
    bshape = (C,) + (1,) * (len(x.shape) - 2)
    y = _binary(L, "mul", x, L.const(scale.reshape(bshape)))
    y = _binary(L, "add", y, L.const(shift.reshape(bshape)))
    if name.startswith("_native"):
        empty = L.const(torch.zeros(0))
        return (y, empty, empty)
    return y


@handles("max_pool2d", "avg_pool2d", "max_pool2d_with_indices")
def _pool(L, target, x, kernel, stride=None, padding=0, *rest):
    name = target.__name__.split(".")[0]
    kh, kw = _pair(kernel)
    sh, sw = _pair(stride) if stride else (kh, kw)
    ph, pw = _pair(padding)
    if name.startswith("max_pool") and (ph or pw):
        raise L.unsupported("max pooling with padding")
    if name == "avg_pool2d" and (ph or pw):
        raise L.unsupported("average pooling with padding")
    if name.startswith("max_pool") and len(rest) > 1 and rest[1]:
        raise L.unsupported("ceil_mode pooling")
    N, C, H, W = x.shape
    OH, OW = (H - kh) // sh + 1, (W - kw) // sw + 1
    x = L.contiguous(x)
    y = L.add("pool", [x], (N, C, OH, OW), func="max" if "max" in name else "avg",
              kernel=(kh, kw), stride=(sh, sw))
    if name == "max_pool2d_with_indices":
        return (y, L.const(torch.zeros(0)))
    return y


@handles("adaptive_avg_pool2d", "_adaptive_avg_pool2d")
def _adaptive_avg(L, target, x, out_size):
    N, C, H, W = x.shape
    oh, ow = _pair(out_size)
    if (oh, ow) == (1, 1):
        return _reduce(L, aten.mean.dim, x, [-2, -1], True)
    if H % oh or W % ow:
        raise L.unsupported(f"adaptive pooling {H}x{W} -> {oh}x{ow} with uneven windows")
    return _pool(L, aten.avg_pool2d.default, x, (H // oh, W // ow))


# ---------------------------------------------------------------- driver


def _packet(target: Any) -> str:
    if isinstance(target, torch._ops.OpOverload):
        return target.overloadpacket.__name__
    return getattr(target, "__name__", str(target))


def _fold(target: Any, args: Any, kwargs: Any) -> Any:
    def unwrap(a: Any) -> Any:
        if isinstance(a, Value):
            return a.const
        if isinstance(a, (list, tuple)):
            return type(a)(unwrap(x) for x in a)
        return a
    with torch.no_grad():
        return target(*unwrap(args), **{k: unwrap(v) for k, v in kwargs.items()})


def _has_runtime(a: Any) -> bool:
    if isinstance(a, Value):
        return a.kind != "const"
    if isinstance(a, (list, tuple)):
        return any(_has_runtime(x) for x in a)
    return False


def lower_fx(gm_graph: torch.fx.Graph, placeholders: dict[str, Any], fallback: str | None = None
             ) -> tuple[Graph, list[Any], list[str]]:
    """Lower an FX graph; `placeholders` maps each placeholder name to a Value or tensor.

    Returns the IR graph, the flat outputs (Values, host constants or None) and the
    reasons of any CPU fallback (empty unless `fallback == 'cpu'`).
    """
    g = Graph()
    L = _Lowering(g)
    env: dict[str, Any] = {}
    breaks: list[str] = []
    for node in gm_graph.nodes:
        if node.op == "placeholder":
            v = placeholders[node.name]
            if isinstance(v, torch.Tensor):
                v = L.const(v)
            elif isinstance(v, Value) and v.kind == "input":
                g.inputs.append(v)
            env[node.name] = v
        elif node.op == "call_function":
            env[node.name] = _lower_node(L, node, env, fallback, breaks)
        elif node.op == "output":
            outs = torch.fx.node.map_arg(node.args[0], lambda n: env[n.name])
            flat = outs if isinstance(outs, (list, tuple)) else [outs]
            g.outputs = [v for v in flat if isinstance(v, Value) and v.kind != "const"]
            return g, list(flat), breaks
        elif node.op == "get_attr":
            raise UnsupportedOperator(f"get_attr {node.target}", source_of(node))
    raise ValueError("the FX graph has no output node")


def _lower_node(L: _Lowering, node: torch.fx.Node, env: dict[str, Any], fallback: str | None,
                breaks: list[str]) -> Any:
    import operator

    args = torch.fx.node.map_arg(node.args, lambda n: env[n.name])
    kwargs = torch.fx.node.map_arg(node.kwargs, lambda n: env[n.name])
    target = node.target
    if target is operator.getitem:
        return args[0][args[1]]
    name = _packet(target)
    L.op, L.source = f"aten.{name}" if isinstance(target, torch._ops.OpOverload) else name, \
        source_of(node)
    if not _has_runtime(args) and not _has_runtime(kwargs):
        out = _fold(target, args, kwargs)
        if isinstance(out, torch.Tensor):
            return L.const(out)
        if isinstance(out, (list, tuple)):
            return type(out)(L.const(o) if isinstance(o, torch.Tensor) else o for o in out)
        return out
    handler = HANDLERS.get(name)
    try:
        if handler is None:
            raise L.unsupported("")
        return handler(L, target, *args, **kwargs)
    except UnsupportedOperator as e:
        if fallback != "cpu":
            raise
        breaks.append(str(e).split(";")[0])
        return _host_node(L, target, args, kwargs, node)


def _host_node(L: _Lowering, target: Any, args: Any, kwargs: Any, node: torch.fx.Node) -> Any:
    """A node the host runs: its runtime operands are materialised, its output is an input."""
    ins: list[Value] = []

    def collect(a: Any) -> Any:
        if isinstance(a, Value) and a.kind != "const":
            ins.append(L.contiguous(a))
            return ins[-1]
        return a
    args = torch.fx.node.map_aggregate(args, collect)
    kwargs = torch.fx.node.map_aggregate(kwargs, collect)
    val = node.meta.get("val")
    vals = val if isinstance(val, (list, tuple)) else [val]
    outs = []
    for t in vals:
        dtype = "f32" if t.dtype.is_floating_point else "i32"
        outs.append(L.add("host", ins, tuple(t.shape), dtype, target=target, args=args,
                          kwargs=kwargs, index=len(outs), n_out=len(vals)))
    return outs if isinstance(val, (list, tuple)) else outs[0]


def from_exported(ep: torch.export.ExportedProgram, fallback: str | None = None
                  ) -> tuple[Graph, list[Any], list[str], Any]:
    """IR of an exported program: (graph, flat outputs, fallback breaks, output tree spec)."""
    sig = ep.graph_signature
    consts = dict(ep.state_dict)
    consts.update(getattr(ep, "constants", {}) or {})
    ph: dict[str, Any] = {}
    user = 0
    for spec in sig.input_specs:
        name = spec.arg.name
        kind = spec.kind.name
        if kind == "USER_INPUT":
            meta = _placeholder_meta(ep, name)
            if meta is None:
                raise ValueError(f"input {name} is not a tensor; pass tensors only")
            dtype = "f32" if meta.dtype.is_floating_point else "i32"
            ph[name] = Value(f"in{user}", tuple(meta.shape), dtype, "input")
            ph[name].index = user  # type: ignore[attr-defined]
            user += 1
        else:
            ph[name] = consts[spec.target]
    g, flat, breaks = lower_fx(ep.graph, ph, fallback)
    return g, flat, breaks, ep.call_spec.out_spec


def _placeholder_meta(ep: torch.export.ExportedProgram, name: str) -> Any:
    for n in ep.graph.nodes:
        if n.op == "placeholder" and n.name == name:
            val = n.meta.get("val")
            return val if isinstance(val, torch.Tensor) else None
    return None


