"""Symmetric-key devices made the way Microsoft's SDK samples make them, against `fleetsim emulate`:
azure-iot-hub's create_device_with_sas(id, None, None, "enabled") leaves the keys to the hub, and
azure-iot-device's IoTHubDeviceClient.create_from_connection_string, built from the keys the hub
answered, connects, sends telemetry and reads its twin. A second device uses a short sastoken_ttl:
the SDK renews its token 120 s before expiry and reconnects with the new one.

Driven by tests/it/hub_sas_sdk.rs. The hub connection string comes from FLEETSIM_HUB_CS (a secret:
never on the command line), the emulator's TLS root from FLEETSIM_CA_BUNDLE, the device id from
argv[1] (the renewing device is that id with "-renewing"). Prints one JSON line per step (never a key or a signature; of each password
the SDK sends, only its `se`); the Rust test checks them.
"""
import json
import os
import sys
import threading
import time
from urllib.parse import parse_qs

os.environ["REQUESTS_CA_BUNDLE"] = os.environ["FLEETSIM_CA_BUNDLE"]

import paho.mqtt.client as paho  # noqa: E402
from azure.iot.device import IoTHubDeviceClient, Message  # noqa: E402
from azure.iot.hub import IoTHubRegistryManager  # noqa: E402

# The expiry of every SAS token the SDK logs in with, by device (CONNECT's password).
token_expiries = {}
_original_login = paho.Client.username_pw_set


def _recording_login(self, username, password=None):
    if password and password.startswith("SharedAccessSignature "):
        fields = parse_qs(password[len("SharedAccessSignature "):])
        device = username.split("/")[1]
        token_expiries.setdefault(device, []).append(int(fields["se"][0]))
    return _original_login(self, username, password)


paho.Client.username_pw_set = _recording_login


def step(name, **values):
    print(json.dumps({"step": name, **values}, default=str), flush=True)


device_id = sys.argv[1]
renewing_id = f"{device_id}-renewing"
hub_cs = os.environ["FLEETSIM_HUB_CS"]
host = dict(p.split("=", 1) for p in hub_cs.split(";"))["HostName"]
with open(os.environ["FLEETSIM_CA_BUNDLE"]) as f:
    root_pem = f.read()

manager = IoTHubRegistryManager.from_connection_string(hub_cs)


def create(device):
    created = manager.create_device_with_sas(device, None, None, "enabled")
    keys = created.authentication.symmetric_key
    step("created", device=device, type=created.authentication.type,
         primary_len=len(keys.primary_key or ""), secondary_len=len(keys.secondary_key or ""),
         keys_differ=keys.primary_key != keys.secondary_key,
         generation_id=created.generation_id, etag=created.etag,
         cloud_to_device_message_count=created.cloud_to_device_message_count)
    return keys


# 1. A device whose keys the hub generated connects, sends and reads its twin.
keys = create(device_id)
device = IoTHubDeviceClient.create_from_connection_string(
    f"HostName={host};DeviceId={device_id};SharedAccessKey={keys.primary_key}",
    server_verification_cert=root_pem,
)
device.connect()
step("connected", device=device_id)
for n in range(3):
    device.send_message(Message(json.dumps({"n": n}), content_encoding="utf-8",
                                content_type="application/json"))
step("sent", messages=3)
device.patch_twin_reported_properties({"auth": "sas"})
twin = device.get_twin()
step("device_twin", reported=twin["reported"])
step("registry", connection_state=manager.get_device(device_id).connection_state)
device.disconnect()

# 2. With the secondary key and a 125 s token TTL, the SDK renews its token after about 5 s
# (120 s before expiry) and reconnects with it; it still sends afterwards.
keys = create(renewing_id)
renewing = IoTHubDeviceClient.create_from_connection_string(
    f"HostName={host};DeviceId={renewing_id};SharedAccessKey={keys.secondary_key}",
    server_verification_cert=root_pem,
    sastoken_ttl=125,
)
states = []
changed = threading.Event()


def on_state():
    states.append(renewing.connected)
    changed.set()


renewing.on_connection_state_change = on_state
renewing.connect()
deadline = time.monotonic() + 30
while time.monotonic() < deadline and len(set(token_expiries.get(renewing_id, []))) < 2:
    time.sleep(0.2)
# The reconnection may still be under way: wait until the client says it is connected.
while time.monotonic() < deadline and not renewing.connected:
    time.sleep(0.2)
renewing.send_message(Message("after renewal"))
step("renewed", expiries=token_expiries.get(renewing_id, []), states=states,
     connected=renewing.connected,
     connection_state=manager.get_device(renewing_id).connection_state)
renewing.disconnect()
for d in (device_id, renewing_id):
    manager.delete_device(d)
step("deleted")
