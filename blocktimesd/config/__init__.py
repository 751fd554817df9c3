"""Settings from the TOML file, the environment and the command line.

:mod:`.model` holds what the rest of the program reads (frozen dataclasses of plain
values, the mainnet defaults); :mod:`.load` reads and checks the sources (precedence,
one error listing every problem); :mod:`.values` parses each kind of value.
"""
