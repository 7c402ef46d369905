"""``python -m convtrain`` runs the same command line as the ``convtrain`` script."""

from .cli.app import main

if __name__ == "__main__":
    main()
