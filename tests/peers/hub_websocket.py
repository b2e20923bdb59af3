"""Microsoft's SDKs on one emulated hub port, as on IoT Hub's 443: azure-iot-device with
websockets=True (MQTT over wss://{host}:443/$iothub/websocket) and azure-iot-hub's registry calls
(https://{host}:443), both against `fleetsim emulate --azure-ports`.

Driven by tests/it/hub_websocket_sdk.rs. The hub connection string comes from FLEETSIM_HUB_CS (a
secret: never on the command line), the emulator's TLS root from FLEETSIM_CA_BUNDLE, the device
id from argv[1]. Prints one JSON line per step; the Rust test checks them.
"""
import base64
import json
import os
import sys
import time

os.environ["REQUESTS_CA_BUNDLE"] = os.environ["FLEETSIM_CA_BUNDLE"]

from azure.iot.device import IoTHubDeviceClient, Message  # noqa: E402
from azure.iot.hub import IoTHubRegistryManager  # noqa: E402


def step(name, **values):
    print(json.dumps({"step": name, **values}, default=str), flush=True)


device_id = sys.argv[1]
hub_cs = os.environ["FLEETSIM_HUB_CS"]
host = dict(p.split("=", 1) for p in hub_cs.split(";"))["HostName"]
with open(os.environ["FLEETSIM_CA_BUNDLE"]) as f:
    root_pem = f.read()

manager = IoTHubRegistryManager.from_connection_string(hub_cs)
key = base64.b64encode(os.urandom(32)).decode()
manager.create_device_with_sas(device_id, key, key, "enabled")
step("created", device=device_id)

device = IoTHubDeviceClient.create_from_connection_string(
    f"HostName={host};DeviceId={device_id};SharedAccessKey={key}",
    server_verification_cert=root_pem,
    websockets=True,
)
device.connect()
step("connected", websockets=True)
for n in range(3):
    device.send_message(Message(json.dumps({"n": n}), content_encoding="utf-8",
                                content_type="application/json"))
step("sent", messages=3)
device.patch_twin_reported_properties({"transport": "websocket"})
twin = device.get_twin()
step("device_twin", reported=twin["reported"])

registry_twin = manager.get_twin(device_id)
step("registry_twin", reported=registry_twin.properties.reported,
     connection_state=registry_twin.connection_state)
device.disconnect()
deadline = time.monotonic() + 20
state = None
while time.monotonic() < deadline:
    state = manager.get_device(device_id).connection_state
    if state == "Disconnected":
        break
    time.sleep(0.2)
step("disconnected", state=state)
manager.delete_device(device_id)
step("deleted")
