"""CLI sub-commands, one module each (each exposes a click object named ``command``)."""
