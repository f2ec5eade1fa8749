"""`benchmarks/migration`'s pure parts: the synthetic entries, the agents' answers and the
report; nothing is timed and no lab is built here (the lab part is tests/lab/test_migrate*)."""

from __future__ import annotations

from benchmarks.migration import (
    Floor,
    Move,
    Results,
    parse_answers,
    section,
    synthetic_entries,
)
from hyperwall.dataplane.conntrack import wire


def test_synthetic_entries_are_distinct_and_survive_the_wire() -> None:
    entries = synthetic_entries("10.30.0.11", 2500)
    assert len({e.key for e in entries}) == 2500
    assert all(str(e.orig.dst) == "10.30.0.11" and e.orig.dport == 5000 for e in entries)
    assert wire.loads(wire.dumps(entries[:10])) == entries[:10]


def test_parse_answers() -> None:
    answers = parse_answers(
        (
            'incoming: {"ok": true}',
            'precopy: {"entries": 3, "sent": 3, "seconds": 0.05}',
            "no agents: nothing to hand over",
        )
    )
    assert answers == {
        "incoming": {"ok": True},
        "precopy": {"entries": 3, "sent": 3, "seconds": 0.05},
    }


def _move(n: int, udp: float, tcp: float | None, error: str | None = None) -> Move:
    answers = {
        "precopy": {"entries": n, "sent": n, "seconds": 0.01},
        "switchover": {"entries": n, "sent": 0, "seconds": 0.01},
    }
    steps = {"precopy": 100.0 + n / 100, "delta": 50.0 + n / 1000}
    return Move(True, n, udp, tcp, error, answers, steps)


def test_report_renders_rows_and_verdicts() -> None:
    sweep = {n: [_move(n, 50.0 + n / 1000, 200.0)] for n in (0, 1000, 10_000, 100_000)}
    r = Results(
        load=1.5,
        with_state=[_move(2, 50.0, 210.0), _move(2, 60.0, None, "[Errno 104] Connection reset")],
        no_state=[Move(False, 0, 55.0, None, "no response in 5 s")],
        baseline=[Move(False, 0, 45.0, 150.0)],
        sweep=sweep,
        floors={100_000: Floor(100_000, 1.5, 3.0, 0.3, 1.7)},
    )
    text = section(r)
    assert text.startswith("## Live migration (benchmarks/migration)")
    assert "| agents, with state | 2 | 1/2 (1 reset) |" in text
    assert "0/1 (broken every time)" in text
    assert "| 100,000 | 1.50 s | 3.00 s | 0.30 s | 1.70 s | 5.00 s |" in text
    assert "0 established connections lost: **NOT MET**" in text
    assert "adds under 50 ms to the switchover: **met**" in text
    assert "hand over in under 2 s: end to end (precopy + switchover delta) **met**" in text
    assert "reset** in 1 moves" in text


def test_the_libvirt_section_renders_downtime_against_the_firewalls_gap() -> None:
    from benchmarks.migration_guests import GuestMove
    from benchmarks.migration_guests import section as guest_section

    series = {
        "agents, with state": [
            GuestMove(True, True, 300.0, 900.0, False, True),
            GuestMove(True, True, 500.0, 1100.0, False, True),
        ],
        "agents, `--no-state` (strict TCP)": [GuestMove(False, True, 400.0, None, True, True)],
        "no agents, `--no-state` (no firewall)": [
            GuestMove(False, False, 350.0, 850.0, False, None, ("x: y",))
        ],
    }
    text = guest_section(series, 1.5)
    assert text.startswith("## Live migration under libvirt")
    assert "| agents, with state | 2 | 2/2 | 400 / 500 ms | 1,000 / 1,100 ms | 600 / 600 ms" in text
    assert "| agents, `--no-state` (strict TCP) | 1 | 0/1 | 400 / 400 ms | - | - | 1/1 |" in text
    assert "| 1/1 | 350 / 350 ms | 850 / 850 ms | 500 / 500 ms | - |" in text
    assert "the firewall adds **+100 ms** to the gap beyond qemu's own downtime" in text
    assert "stream gap 1,000 ms with agents against 850 ms" in text and "- x: y" in text
