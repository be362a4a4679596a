"""Run a throw-away Prosody for demos and manual testing.

    python -m tests.support.demo_server --workdir /tmp/sat-demo

Prints one JSON line on stdout (ports, CA certificate, accounts with their passwords), then keeps
Prosody running until SIGTERM or SIGINT, when it stops it. Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import threading
from pathlib import Path

from tests.support.prosody import ProsodyError, ProsodyServer

DEMO_ACCOUNTS = (("demo1", "demo"), ("demo2", "demo"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--workdir",
        type=Path,
        help="directory for config, certificates, data and logs (default: a new temporary one)",
    )
    parser.add_argument("--storage", choices=("internal", "sql"), default="sql")
    parser.add_argument(
        "--account",
        action="append",
        default=[],
        metavar="USER:PASSWORD",
        help="extra account to create (repeatable)",
    )
    parser.add_argument("--log-level", default="info", help="Prosody log level (default: info)")
    args = parser.parse_args(argv)

    accounts = list(DEMO_ACCOUNTS)
    for spec in args.account:
        user, sep, password = spec.partition(":")
        if not sep or not user or not password:
            parser.error(f"--account expects USER:PASSWORD, got {spec!r}")
        accounts.append((user, password))

    # an existing workdir is reused: data (accounts, history) survive, while ports, config and
    # certificates are generated afresh
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="sat-demo-prosody-"))

    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    server = ProsodyServer(
        workdir,
        storage=args.storage,
        log_level=args.log_level,
        pubsub_admins=[f"{accounts[0][0]}@localhost"],
    )
    try:
        server.start()
        for user, password in accounts:
            try:
                server.register(user, password)
            except ProsodyError as exc:
                if "User exists" not in str(exc):
                    raise
                server.set_password(user, password)
        info = server.info()
        info["accounts"] = [
            {"jid": f"{user}@{server.domain}", "password": password} for user, password in accounts
        ]
        info["pubsub_admin"] = f"{accounts[0][0]}@{server.domain}"
        print(json.dumps(info), flush=True)
        while not stop.is_set() and server.running:
            stop.wait(0.5)
        if not server.running:
            print(f"Prosody exited unexpectedly\n{server.log_tail()}", file=sys.stderr)
            return 1
        return 0
    except ProsodyError as exc:
        print(f"cannot run the demo server: {exc}", file=sys.stderr)
        return 1
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
