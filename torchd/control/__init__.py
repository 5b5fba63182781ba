"""The control channel: JSON lines over the daemon's Unix socket."""
