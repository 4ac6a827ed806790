"""The seed's entry point: ``uv run python src/worker.py`` with ``WORKER_TYPE`` set."""

from trainyard_worker.main import main

if __name__ == "__main__":
    raise SystemExit(main())
