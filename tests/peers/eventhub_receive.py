"""Receives events with azure-eventhub's EventHubConsumerClient, unmodified, and prints one JSON
line per event (partition, device id annotation, numbers, application properties, body).

Driven by tests/amqp.rs: FLEETSIM_EH_CS is the Event Hub-compatible connection string (a secret),
FLEETSIM_CA_BUNDLE the emulator's TLS root, argv[1] how many events to wait for, argv[2] the
consumer group, argv[3] the starting position ("-1", "@latest", ...). After the expected count
it keeps receiving for a little while, so duplicates and extra events show up in the output.
FLEETSIM_PEER_DEBUG=1 logs the SDK (and its AMQP frames) at DEBUG on stderr.
"""
import json
import os
import sys
import threading
import time

from azure.eventhub import EventHubConsumerClient

DEBUG = bool(os.environ.get("FLEETSIM_PEER_DEBUG"))
if DEBUG:
    import logging

    logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)

want = int(sys.argv[1])
group = sys.argv[2]
start = sys.argv[3]
LINGER_S = 2.0
DEADLINE_S = 45.0

client = EventHubConsumerClient.from_connection_string(
    os.environ["FLEETSIM_EH_CS"],
    consumer_group=group,
    connection_verify=os.environ["FLEETSIM_CA_BUNDLE"],
    logging_enable=DEBUG,
)
received = []
lock = threading.Lock()
enough = threading.Event()


def text(v):
    return v.decode("utf-8") if isinstance(v, bytes) else str(v)


def on_event(partition_context, event):
    if event is None:
        return
    annotations = event.system_properties
    record = {
        "partition": partition_context.partition_id,
        "device": text(annotations.get(b"iothub-connection-device-id")),
        "sequence": event.sequence_number,
        "offset": event.offset,
        "enqueued": event.enqueued_time is not None,
        "iothub_enqueued": b"iothub-enqueuedtime" in annotations,
        "properties": {text(k): text(v) for k, v in (event.properties or {}).items()},
        "content_type": event.content_type,
        "body": event.body_as_str(),
    }
    with lock:
        received.append(record)
        if len(received) >= want:
            enough.set()


def stop_in_time():
    if enough.wait(timeout=DEADLINE_S):
        time.sleep(LINGER_S)
    client.close()


threading.Thread(target=stop_in_time, daemon=True).start()
with client:
    client.receive(on_event=on_event, starting_position=start)
with lock:
    for r in received:
        print(json.dumps(r))
    got = len(received)
if got < want:
    print(f"received {got} of {want} events", file=sys.stderr)
    sys.exit(1)
