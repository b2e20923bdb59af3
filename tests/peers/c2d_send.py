"""Sends one C2D message with azure-iot-hub's IoTHubRegistryManager, unmodified.

Driven by tests/amqp.rs. The hub connection string comes from FLEETSIM_HUB_CS (a secret: never on
the command line), the emulator's TLS root from FLEETSIM_CA_BUNDLE, the device id from argv[1].
"""
import os
import sys

import certifi

# uamqp (under azure-iot-hub) trusts certifi's bundle and takes no CA option from
# azure-iot-hub: point certifi at the emulator's root instead of changing the SDK.
_bundle = os.environ["FLEETSIM_CA_BUNDLE"]
certifi.where = lambda: _bundle

from azure.iot.hub import IoTHubRegistryManager  # noqa: E402

device_id = sys.argv[1]
manager = IoTHubRegistryManager.from_connection_string(os.environ["FLEETSIM_HUB_CS"])
manager.send_c2d_message(
    device_id,
    "hello from azure-iot-hub",
    properties={
        "colour": "blue",
        "messageId": "sdk-msg-1",
        "correlationId": "sdk-corr-1",
        "contentType": "application/json",
        "contentEncoding": "utf-8",
    },
)
print("sent")
