"""`python -m plyr`: the same as the `plyr` command."""

from plyr.cli import main

main()
