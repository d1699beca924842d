"""blankfilter: the on-device blank filter for wildlife camera traps (the trap-side program)."""

__version__ = "0.1.0"
