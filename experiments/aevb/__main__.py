"""``python -m experiments.aevb [--config=...] [--workdir=...]``."""

from experiments.aevb import main

if __name__ == "__main__":
    main()
