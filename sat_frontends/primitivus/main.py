"""``primitivus``: the console client of the SàT daemon.

    primitivus [--profile NAME] [--bus ADDRESS] [--config FILE] [--mouse]

It connects to the daemon's bridge (D-Bus: the session bus, or ``$SAT_BRIDGE_BUS`` /
``--bus``), shows the profile manager (or logs ``--profile`` in) and runs until Ctrl+Q.
Profiles stay connected in the daemon when Primitivus quits. Logs go to
``$XDG_STATE_HOME/sat/primitivus.log`` (never to the terminal, which the UI owns).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path

__all__ = ["main", "parse_args"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="primitivus", description="Salut à Toi console client (XMPP, via the SàT daemon)"
    )
    parser.add_argument("-p", "--profile", help="log this profile in at start")
    parser.add_argument(
        "--profile-password-env",
        metavar="VAR",
        help="read the profile password from this environment variable",
    )
    parser.add_argument(
        "--bus",
        metavar="ADDRESS",
        help="D-Bus address of the daemon's bus, 'session' or 'system' "
        "(default: $SAT_BRIDGE_BUS, else the session bus)",
    )
    parser.add_argument("-c", "--config", metavar="FILE", help="extra sat.conf to read")
    parser.add_argument("--mouse", action="store_true", default=None, help="use the mouse")
    parser.add_argument("--no-mouse", dest="mouse", action="store_false", help="no mouse")
    parser.add_argument("--log", metavar="FILE", help="log file (default: under $XDG_STATE_HOME)")
    parser.add_argument(
        "--wait", type=float, default=5.0, help="seconds to wait for the daemon (default 5)"
    )
    return parser.parse_args(argv)


def _log_file(explicit: str | None) -> Path:
    if explicit:
        return Path(explicit)
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "sat" / "primitivus.log"


async def _amain(args: argparse.Namespace) -> int:
    from sat_frontends.bridge import errors
    from sat_frontends.bridge.dbus_client import DBusBridgeClient
    from sat_frontends.primitivus import config as config_mod
    from sat_frontends.primitivus.app import PrimitivusApp

    config = config_mod.load(args.config)
    if args.mouse is not None:
        config.mouse = args.mouse
    try:
        bridge = await DBusBridgeClient.connect(args.bus, wait=args.wait, timeout=120)
    except errors.BridgeError as e:
        sys.stderr.write(
            f"primitivus: cannot reach the SàT daemon: {e.message or e}\n"
            "Start it with `sat start` (or give its bus with --bus / $SAT_BRIDGE_BUS).\n"
        )
        return 2
    password = os.environ.get(args.profile_password_env, "") if args.profile_password_env else ""
    app = PrimitivusApp(bridge, config, args.config)
    try:
        await app.run(args.profile, password)
    finally:
        await bridge.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    log_path = _log_file(args.log)
    try:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        logging.basicConfig(
            filename=str(log_path),
            level=logging.INFO,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
    except OSError:
        logging.basicConfig(level=logging.CRITICAL)
    try:
        return asyncio.run(_amain(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
