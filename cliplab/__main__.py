"""``python -m cliplab``: the ``cliplab`` command."""
from cliplab.cli import main

if __name__ == "__main__":
    main()
