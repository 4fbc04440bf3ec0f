"""The generated instruction encoders and decoders, for the default and overridden specs."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gen
from hw import spec as hwspec

SPEC = hwspec.load("small")
ISA = gen.build(SPEC).isa


@st.composite
def instructions(draw):
    name = draw(st.sampled_from(sorted(ISA.CLASSES)))
    values = {f: draw(st.integers(0, (1 << w) - 1)) for f, _, w in ISA.FIELDS[name]}
    return name, values


@settings(max_examples=400, deadline=None)
@given(instructions())
def test_encode_decode_round_trip(case):
    name, values = case
    word = ISA.CLASSES[name](**values).encode()
    assert len(word) == SPEC.instruction_bytes
    back = ISA.decode(word)
    assert ISA.name_of(back) == name
    assert back._asdict() == values


@settings(max_examples=200, deadline=None)
@given(instructions())
def test_fields_land_at_the_spec_bits(case):
    # An independent packing from the spec's field layout, not from the generated code.
    name, values = case
    expected = SPEC.isa.instructions[name].opcode
    for field, lsb, _ in SPEC.field_layout(name):
        expected |= values[field] << lsb
    assert ISA.CLASSES[name](**values).encode() == expected.to_bytes(32, "little")


@pytest.mark.parametrize("name", sorted(ISA.CLASSES))
def test_every_out_of_range_field_is_named(name):
    for field, _, width in ISA.FIELDS[name]:
        for bad in (1 << width, -1):
            with pytest.raises(ISA.EncodeError, match=rf"^{name}\.{field} = {bad} does not fit"):
                ISA.CLASSES[name](**{field: bad}).encode()
        limit = rf"{width}-bit field \(0\.\.{(1 << width) - 1}\)"
        with pytest.raises(ISA.EncodeError, match=limit):
            ISA.CLASSES[name](**{field: 1 << width}).encode()


def test_non_integer_field_is_refused():
    with pytest.raises(ISA.EncodeError, match=r"MATMUL\.m = 2\.0"):
        ISA.Matmul(m=2.0).encode()


def test_illegal_opcode_is_a_decode_error():
    with pytest.raises(ISA.DecodeError, match="illegal opcode 0x00"):
        ISA.decode(bytes(32))
    with pytest.raises(ISA.DecodeError, match="illegal opcode 0x7e"):
        ISA.decode(b"\x7e" + bytes(31))


def test_program_round_trip_and_bad_length():
    program = [ISA.Load(n0=4, n1=1, n2=1), ISA.Matmul(m=8, n=8, k=8), ISA.End()]
    blob = ISA.encode_program(program)
    assert ISA.decode_program(blob) == program
    with pytest.raises(ValueError, match="not a whole number of 32-byte words"):
        ISA.decode_program(blob[:-1])


def test_shrinking_a_field_changes_encoder_and_layout():
    narrow = hwspec.load("small", **{"isa.instructions.LOAD.fields.sram_addr": 20})
    built = gen.build(narrow)
    assert built.isa is not ISA
    assert built.isa.Load(sram_addr=(1 << 20) - 1).encode()
    with pytest.raises(built.isa.EncodeError, match=r"LOAD\.sram_addr = 1048576 .* 20-bit"):
        built.isa.Load(sram_addr=1 << 20).encode()
    assert ISA.Load(sram_addr=1 << 20).encode()  # the default spec still takes it

    default_layout = gen.build(SPEC).layouts.Load
    narrow_layout = built.layouts.Load
    assert default_layout.size == narrow_layout.size == 256
    assert narrow_layout["sram_addr"].shape.width == 20
    assert default_layout["sram_addr"].shape.width == 26
    # every later field moves down by the 6 bits taken away
    assert narrow_layout["n0"].offset == default_layout["n0"].offset - 6


def test_build_is_cached_by_content_hash():
    again = hwspec.load("small")
    assert gen.build(again) is gen.build(SPEC)
