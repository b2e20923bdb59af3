"""A device running Microsoft's azure-iot-device 2.14, unmodified, receiving cloud-to-device
messages that fleetsim's own C2D sender sends (tests/it/c2d_fleetsim_sender.rs).

The hub connection string comes from FLEETSIM_HUB_CS (a secret: never on the command line), the
emulator's TLS root from FLEETSIM_CA_BUNDLE, the device id from argv[1], how many messages to wait
for from argv[2]. The driver creates the device (SAS) with azure-iot-hub's registry manager,
connects, prints "ready", then one JSON line per message received, and exits.
"""
import base64
import json
import os
import sys
import threading
import time

_bundle = os.environ["FLEETSIM_CA_BUNDLE"]
os.environ["REQUESTS_CA_BUNDLE"] = _bundle

from azure.iot.device import IoTHubDeviceClient  # noqa: E402
from azure.iot.hub import IoTHubRegistryManager  # noqa: E402

device_id = sys.argv[1]
want = int(sys.argv[2])
hub_cs = os.environ["FLEETSIM_HUB_CS"]
host = dict(p.split("=", 1) for p in hub_cs.split(";"))["HostName"]
with open(_bundle) as f:
    root_pem = f.read()

manager = IoTHubRegistryManager.from_connection_string(hub_cs)
key = base64.b64encode(os.urandom(32)).decode()
manager.create_device_with_sas(device_id, key, key, "enabled")

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
                "custom_properties": message.custom_properties,
                "data": message.data.decode("utf-8"),
            }
        )
        arrived.notify_all()


device = IoTHubDeviceClient.create_from_connection_string(
    f"HostName={host};DeviceId={device_id};SharedAccessKey={key}",
    server_verification_cert=root_pem,
)
device.on_message_received = on_message
device.connect()
print("ready", flush=True)
deadline = time.monotonic() + 30.0
with arrived:
    while len(received) < want:
        left = deadline - time.monotonic()
        if left <= 0:
            print(f"timed out: {len(received)} of {want} messages", file=sys.stderr)
            break
        arrived.wait(left)
device.shutdown()
for m in received:
    print(json.dumps(m), flush=True)
sys.exit(0 if len(received) >= want else 1)
