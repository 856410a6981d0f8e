#!/usr/bin/env python3
"""Tables for the media-relay benchmark from relay-loadgen's JSON lines (bench/relay/run.sh).

  summarize.py results.jsonl [relay-stats.jsonl]

Every line of results.jsonl is one step of one sweep; its "label" is "<relay> <carrier> <round>".
Per (relay, carrier, calls) the table gives the median over rounds of each figure; per (relay,
carrier) the largest call count with no loss at it and at every smaller count (lost = 0: every packet sent in the window
arrived by the end of the drain) and the smallest with loss, each the median over rounds, over
all steps, disturbed or not (their count is given beside).
"""

import json
import os
import statistics
import sys
from collections import defaultdict

ORDER = ["direct", "bare", "bare-single", "rtpengine"]
RELAY_CPU = int(os.environ.get("RELAY_BENCH_RELAY_CPU", "0"))
LOADGEN_CPU = int(os.environ.get("RELAY_BENCH_LOADGEN_CPU", "1"))


QUIET = float(os.environ.get("RELAY_BENCH_QUIET_PCT", "10"))


def other_load(step):
    """(relay core, load generator core): the share of each core charged to tasks other than
    the relay and the load generator over the window (other work on the machine), in %."""
    task = step.get("cpu_task_pct")
    if not task:
        return (None, None)
    own_relay = step.get("relay_cpu_pct") or 0.0
    own_lg = step.get("loadgen_cpu_pct") or 0.0
    r = max(0.0, task[RELAY_CPU] - own_relay) if RELAY_CPU < len(task) else None
    g = max(0.0, task[LOADGEN_CPU] - own_lg) if LOADGEN_CPU < len(task) else None
    return (r, g)


def quiet(step):
    r, g = other_load(step)
    return (r is None or r < QUIET) and (g is None or g < QUIET)


def relay_key(name):
    return (ORDER.index(name) if name in ORDER else len(ORDER), name)


def med(values):
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    return statistics.median(vals)


def fmt(v, digits=0):
    if v is None:
        return "-"
    if digits == 0:
        return "%d" % round(v)
    return "%.*f" % (digits, v)


def main():
    if len(sys.argv) < 2:
        sys.stderr.write(__doc__)
        return 2
    rows = defaultdict(list)  # (relay, carrier, calls) -> [step]
    rounds = defaultdict(lambda: defaultdict(list))  # (relay, carrier) -> round -> [step]
    with open(sys.argv[1]) as f:
        for line in f:
            line = line.strip()
            if not line.startswith("{"):
                continue
            r = json.loads(line)
            relay, carrier, rnd = (r.get("label", "") + " ? ? ?").split()[:3]
            rows[(relay, carrier, r["streams"])].append(r)
            rounds[(relay, carrier)][rnd].append(r)
    if not rows:
        print("no results")
        return 1
    any_step = next(iter(rows.values()))[0]
    pps = any_step.get("pps_per_stream") or 50
    print("One \"call\" = one stream of %s SRTP packets/s (%s, %d-byte packets) through the relay."
          % (pps, any_step.get("suite"), any_step.get("packet_bytes", 0)))
    print("Figures are medians over rounds; 'saturated' marks steps where the load generator could not"
          " keep to its schedule. 'other load' is the share of the relay's core (CPU %d) and of the load"
          " generator's core (CPU %d) taken by other processes; steps where either was %g%% or more are"
          " 'disturbed', and when a row has undisturbed rounds only those are used." % (RELAY_CPU, LOADGEN_CPU, QUIET))
    print()
    print("| relay | carrier | calls | offered pps | delivered pps | loss % | abandoned | min stream delivery"
          " | p50 us | p99 us | max us | relay CPU % | relay sock drops | loadgen busy % | other load % (relay/loadgen core) | rounds | note |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for key in sorted(rows, key=lambda k: (k[1], relay_key(k[0]), k[2])):
        relay, carrier, calls = key
        all_steps = rows[key]
        steps = [s for s in all_steps if quiet(s)] or all_steps
        disturbed = sum(1 for s in all_steps if not quiet(s))
        lat = [s["latency_us"] for s in steps]
        sat = sum(1 for s in steps if s.get("loadgen_saturated"))
        verify_failed = sum(s.get("verify", {}).get("failed", 0) for s in steps)
        notes = []
        if disturbed:
            notes.append("disturbed %d/%d%s" % (disturbed, len(all_steps), "" if len(steps) < len(all_steps) else " (all used)"))
        if sat:
            notes.append("saturated %d/%d" % (sat, len(steps)))
        if verify_failed:
            notes.append("SRTP tag failures %d" % verify_failed)
        o_relay = med(other_load(s)[0] for s in steps)
        o_lg = med(other_load(s)[1] for s in steps)
        print("| %s | %s | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s/%s | %d | %s |" % (
            relay, carrier, calls,
            fmt(med(s["offered_pps"] for s in steps)),
            fmt(med(s["delivered_pps"] for s in steps)),
            fmt(med(s["loss_pct"] for s in steps), 3),
            fmt(med(s["abandoned"] for s in steps)),
            fmt(med(s["min_stream_delivery"] for s in steps), 3),
            fmt(med(l["p50"] for l in lat)),
            fmt(med(l["p99"] for l in lat)),
            fmt(med(l["max"] for l in lat)),
            fmt(med(s.get("relay_cpu_pct") for s in steps), 1),
            fmt(med(s["kernel_drops"]["other_sockets"] for s in steps)),
            fmt(med(s.get("loadgen_busy_pct") for s in steps), 1),
            fmt(o_relay), fmt(o_lg),
            len(steps), ", ".join(notes)))
    print()
    print("| relay | carrier | largest call count with no loss (and none below) | its delivered pps | its p99 us | smallest call count with loss | rounds | disturbed steps | saturated steps |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for (relay, carrier) in sorted(rounds, key=lambda k: (k[1], relay_key(k[0]))):
        clean, first_loss, clean_pps, clean_p99 = [], [], [], []
        for rnd, steps in rounds[(relay, carrier)].items():
            # The largest call count that, and every smaller one of the sweep, had no loss.
            best = None
            for st in sorted(steps, key=lambda s: s["streams"]):
                if st["lost"] > 0 or st["sent"] == 0:
                    break
                best = st
            bad = [s for s in steps if s["lost"] > 0]
            clean.append(best["streams"] if best else 0)
            clean_pps.append(best["delivered_pps"] if best else None)
            clean_p99.append(best["latency_us"]["p99"] if best else None)
            first_loss.append(min(s["streams"] for s in bad) if bad else None)
        fl = med(first_loss)
        every = [s for st in rounds[(relay, carrier)].values() for s in st]
        print("| %s | %s | %s | %s | %s | %s | %d | %d/%d | %d/%d |" % (
            relay, carrier, fmt(med(clean)), fmt(med(clean_pps)), fmt(med(clean_p99)),
            fmt(fl) if fl is not None else "none up to %d" % max(s["streams"] for st in rounds[(relay, carrier)].values() for s in st),
            len(rounds[(relay, carrier)]),
            sum(1 for s in every if not quiet(s)), len(every),
            sum(1 for s in every if s.get("loadgen_saturated")), len(every)))
    if len(sys.argv) > 2:
        print()
        print("Relay-side counters (at SIGTERM):")
        with open(sys.argv[2]) as f:
            for line in f:
                if line.strip():
                    print("    " + line.strip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
