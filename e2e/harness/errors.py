"""The errors every guest operation raises (QMP, command channel, console)."""


class GuestError(Exception):
    """A guest operation failed."""


class GuestTimeout(GuestError):
    """A wait ran out of time."""


class GuestDied(GuestError):
    """QEMU exited (guest panic, watchdog, crash) while we were waiting."""
