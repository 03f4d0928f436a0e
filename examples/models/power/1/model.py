"""Power: a function of two arguments served as a model (``spread: true``), the Sheepdog
``map_sync(f, args)`` example: ``client.map("power:1", [(2, 10), (3, 2)])`` is
``[1024, 9]``. A negative exponent fails, so that a map's failures can be seen too."""

from __future__ import annotations


def power(base: float, exponent: int) -> float:
    if exponent < 0:
        raise ValueError(f"exponent {exponent} is negative")
    return base**exponent
