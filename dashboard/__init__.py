"""blankfilter monitor: a live dashboard for a fleet of traps, run next to the broker.

`blankfilter monitor --broker mqtt://host:1883` (or `python -m dashboard`) subscribes to
`blankfilter/+/#`, checks every payload against the traps' JSON schemas, keeps events and the latest
status per trap in SQLite, and serves one web page with live updates (server-sent events).

Modules, one idea each: `contracts` (the schemas and topic layout shared with the trap), `jpeg`
(thumbnail check), `store` (SQLite), `ingest` (MQTT message -> checked -> stored -> pushed), `live`
(the server-sent-events fan-out), `subscriber` (paho-mqtt adapter), `csvexport`, `web` (HTTP server
and JSON API), `cli`. The trap's code never imports this package; it joins the `blankfilter`
command through the `blankfilter.commands` entry point.
"""
