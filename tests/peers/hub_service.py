"""Drives the hub emulator's cloud side with Microsoft's SDKs, unmodified: azure-iot-hub (service)
and azure-iot-device (device), as an operator and a device would use them.

Driven by tests/it/hub_service_sdk.rs against `fleetsim emulate`. The hub connection string comes
from FLEETSIM_HUB_CS (a secret: never on the command line), the emulator's TLS root from
FLEETSIM_CA_BUNDLE (azure-iot-hub's REST client is `requests`, which takes REQUESTS_CA_BUNDLE;
the device client takes the root as `server_verification_cert`), the device id from argv[1].
Prints one JSON line per step; the Rust test checks them.
"""
import base64
import json
import os
import sys
import threading
import time

os.environ["REQUESTS_CA_BUNDLE"] = os.environ["FLEETSIM_CA_BUNDLE"]

from azure.iot.device import IoTHubDeviceClient, MethodResponse  # noqa: E402
from azure.iot.hub import IoTHubRegistryManager  # noqa: E402
from azure.iot.hub.models import (  # noqa: E402
    CloudToDeviceMethod,
    QuerySpecification,
    Twin,
    TwinProperties,
)


def step(name, **values):
    print(json.dumps({"step": name, **values}, default=str), flush=True)


def wait_until(what, check, limit=20.0):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise SystemExit(f"timed out waiting for {what}")


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
)
desired_seen = []
acked = threading.Event()


def on_method(request):
    # Answers every method with its payload echoed back.
    response = MethodResponse.create_from_method_request(
        request, 200, {"echo": request.payload, "method": request.name}
    )
    device.send_method_response(response)


def on_desired(patch):
    desired_seen.append(patch)
    if "telemetryInterval" in patch:
        # Applies the interval and reports it back as acknowledged.
        device.patch_twin_reported_properties({"telemetryInterval": patch["telemetryInterval"]})
        acked.set()


device.on_method_request_received = on_method
device.on_twin_desired_properties_patch_received = on_desired
device.connect()
device.patch_twin_reported_properties({"firmware": "1.2.3"})
step("device_connected")

twin = manager.get_twin(device_id)
step(
    "twin",
    connection_state=twin.connection_state,
    reported=twin.properties.reported,
    etag=twin.etag,
    status_update_time=twin.status_update_time,
)

patch = Twin(properties=TwinProperties(desired={"telemetryInterval": 5}))
updated = manager.update_twin(device_id, patch, twin.etag)
step("desired_patched", desired=updated.properties.desired)
if not acked.wait(20):
    raise SystemExit("the device never saw the desired patch")
acked_twin = wait_until(
    "the reported acknowledgement",
    lambda: (lambda t: t if t.properties.reported.get("telemetryInterval") == 5 else None)(
        manager.get_twin(device_id)
    ),
)
step(
    "desired_round_trip",
    device_saw=desired_seen,
    reported=acked_twin.properties.reported,
)
step("device_twin", twin=device.get_twin())

method = CloudToDeviceMethod(
    method_name="reboot", payload={"delay": 2}, response_timeout_in_seconds=30
)
result = manager.invoke_device_method(device_id, method)
step("method", status=result.status, payload=result.payload)

service_stats = manager.get_service_statistics()
registry_stats = manager.get_device_registry_statistics()
step(
    "statistics",
    connected=service_stats.connected_device_count,
    total=registry_stats.total_device_count,
    enabled=registry_stats.enabled_device_count,
    disabled=registry_stats.disabled_device_count,
)

query = QuerySpecification(query="SELECT * FROM devices WHERE connectionState = 'Connected'")
found = manager.query_iot_hub(query, None, 10)
step(
    "query",
    type=found.type,
    ids=[t.device_id for t in found.items],
    continuation=found.continuation_token,
)

connected = manager.get_device(device_id)
step("device_connected_state", state=connected.connection_state)
device.shutdown()
gone = wait_until(
    "Disconnected",
    lambda: (lambda d: d if d.connection_state == "Disconnected" else None)(
        manager.get_device(device_id)
    ),
)
step("device_disconnected", state=gone.connection_state)
