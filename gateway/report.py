"""A client's ``PositionReport``: its cash, its kill switch, and per instrument its
position, P&L and open orders, from the gateway's positions and risk state."""

from gateway.positions import Positions
from gateway.protocol import Position, PositionReport
from gateway.risk import Risk


def position_report(
    cid: int, client: int, positions: Positions, risk: Risk, sym: str | None = None
) -> PositionReport:
    """Every instrument the client ever traded or has orders on (only ``sym`` if given)."""
    if sym is not None:
        insts = [risk.index[sym]]
    else:
        active = set(positions.traded(client))
        active.update(risk.index[s] for s in risk.exposed_on(client))
        insts = sorted(active)
    lines = []
    for inst in insts:
        s = positions.standing(client, inst)
        e = risk.exposure(client, s.sym)
        lines.append(
            Position(
                sym=s.sym,
                pos=s.pos,
                cost=s.cost,
                realised=s.realised,
                unrealised=s.unrealised,
                mark=s.mark,
                volume=s.volume,
                open_buy=e.buy,
                open_sell=e.sell,
                orders=e.orders,
            )
        )
    return PositionReport(
        cid=cid,
        cash=risk.limits(client).starting_cash + positions.cash_moved(client),
        killed=client in risk.killed,
        orders=risk.open_orders(client),
        positions=lines,
    )
