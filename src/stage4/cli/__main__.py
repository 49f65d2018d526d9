"""``python -m stage4.cli``: the same as the ``stage4`` console script."""

from stage4.cli.app import main

main()
