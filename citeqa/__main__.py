"""``python -m citeqa`` runs the command-line app."""

from citeqa.cli import main

main()
