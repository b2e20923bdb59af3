"""Provisions one device through DPS with Microsoft's unmodified azure-iot-device SDK, then
connects to the hub DPS assigned and sends one message there.

Usage: dps_register.py PROVISIONING_HOST ID_SCOPE REGISTRATION_ID CERT_FILE KEY_FILE TRUST_FILE

CERT_FILE holds the device certificate followed by its issuing CA (the chain the device
presents); TRUST_FILE the root of the emulators' server certificates. Prints one JSON line:
{"status", "assigned_hub", "device_id", "substatus", "sent"}. Exits 1 on any SDK error.
"""
import json
import sys

from azure.iot.device import IoTHubDeviceClient, Message, ProvisioningDeviceClient, X509


def main():
    host, id_scope, registration_id, cert_file, key_file, trust_file = sys.argv[1:7]
    with open(trust_file) as f:
        trust = f.read()
    x509 = X509(cert_file=cert_file, key_file=key_file)
    provisioning = ProvisioningDeviceClient.create_from_x509_certificate(
        provisioning_host=host,
        registration_id=registration_id,
        id_scope=id_scope,
        x509=x509,
        server_verification_cert=trust,
    )
    result = provisioning.register()
    state = result.registration_state
    out = {
        "status": result.status,
        "assigned_hub": state.assigned_hub if state else None,
        "device_id": state.device_id if state else None,
        "substatus": state.sub_status if state else None,
        "sent": 0,
    }
    if result.status == "assigned":
        device = IoTHubDeviceClient.create_from_x509_certificate(
            x509=x509,
            hostname=state.assigned_hub,
            device_id=state.device_id,
            server_verification_cert=trust,
        )
        device.connect()
        device.send_message(Message('{"from": "azure-iot-device"}'))
        device.shutdown()
        out["sent"] = 1
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
