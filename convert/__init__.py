"""`convert`: the workstation side of blankfilter: quantise, validate, tune and evaluate models.

It imports only the shared contracts of the trap code (`firmware_app.imaging` for preprocessing,
`firmware_app.modelcard` for the card), never its internals; the trap never imports `convert`.
"""
