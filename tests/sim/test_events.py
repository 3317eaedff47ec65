from mixfleet.sim import events as ev


def test_events_come_out_by_time_then_kind_then_push_order():
    """Equal times pop by kind (completion first), equal kinds in push order."""
    q = ev.EventQueue()
    q.push(5.0, ev.ARRIVAL, 1)
    q.push(5.0, ev.COMPLETE, 2)
    q.push(1.0, ev.ROUND)
    q.push(5.0, ev.ARRIVAL, 3)
    out = [q.pop() for _ in range(4)]
    assert [(t, k, j) for t, k, _, j, _ in out] == [
        (1.0, ev.ROUND, -1), (5.0, ev.COMPLETE, 2), (5.0, ev.ARRIVAL, 1), (5.0, ev.ARRIVAL, 3)]
