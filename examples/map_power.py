"""Sheepdog's ``results = map_sync(f, args)`` in Shepherd's terms: ``power(base, exponent)``
served as a model (examples/models/power), mapped over 1,000 argument pairs, the results
collated in input order.

    make run                                   # in one terminal
    .venv/bin/python examples/map_power.py     # in another (SHEPHERD_URL, SHEPHERD_TOKEN)
"""

from __future__ import annotations

import os

from shepherd_client import Client


def main() -> None:
    pairs = [(base, exponent) for base in range(1, 101) for exponent in range(10)]
    with Client(
        os.environ.get("SHEPHERD_URL", "http://127.0.0.1:5000"),
        token=os.environ.get("SHEPHERD_TOKEN"),
    ) as client:
        results = client.map("power:1", pairs, concurrency=32)
    assert results == [base**exponent for base, exponent in pairs]
    print(f"{len(results)} results, in order; power(7, 3) = {results[pairs.index((7, 3))]}")


if __name__ == "__main__":
    main()
