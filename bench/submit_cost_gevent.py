"""``python -m bench.submit_cost_gevent``: :mod:`bench.submit_cost` in a gevent-patched
process, the shape of the API's gunicorn workers (patched before anything is imported)."""

from gevent import monkey

monkey.patch_all()

from bench.submit_cost import main  # noqa: E402

if __name__ == "__main__":
    main()
