"""The benchmark harness: Shepherd on the real RabbitMQ and MinIO, side by side with its peers
(Celery, Celery with Shepherd's guarantees, Dramatiq) on the same servers.

    make bench          # full run: bench/results/<UTC timestamp>.json and .png, docs table
    make bench-quick    # the same JSON with fewer jobs
    python -m bench --help

See docs/performance.md for what is measured and how.
"""
