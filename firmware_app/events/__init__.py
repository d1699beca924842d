"""Events: every kept burst becomes one MQTT event, and the trap publishes its health.

- `payloads`: the versioned event and status JSON (schemas in firmware_app/schemas/), topic names;
- `thumbnail`: the small JPEG an event may carry (the frames themselves stay on the trap);
- `health`: uptime, disk, CPU temperature, throttling;
- `mqtt`: the publisher (paho-mqtt 2.x, imported there only): outbox → broker, PUBACK → delivered,
  availability with a last will, status heartbeat, remote cutoff, Home Assistant discovery.

Events are written to the ledger's outbox in the same transaction as the burst's decision, so no
broker, a dead radio or a power cut only delays them.
"""
