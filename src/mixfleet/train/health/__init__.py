"""A rank's health: what is watched, what is decided, and how faults are injected.

    base.py       HealthCheck (the interface) and StepOutcome (what a check observes)
    checks.py     health checks: observe a step's outcome, return typed actions
    actions.py    the typed actions and apply_actions (the one place they are applied)
    detectors.py  Watchdog (hangs), StepGuard (NaN/spikes), StragglerDetector, ThermalGuard;
                  HealthConfig, the [health] table
    signals.py    ControlSignals: named control values that ride the step's reduction
    faults.py     exact, seeded fault injection at named points of the step; FaultsConfig
"""

__all__: list[str] = []
