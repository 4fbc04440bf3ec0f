import pytest

from hw import spec as hwspec
from hw.spec import SpecError


@pytest.mark.parametrize("name", hwspec.names())
def test_shipped_specs_load(name):
    spec = hwspec.load(name)
    assert spec.name == name
    assert spec.total_sram_bytes == spec.npu.num_pes * spec.pe.sram.size_kib * 1024


def test_names_cover_the_three_shipped_parts():
    assert {"small", "board", "datacenter"} <= set(hwspec.names())


def test_datacenter_figures_are_rngd_class():
    spec = hwspec.load("datacenter")
    assert spec.npu.num_pes == 8
    assert spec.total_sram_bytes == 256 << 20
    assert spec.dram_bytes == 48 << 30
    assert 1.4e3 <= spec.dram_gbytes_per_s <= 1.6e3
    # 8 PEs x 128 x 128 cells x 2 fp8 MACs x 2 flops x 1 GHz
    assert spec.peak_tflops("fp8_e4m3") == pytest.approx(8 * 128 * 128 * 2 * 2 * 1e9 / 1e12)
    assert spec.peak_tflops("bf16") == pytest.approx(spec.peak_tflops("fp8_e4m3") / 2)


def test_base_spec_is_merged_key_by_key():
    small, board = hwspec.load("small"), hwspec.load("board")
    assert board.pe.mac.rows == 32
    load = board.isa.instructions["LOAD"].fields
    assert dict(load) == dict(small.isa.instructions["LOAD"].fields)
    assert board.pe.queues.depth == small.pe.queues.depth


def test_dotted_and_double_underscore_overrides():
    a = hwspec.load("small", **{"pe.mac.rows": 16})
    b = hwspec.load("small", pe__mac__rows=16)
    assert a.pe.mac.rows == b.pe.mac.rows == 16
    assert a.hash == b.hash != hwspec.load("small").hash
    assert a.peak_macs_per_cycle("int8") == 2 * 16 * 8


def test_spec_is_immutable():
    spec = hwspec.load("small")
    with pytest.raises(AttributeError):
        spec.npu.num_pes = 3
    with pytest.raises(TypeError):
        spec.pe.mac["rows"] = 3


def test_capability_reset_values_publish_figures():
    spec = hwspec.load("board")
    assert spec.register_value("spec:pe.mac.rows") == 32
    assert spec.register_value("spec:npu.version") == (1 << 16) | 0
    dtypes = spec.register_value("spec:pe.mac.dtypes")
    assert dtypes == sum(1 << spec.isa.dtypes[d] for d in ("int8", "bf16", "fp8_e4m3", "fp8_e5m2"))
    assert spec.register_value("spec:hash32") == int(spec.hash[:8], 16)


BAD = [
    ({"pe.mac.rowz": 8}, "pe.mac.rowz", "did you mean 'rows'"),
    ({"dram.latency": 8}, "dram.latency", "unknown key"),
    ({"pe.mac.rows": 0}, "pe.mac.rows", r"must be in \[1, 1024\], got 0"),
    ({"npu.num_pes": 17}, "npu.num_pes", "got 17"),
    ({"pe.sram.banks": 6}, "pe.sram.banks", "power of two"),
    ({"npu.clock_mhz": "fast"}, "npu.clock_mhz", "must be an integer"),
    ({"pe.mac.dtypes": ["int8", "int3"]}, r"pe.mac.dtypes\[1\]", "must be one of"),
    (
        {"registers.global.IRQ_MASK.offset": 0x84},
        "registers.global.IRQ_MASK",
        "overlaps registers.global.IRQ_STATUS at 0x0084",
    ),
    ({"registers.pe.PC.offset": 0x200}, "registers.pe.PC", "past the PE block"),
    (
        {"isa.instructions.LOAD.fields.n0": 24},
        "isa.instructions.LOAD.fields",
        "264 bits do not fit the 256-bit instruction word",
    ),
    ({"isa.instructions.END.opcode": 0x10}, "isa.instructions.END.opcode", "already MATMUL's"),
    ({"isa.instructions.LOAD.fields.n0": 0}, "isa.instructions.LOAD.fields.n0", "got 0"),
    ({"isa.instructions.LOAD.fields.stride": 4}, "isa.instructions.LOAD.fields.stride", "unknown"),
    ({"isa.dtypes.bf16": 0}, "isa.dtypes.bf16", "already int8's"),
    ({"pe.vector.ops": ["add", "fft"]}, r"pe.vector.ops\[1\]", "must be one of"),
    ({"registers.global.ID.reset": "spec:npu.speed"}, "registers.global.ID.reset", "npu.speed"),
    ({"isa.instructions.MATMUL.fields.dtype": 2}, "isa.dtype", "do not fit 2 bits"),
    ({"pe.mac.accumulators.int8": "int64"}, "pe.mac.accumulators.int8", "must be one of"),
]


@pytest.mark.parametrize(("overrides", "key", "why"), BAD)
def test_bad_spec_names_the_key(overrides, key, why):
    with pytest.raises(SpecError, match=rf"^{key}: .*{why}") as info:
        hwspec.load("small", **overrides)
    assert info.value.key == key.replace("\\", "")


def _write(tmp_path, text, name="custom.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_missing_key_in_a_file(tmp_path):
    small = (hwspec.SPEC_DIR / "small.toml").read_text()
    path = _write(tmp_path, small.replace("latency_cycles = 40\n", ""))
    with pytest.raises(SpecError, match=r"^dram.latency_cycles: missing key"):
        hwspec.load(path)


def test_missing_required_register(tmp_path):
    small = (hwspec.SPEC_DIR / "small.toml").read_text()
    lines = [ln for ln in small.splitlines() if not ln.startswith("DOORBELL ")]
    path = _write(tmp_path, "\n".join(lines))
    with pytest.raises(SpecError, match=r"^registers.global.DOORBELL: missing key"):
        hwspec.load(path)


def test_file_with_a_base_and_a_typo(tmp_path):
    path = _write(tmp_path, 'base = "small"\n[dram]\nsize_mb = 64\n')
    with pytest.raises(SpecError, match="dram.size_mb: unknown key; did you mean 'size_mib'"):
        hwspec.load(path)
    ok = _write(tmp_path, 'base = "small"\n[dram]\nsize_mib = 64\n', "ok.toml")
    assert hwspec.load(ok).dram_bytes == 64 << 20


def test_invalid_toml_and_unknown_name(tmp_path):
    with pytest.raises(SpecError, match="is not valid TOML"):
        hwspec.load(_write(tmp_path, "[npu\nname = 1"))
    with pytest.raises(SpecError, match="no spec named 'tiny'; shipped: board, datacenter, small"):
        hwspec.load("tiny")


def test_base_cycle_is_refused(tmp_path):
    _write(tmp_path, 'base = "b"\n', "a.toml")
    _write(tmp_path, 'base = "a"\n', "b.toml")
    with pytest.raises(SpecError, match="^base: "):
        hwspec.load(tmp_path / "a.toml")
