"""How the relay paces its passes over the viewers, on a simulated clock (``consumers.Pace``)."""

from __future__ import annotations

from loader.web.consumers import BURST_S, PACE, SENDS_PER_S, Pace


def run(viewers: int, offered: list[float], pass_s: float) -> list[tuple[float, float]]:
    """The relay's pump on a simulated clock: (offered at, pass started at) for each snapshot sent.

    A pass sends the newest snapshot offered by the time it starts (older ones are superseded).
    """
    pace, now, sent, i = Pace(), 0.0, [], 0
    while i < len(offered):
        now = max(now, offered[i])  # woken by the next snapshot, or at once if one came meanwhile
        start = now + max(0.0, pace.delay(now))
        while i < len(offered) and offered[i] <= start:
            i += 1
        sent.append((offered[i - 1], start))
        pace.paid(start, pass_s, viewers)
        now = start + pass_s
    return sent


def ticks(until: float, every: float = 0.1) -> list[float]:
    return [round(k * every, 6) for k in range(int(until / every))]


def test_500_viewers_get_every_update_at_once_even_after_a_stage_change() -> None:
    # 10 updates a second, a stage change (three snapshots within 10 ms) at 1 s; a pass takes 10 ms
    offered = sorted(ticks(10.0) + [1.003, 1.006])
    sent = run(500, offered, 0.010)
    waits = [start - at for at, start in sent]
    assert max(waits) <= 0.010  # at most the pass in progress when it came, never the pace
    assert len(sent) >= len(ticks(10.0))  # superseded only by one arriving during a pass


def test_1500_viewers_keep_to_the_send_rate_on_average() -> None:
    offered = ticks(30.0)
    sent = run(1500, offered, 0.030)
    late = [start for _at, start in sent if start >= 5.0]
    rate = len(late) / (30.0 - 5.0)
    paced = 1 / (0.030 + 1500 / SENDS_PER_S)  # a pass and its rest: 3.6 a second, as before the allowance
    assert paced - 0.2 <= rate <= paced + 0.05
    early = [start for _at, start in sent if start < BURST_S]
    assert len(early) >= 2  # the allowance: the first updates go at once


def test_slow_passes_leave_the_loop_two_thirds_of_the_time() -> None:
    offered = ticks(30.0, every=0.02)  # a snapshot every 20 ms, each pass 50 ms
    pass_s = 0.050
    sent = run(10, offered, pass_s)
    busy = len([s for _at, s in sent if s >= 5.0]) * pass_s
    assert busy / (30.0 - 5.0) <= 1 / (1 + PACE) + 0.02
