"""The system tier: real Debian guests (systemd as PID 1, udevd, journald)
with balloonctl installed from its .deb; see e2e/README.md."""
