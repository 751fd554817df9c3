"""blocktimesd: block times of the Autonomys Network, measured."""

__version__ = "0.1.0"
