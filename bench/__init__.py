"""The benchmark harness: Shepherd on the real RabbitMQ and MinIO, against a Celery baseline.

    make bench          # full run: bench/results/<UTC timestamp>.json and .png, docs table
    make bench-quick    # the same JSON with fewer jobs, in under two minutes
    python -m bench --help

See docs/performance.md for what is measured and how.
"""
