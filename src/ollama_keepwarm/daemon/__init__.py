"""The daemon: the keeper's loop, its hosts, systemd, signals, the control socket and views."""
