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


def test_compact_drops_only_the_named_events_and_keeps_the_order():
    """Compaction drops exactly the events named outdated, counts them as popped, and the
    rest come out in the order they would have without it."""
    pushed = [(float(t % 7), t % 3, t) for t in range(40)]
    a, b = ev.EventQueue(), ev.EventQueue()
    for t, k, j in pushed:
        a.push(t, k, j)
        b.push(t, k, j)
    assert b.compact(lambda e: e[3] % 4 == 0) == 10
    assert len(b) == 30 and b.popped == 10
    full = [a.pop() for _ in range(40)]
    assert [b.pop() for _ in range(30)] == [e for e in full if e[3] % 4]
    assert a.popped == b.popped == 40
