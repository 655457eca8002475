"""``python -m simgen``: the same CLI as the ``simgen`` entry point.

The ``__name__`` guard matters: Dask's local cluster starts worker processes with
``spawn``, which re-imports the main module under another name.
"""

from simgen.cli import main

if __name__ == "__main__":
    main()
