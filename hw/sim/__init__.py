"""RTL simulation harness: Amaranth -> Verilog -> cocotb on Verilator or Icarus.

* :mod:`hw.sim.build`  - ``verilog_for(component, name, cache_key=...)``: cached conversion.
* :mod:`hw.sim.runner` - ``run_cocotb(verilog, toplevel, test_module, cache_key=...)``: build
  once per key and simulator, run cocotb tests, raise ``CocotbFailure`` when one fails.
* :mod:`hw.sim.bus`    - register-bus driver for cocotb tests (async ``RegisterBus``, blocking
  ``SyncBus`` for code run through ``cocotb.task.bridge``), ``wait_for`` with a timeout.

Nothing is imported here, so that ``import hw.sim`` pulls in neither Amaranth nor cocotb.
"""
