"""``python -m dreamstream`` = the ``dreamstream`` console script."""
from dreamstream.cli import main

main()
