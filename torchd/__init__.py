"""torchd: a second-level cron daemon for fleets of hosts."""

__version__ = "0.1.0"
