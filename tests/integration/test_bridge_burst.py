"""A burst of signals larger than the socket buffer must not drop the daemon off the bus.

dbus-fast treats a full socket as fatal; our server's writer waits instead. The burst is
emitted in one tight loop (no chance for the bus to drain in between), so the socket
fills up for sure.
"""

import asyncio

from dbus_fast import Message, MessageType
from dbus_fast.aio import MessageBus

from sat.bridge import dbus_server
from sat.bridge.contract import Bridge
from tests.support.dbus import asyncio_test, dbus_bus  # noqa: F401  (fixture)

COUNT = 20_000


@asyncio_test(timeout=120)
async def test_signal_burst_is_delivered_whole(dbus_bus):  # noqa: F811
    bridge = Bridge()
    bridge.add_method(
        "Ping", lambda: True, out=("b", "always true"), doc="are you there?", interface="core"
    )
    bridge.add_signal(
        "Tick", (("n", "i", "counter"), ("payload", "s", "padding")), "a tick", interface="core"
    )
    server = await dbus_server.start(bridge, dbus_bus.address)
    listener = await MessageBus(bus_address=dbus_bus.address).connect()
    try:
        received = []
        done = asyncio.get_running_loop().create_future()

        def on_message(msg):
            if msg.message_type is MessageType.SIGNAL and msg.member == "Tick":
                received.append(msg.body[0])
                if len(received) == COUNT and not done.done():
                    done.set_result(None)

        listener.add_message_handler(on_message)
        await listener.call(
            Message(
                destination="org.freedesktop.DBus",
                path="/org/freedesktop/DBus",
                interface="org.freedesktop.DBus",
                member="AddMatch",
                signature="s",
                body=["type='signal',member='Tick'"],
            )
        )
        padding = "x" * 200
        for n in range(COUNT):  # no await: the socket cannot drain meanwhile
            bridge.emit("Tick", n, padding)
        await asyncio.wait_for(done, 60)
        assert received == list(range(COUNT))
        assert server.connected
        reply = await listener.call(
            Message(
                destination=dbus_server.BUS_NAME,
                path=dbus_server.OBJECT_PATH,
                interface="org.salutatoi.SAT.core",
                member="Ping",
            )
        )
        assert reply.message_type is MessageType.METHOD_RETURN and reply.body == [True]
    finally:
        listener.disconnect()
        await server.stop()
