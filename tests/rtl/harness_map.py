"""Register map of the harness DUT (see harness_dut.py).

Kept apart from the design so that cocotb test modules can use it without importing
Amaranth, which would add about a second to every simulator start.
"""

SCRATCH0 = 0x00  # rw
SCRATCH1 = 0x04  # rw
TARGET = 0x08  # rw: number of cycles the counter runs for
CTRL = 0x0C  # w: bit0=1 starts the counter (clears done); r: bit0 busy, bit1 done
COUNT = 0x10  # r: cycles counted since the last start
ID = 0x14  # r: ID_VALUE
ID_VALUE = 0x4E505530  # "NPU0"
TOP = "harness_dut"
