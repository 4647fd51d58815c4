"""What differs between the Airflow 3 lines this provider runs on (3.0 to 3.4), in one place.

Names that only some lines have come from ``apache-airflow-providers-common-compat`` (``.sdk``,
``.module_loading``, ``.connection``), as in the official providers. What remains here are facts about the
running Airflow that change what the provider does:

* trigger ``on_kill`` exists from 3.3.0 (apache/airflow#65590); before, a user kill of a deferred task reaches the
  trigger only as a ``CancelledError`` (the legacy path, which reads the task's state);
* how long ``on_kill`` has before SIGKILL: 5 s after SIGTERM up to 3.3 (``WatchedSubprocess.kill``'s hard-coded
  ``escalation_delay``), ``[core] killed_task_cleanup_time`` from 3.4 for a kill the server asked for
  (mark failed/success, clear: task-sdk 1.4 ``supervisor.py`` ``_send_heartbeat_if_needed``);
* SIGTERM to the worker (the supervisor): forwarded to the task, which runs ``on_kill``, on 3.3
  (``ActivitySubprocess._forward_signal``); ignored from 3.4 ("warm shutdown", apache/airflow#69034: the task
  keeps running, nothing is killed, nothing is cancelled). Before 3.3 the supervisor did not forward it either.
"""

from __future__ import annotations


def _airflow_version() -> tuple[int, int, int]:
    from airflow import __version__
    from packaging.version import Version

    version = Version(__version__)  # 3.4.0b2 counts as 3.4.0: a beta has its line's behaviour
    return version.major, version.minor, version.micro


AIRFLOW_VERSION = _airflow_version()
AIRFLOW_V_3_1_PLUS = AIRFLOW_VERSION >= (3, 1, 0)
AIRFLOW_V_3_2_PLUS = AIRFLOW_VERSION >= (3, 2, 0)
AIRFLOW_V_3_3_PLUS = AIRFLOW_VERSION >= (3, 3, 0)
AIRFLOW_V_3_4_PLUS = AIRFLOW_VERSION >= (3, 4, 0)

TRIGGER_ON_KILL = AIRFLOW_V_3_3_PLUS
SIGTERM_TO_WORKER_KILLS_TASK = AIRFLOW_V_3_3_PLUS and not AIRFLOW_V_3_4_PLUS

# SIGTERM -> SIGKILL up to 3.3, and on 3.4 for the kills the server did not ask for (failed heartbeats, success
# overtime): the last attempt must have started early enough to be read before SIGKILL.
ESCALATION_DELAY = 5.0
KILL_MARGIN = 1.5
# On 3.4 the window is [core] killed_task_cleanup_time (60 s by default). A killed task should still end soon:
# on_kill spends no longer than the trigger's own cancel does (core/trigger.py CANCEL_RETRY).
MAX_KILL_BUDGET = 17.0
MIN_KILL_BUDGET = 0.5  # a cleanup time set below the margin still gets its one attempt


def kill_budget_seconds() -> float:
    """Seconds ``on_kill`` may spend on its cancel, retries included, before SIGKILL can cut it off.

    3.5 s where SIGKILL follows 5 s after SIGTERM (Airflow 3.0 to 3.3). On 3.4 a kill the server asked for
    waits ``[core] killed_task_cleanup_time`` before SIGKILL: the budget grows with it, up to 17 s. A kill of
    3.4 that still escalates after 5 s (failed heartbeats) cuts the later attempts off, not the first ones: the
    back-offs stay the same, only the last attempt comes later.
    """
    if not AIRFLOW_V_3_4_PLUS:
        return ESCALATION_DELAY - KILL_MARGIN
    from airflow.providers.common.compat.sdk import conf

    try:
        grace = conf.getfloat("core", "killed_task_cleanup_time", fallback=60.0)
    except Exception:  # not a number (AirflowConfigException): Airflow's own default, as its supervisor fails anyway
        grace = 60.0
    return max(MIN_KILL_BUDGET, min(MAX_KILL_BUDGET, grace - KILL_MARGIN))
