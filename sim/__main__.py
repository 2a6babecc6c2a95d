"""``python -m sim ARGS`` runs the ``simctl`` command line."""
from sim.cli import main

main()
