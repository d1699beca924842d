"""One module per `blankfilter` command. Each has `register(sub)` (its arguments, with the help a
user reads) and a `cmd_*` function that parses nothing more and calls the composition root
(`firmware_app.app`). They import `common` and the trap's parts, never each other or `cli`."""
