"""Run NPU executables through the driver: sessions, asynchronous submission, results."""

from stack.runtime.session import Result, Session, parse_devices

__all__ = ["Session", "Result", "parse_devices"]
