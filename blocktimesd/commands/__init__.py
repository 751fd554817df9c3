"""The command-line subcommands: argument parsing and wiring; the engines live apart."""
