"""Receives events with azure-eventhub's EventHubConsumerClient, unmodified, and prints one JSON
line per event (device id annotation, application properties, body).

Driven by tests/amqp.rs: FLEETSIM_EH_CS is the Event Hub-compatible connection string (a secret),
FLEETSIM_CA_BUNDLE the emulator's TLS root, argv[1] how many events to wait for, argv[2] the
consumer group.
"""
import json
import os
import sys
import threading

from azure.eventhub import EventHubConsumerClient

if os.environ.get("FLEETSIM_PEER_DEBUG"):
    import logging

    logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)

want = int(sys.argv[1])
group = sys.argv[2]
client = EventHubConsumerClient.from_connection_string(
    os.environ["FLEETSIM_EH_CS"],
    consumer_group=group,
    connection_verify=os.environ["FLEETSIM_CA_BUNDLE"],
)
received = []
done = threading.Event()


def text(v):
    return v.decode("utf-8") if isinstance(v, bytes) else str(v)


def on_event(partition_context, event):
    if event is None:
        return
    received.append(
        {
            "partition": partition_context.partition_id,
            "device": text(event.system_properties[b"iothub-connection-device-id"]),
            "sequence": event.sequence_number,
            "properties": {text(k): text(v) for k, v in (event.properties or {}).items()},
            "content_type": event.content_type,
            "body": event.body_as_str(),
        }
    )
    if len(received) >= want:
        done.set()


def stop_when_done():
    done.wait(timeout=45)
    client.close()


threading.Thread(target=stop_when_done, daemon=True).start()
with client:
    client.receive(on_event=on_event, starting_position="-1")
for r in received:
    print(json.dumps(r))
if len(received) < want:
    print(f"received {len(received)} of {want} events", file=sys.stderr)
    sys.exit(1)
