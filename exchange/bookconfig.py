"""The static parameters of one instrument's book."""

import msgspec


class BookConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Prices are integer price units, quantities integer quantity units.

    Valid prices are multiples of ``tick_size`` inside ``[min_price, max_price]``
    (both multiples of the tick); valid quantities are positive multiples of
    ``lot_size`` up to ``max_qty``. ``capacity`` is the number of orders that can
    rest at once.
    """

    min_price: int = 1
    max_price: int = 100_000
    tick_size: int = 1
    lot_size: int = 1
    max_qty: int = 1_000_000
    capacity: int = 1 << 16

    def __post_init__(self) -> None:
        problems = []
        if self.tick_size <= 0:
            problems.append(f"tick_size must be > 0, got {self.tick_size}")
        if self.lot_size <= 0:
            problems.append(f"lot_size must be > 0, got {self.lot_size}")
        if self.min_price <= 0:
            problems.append(f"min_price must be > 0, got {self.min_price}")
        if self.max_price < self.min_price:
            problems.append(f"max_price {self.max_price} is below min_price {self.min_price}")
        if self.tick_size > 0 and (
            self.min_price % self.tick_size or self.max_price % self.tick_size
        ):
            problems.append("min_price and max_price must be multiples of tick_size")
        if self.max_qty <= 0:
            problems.append(f"max_qty must be > 0, got {self.max_qty}")
        if not 1 <= self.capacity <= 1 << 26:
            problems.append(f"capacity must be in [1, 2**26], got {self.capacity}")
        if self.tick_size > 0 and self.levels > 1 << 24:
            problems.append(f"the price band holds {self.levels} ticks; at most 2**24 are allowed")
        if problems:
            raise ValueError("invalid book config: " + "; ".join(problems))

    @property
    def levels(self) -> int:
        """Number of price levels (ticks) in the band, per side."""
        return (self.max_price - self.min_price) // self.tick_size + 1
