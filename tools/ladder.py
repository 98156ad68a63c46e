"""A depth ladder as text: asks above (best at the bottom), bids below (best at the top)."""

Level = tuple[int, int, int]  # price, total qty, number of orders


def render_ladder(
    symbol: str, seq: int, bids: list[Level], asks: list[Level], state: str = "continuous"
) -> str:
    """``state``: the book's trading state; a halted book says so (and may be crossed)."""
    lines = [
        f"{symbol} at seq {seq}" + ("" if state == "continuous" else f", {state.upper()}"),
        f"{'orders':>8} {'bid qty':>10} {'price':>12} {'ask qty':>10} {'orders':>8}",
    ]
    for px, qty, n in sorted(asks, reverse=True):
        lines.append(f"{'':>8} {'':>10} {px:>12} {qty:>10} {n:>8}")
    if bids and asks and bids[0][0] >= asks[0][0]:
        lines.append(f"{'':>19} {'crossed':^12}")
    elif bids and asks:
        lines.append(f"{'':>19} {'spread ' + str(asks[0][0] - bids[0][0]):^12}")
    elif not bids and not asks:
        lines.append(f"{'':>19} {'(empty)':^12}")
    for px, qty, n in bids:
        lines.append(f"{n:>8} {qty:>10} {px:>12}")
    return "\n".join(lines)


def ladder_doc(
    symbol: str, seq: int, bids: list[Level], asks: list[Level], state: str = "continuous"
) -> dict:
    return {
        "symbol": symbol,
        "seq": seq,
        "state": state,
        "bids": [list(level) for level in bids],
        "asks": [list(level) for level in asks],
    }
