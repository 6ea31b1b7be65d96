"""``python -m services.oc_compat``: the same command as ``kodo oc-compat``."""

from services.oc_compat.cli import oc_compat

if __name__ == "__main__":
    oc_compat(prog_name="python -m services.oc_compat")
