"""Schemes: sans-IO senders and receivers that turn frames into datagrams and back (no sockets, no clocks)."""
