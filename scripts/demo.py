"""The README's demo: a local Prosody, two accounts, the daemon, and a conversation.

Run through ``scripts/demo`` (which gives it a private D-Bus session bus with
``dbus-run-session``). It starts a Prosody on loopback with its own CA, starts
the SàT daemon, creates two profiles over the D-Bus bridge, connects them and
has one send a message the other receives, then shows the stored history.
With ``--once`` it stops there; otherwise it stays up so you can play with
the bridge (``gdbus``/``busctl`` commands are printed) until Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sat_frontends.bridge.dbus_client import DBusBridgeClient  # noqa: E402
from tests.support.daemon import SatDaemon  # noqa: E402
from tests.support.prosody import ProsodyServer  # noqa: E402


def say(text: str) -> None:
    print(text, flush=True)


async def scenario(bus: str, prosody: ProsodyServer) -> None:
    bridge = await DBusBridgeClient.connect(bus, wait=10, timeout=30)
    try:
        say(f"daemon version {await bridge.version_get()} ready on {bus}")
        options = {"host": prosody.host, "port": prosody.c2s_port}
        for name in ("demo1", "demo2"):
            if name not in await bridge.profiles_list():
                await bridge.profile_create(name, f"{name}@{prosody.domain}", "demo", "", options)
            await bridge.profile_connect(name, "")
            info = await bridge.profile_info_get(name)
            say(f"profile {name}: connected as {info['full_jid']}")
        got = asyncio.get_running_loop().create_future()

        def on_message(profile, message):
            if profile == "demo2" and not message["outgoing"] and not got.done():
                got.set_result(message)

        bridge.on("MessageNew", on_message)
        await bridge.message_send("demo1", f"demo2@{prosody.domain}", "Salut à toi, demo2 !", {})
        message = await asyncio.wait_for(got, 10)
        say(f"demo2 received from {message['from']}: {message['body']}")
        history = await bridge.history_get("demo2", f"demo1@{prosody.domain}", 10, {})
        say(f"demo2's stored history with demo1: {[m['body'] for m in history]}")
    finally:
        await bridge.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--once", action="store_true", help="stop after the scenario")
    parser.add_argument("--workdir", help="keep files there (default: a temporary directory)")
    args = parser.parse_args()
    bus = os.environ.get("DBUS_SESSION_BUS_ADDRESS")
    if not bus:
        say("no D-Bus session bus: run this through scripts/demo (dbus-run-session)")
        return 2
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="sat-demo-"))
    prosody = ProsodyServer(workdir / "prosody")
    daemon = None
    try:
        prosody.start()
        for name in ("demo1", "demo2"):
            prosody.register(name, "demo")
        say(f"Prosody on 127.0.0.1:{prosody.c2s_port} (accounts demo1, demo2; password 'demo')")
        daemon = SatDaemon(workdir / "sat", bus, prosody.ca_cert_path)
        daemon.start()
        say(f"SàT daemon running (pid {daemon.pid}, log {daemon.log_path})")
        asyncio.run(scenario(bus, prosody))
        if not args.once:
            say(
                "\nThe daemon stays up; try, from this session:\n"
                "  busctl --user introspect org.salutatoi.SAT /org/salutatoi/SAT/bridge\n"
                "  gdbus call --session -d org.salutatoi.SAT -o /org/salutatoi/SAT/bridge "
                "-m org.salutatoi.SAT.core.MessageSend demo2 demo1@localhost 'hi' '{}'\n"
                "Ctrl-C stops everything."
            )
            signals = {signal.SIGINT, signal.SIGTERM}
            signal.pthread_sigmask(signal.SIG_BLOCK, signals)
            signal.sigwait(signals)
        return 0
    finally:
        if daemon is not None:
            daemon.stop()
        prosody.stop()
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
