"""The commands other than ``run``: warm, check, status, the demo and the systemd install."""
