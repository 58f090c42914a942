"""mole: a peer-to-peer LAN file-sharing node (standard library only)."""

__version__ = "0.1.0"
PROTOCOL_VERSION = 2
