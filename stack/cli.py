"""The `npu` command. Each subcommand is a function in SUBCOMMANDS that adds its parser.

A new subcommand (e.g. `serve`) is one more `def _name(sub)` that calls
`sub.add_parser(...)`, sets `func` to a handler taking the parsed arguments and returning
an exit status, and is listed in SUBCOMMANDS.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

log = logging.getLogger(__name__)


def _smi(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("smi", help="list NPU devices and what they are doing")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--watch", nargs="?", type=float, const=1.0, metavar="SECONDS",
                   help="refresh every SECONDS (default 1) until interrupted")
    p.add_argument("--dir", type=Path, help="device folder (default: the daemon's default)")
    p.set_defaults(func=_run_smi)


def _run_smi(args: argparse.Namespace) -> int:
    import driver
    from driver import smi

    previous = None
    while True:
        rows = smi.collect(driver.list_devices(args.dir), previous)
        text = smi.to_json(rows) if args.json else smi.format_table(rows)
        if args.watch and not args.json:
            sys.stdout.write("\x1b[H\x1b[2J")
        print(text, flush=True)
        if not args.watch:
            return 0
        previous = {r["device"]: r for r in rows}
        try:
            time.sleep(args.watch)
        except KeyboardInterrupt:
            return 0


def _daemon(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("daemon", help="host emulated devices behind device files")
    p.add_argument("--devices", type=int, default=1, help="number of devices (default 1)")
    p.add_argument("--spec", default="small", help="hardware spec name (default small)")
    p.add_argument("--dir", type=Path, help="device folder (default $NPU_DEVICE_DIR, "
                   "else $XDG_RUNTIME_DIR/npu, else /tmp/npu-$UID)")
    p.add_argument("--exact", action="store_true", help="exact-mode numerics in the model")
    p.set_defaults(func=_run_daemon)


def _run_daemon(args: argparse.Namespace) -> int:
    from driver.daemon import Daemon

    Daemon(args.devices, args.spec, args.dir, exact=args.exact).serve()
    return 0


def _serve(sub: argparse._SubParsersAction) -> None:
    from stack.serve.server import add_arguments, serve

    p = sub.add_parser("serve", help="OpenAI-compatible server for a model on the NPU")
    add_arguments(p)
    p.set_defaults(func=serve)


SUBCOMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [_smi, _daemon, _serve]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="npu", description="NPU emulator tools")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in SUBCOMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    if args.command == "daemon":
        level = min(level, logging.INFO)
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
