"""``python -m genqueue``: the same command line as the ``genqueue`` console script."""

from genqueue.cli import main

if __name__ == "__main__":
    main(prog_name="genqueue")
