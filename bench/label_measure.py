#!/usr/bin/env python3
"""Run one command and measure it: wall time, peak RSS, CPU time; with a timeout and a memory cap.

    label_measure.py --json OUT.json --log LOG [--timeout S] [--mem-cap-mb M] -- CMD ARGS...

The command's stdout and stderr go to LOG. Peak RSS is the kernel's ru_maxrss of the child (wait4:
the largest resident set of the process, or of any descendant it waited for), cross-checked by
polling /proc/PID/status (VmRSS, VmHWM) of the process and its descendants every 0.2 s (so a
wrapper such as strace does not hide the measured process). The poll also enforces --mem-cap-mb:
a process tree whose resident set passes the cap is killed (SIGKILL) and reported as such, so that a runaway run
hits a cap of our choosing instead of the kernel's OOM killer, which might pick another process on
a shared machine. A run past --timeout gets SIGTERM, then SIGKILL 10 s later (the whole process tree). Every 5 s the RSS is
appended to LOG.rss (seconds, MB), to tell how far a run that failed had got.

OUT.json: cmd, rc (negative: killed by that signal), timed_out, mem_capped, wall_s, user_s, sys_s,
peak_rss_mb (ru_maxrss), peak_rss_polled_mb (max VmHWM seen), mem_cap_mb, timeout_s.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import time


def status_kb(pid, field):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, ValueError):
        pass
    return 0


def tree(pid):
    """pid and its descendants (through /proc/PID/task/TID/children)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            pass
    return out


def signal_all(procs, sig):
    """Signal the descendants first, then the process itself (the ids were read just before)."""
    for p in reversed(procs):
        try:
            os.kill(p, sig)
        except ProcessLookupError:
            pass


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", required=True)
    ap.add_argument("--log", required=True)
    ap.add_argument("--timeout", type=float, default=1200)
    ap.add_argument("--mem-cap-mb", type=float, default=0, help="0: no cap")
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    args = ap.parse_args()
    cmd = args.cmd[1:] if args.cmd and args.cmd[0] == "--" else args.cmd
    if not cmd:
        ap.error("no command")

    log = open(args.log, "w")
    rss_log = open(args.log + ".rss", "w")
    started = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    pid = proc.pid
    timed_out = mem_capped = False
    term_at = None
    hwm_kb = 0
    next_rss = 0.0
    while True:
        wpid, wstatus, rusage = os.wait4(pid, os.WNOHANG)
        if wpid == pid:
            break
        now = time.monotonic() - started
        procs = tree(pid)  # a wrapper (strace) may sit between us and the measured process
        rss = sum(status_kb(p, "VmRSS") for p in procs)
        hwm_kb = max([hwm_kb, rss] + [status_kb(p, "VmHWM") for p in procs])
        if now >= next_rss:
            rss_log.write(f"{now:.1f}\t{rss / 1024:.0f}\n")
            rss_log.flush()
            next_rss += 5
        if args.mem_cap_mb and rss / 1024 > args.mem_cap_mb and not mem_capped:
            mem_capped = True
            signal_all(procs, signal.SIGKILL)
        if now > args.timeout and not timed_out:
            timed_out = True
            term_at = now
            signal_all(procs, signal.SIGTERM)
        if term_at is not None and now > term_at + 10:
            signal_all(procs, signal.SIGKILL)
            term_at = float("inf")
        time.sleep(0.2)
    wall = time.monotonic() - started
    rc = os.waitstatus_to_exitcode(wstatus)
    result = {
        "cmd": cmd,
        "rc": rc,
        "timed_out": timed_out,
        "mem_capped": mem_capped,
        "wall_s": round(wall, 2),
        "user_s": round(rusage.ru_utime, 2),
        "sys_s": round(rusage.ru_stime, 2),
        "peak_rss_mb": round(rusage.ru_maxrss / 1024, 1),
        "peak_rss_polled_mb": round(hwm_kb / 1024, 1),
        "mem_cap_mb": args.mem_cap_mb,
        "timeout_s": args.timeout,
    }
    with open(args.json, "w") as f:
        json.dump(result, f, indent=1)
    sys.exit(0)


if __name__ == "__main__":
    main()
