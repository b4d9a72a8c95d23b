"""``python -m jobtrace`` is the ``jobtrace`` command."""

from jobtrace.cli import main

if __name__ == "__main__":
    main()
