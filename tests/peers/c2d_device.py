"""Cloud-to-device messages between Microsoft's SDKs, unmodified: azure-iot-hub's send_c2d_message
(AMQP) to a device running azure-iot-device (MQTT, on_message_received), through the hub emulator.

Driven by tests/it/c2d_sdk.rs against `fleetsim emulate`. The hub connection string comes from
FLEETSIM_HUB_CS (a secret: never on the command line), the emulator's TLS root from
FLEETSIM_CA_BUNDLE (requests takes REQUESTS_CA_BUNDLE; uamqp trusts certifi's bundle, so certifi is
pointed at it; the device client takes it as server_verification_cert), the device id from argv[1].
Prints one JSON line per message the device received; the Rust test checks them.
"""
import base64
import json
import os
import sys
import threading
import time

_bundle = os.environ["FLEETSIM_CA_BUNDLE"]
os.environ["REQUESTS_CA_BUNDLE"] = _bundle

import certifi  # noqa: E402

certifi.where = lambda: _bundle

from azure.iot.device import IoTHubDeviceClient  # noqa: E402
from azure.iot.hub import IoTHubRegistryManager  # noqa: E402

device_id = sys.argv[1]
hub_cs = os.environ["FLEETSIM_HUB_CS"]
host = dict(p.split("=", 1) for p in hub_cs.split(";"))["HostName"]
with open(_bundle) as f:
    root_pem = f.read()

manager = IoTHubRegistryManager.from_connection_string(hub_cs)
key = base64.b64encode(os.urandom(32)).decode()
manager.create_device_with_sas(device_id, key, key, "enabled")

# Sent before the device ever connected: the hub queues it.
manager.send_c2d_message(device_id, "sent while offline", properties={"messageId": "offline-1"})

received = []
arrived = threading.Condition()


def on_message(message):
    with arrived:
        received.append(
            {
                "message_id": message.message_id,
                "correlation_id": message.correlation_id,
                "content_type": message.content_type,
                "content_encoding": message.content_encoding,
                "expiry_time_utc": message.expiry_time_utc,
                "ack": message.ack,
                "custom_properties": message.custom_properties,
                "data": message.data.decode("utf-8"),
            }
        )
        arrived.notify_all()


def wait_for(n, limit=30.0):
    deadline = time.monotonic() + limit
    with arrived:
        while len(received) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise SystemExit(f"timed out waiting for message {n}; got {received}")
            arrived.wait(left)


device = IoTHubDeviceClient.create_from_connection_string(
    f"HostName={host};DeviceId={device_id};SharedAccessKey={key}",
    server_verification_cert=root_pem,
)
device.on_message_received = on_message
device.connect()
wait_for(1)

manager.send_c2d_message(
    device_id,
    json.dumps({"command": "reboot", "delay": 5}),
    properties={
        "messageId": "sdk-msg-2",
        "correlationId": "sdk-corr-2",
        "contentType": "application/json",
        "contentEncoding": "utf-8",
        "expiryTimeUtc": int(time.time() * 1000) + 600_000,
        "colour": "blue & green",
        "path": "/a/b?c=d",
        "empty": "",
    },
)
wait_for(2)

# Away and back: the SDK reconnects with CleanSession 0; what was sent meanwhile arrives.
device.disconnect()
manager.send_c2d_message(device_id, "sent while disconnected", properties={"messageId": "away-3"})
device.connect()
wait_for(3)
device.shutdown()
for m in received:
    print(json.dumps(m), flush=True)
