"""Trunkline: deploy a self-hosted LiveKit voice stack and put it on the phone network."""

__version__ = "0.2.0"
