"""What a run directory says about its run (docs/architecture.md): read by ``mixfleet
report``, the trainer's console and the dashboard.

    timeline.py   the run report (ETTR, restarts, steps lost, time lost by cause), the plot
    times.py      a run's start and its restarts' downtime (the report's and dashboard's rule)
    predicted.py  predicted against measured step time (the ``plan`` event)
    progress.py   the progress bar and one line per notable event
"""
