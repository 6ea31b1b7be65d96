"""``python -m standins.oc_compat``: the same command as ``kodo oc-compat``."""

from standins.oc_compat.cli import oc_compat

if __name__ == "__main__":
    oc_compat(prog_name="python -m standins.oc_compat")
