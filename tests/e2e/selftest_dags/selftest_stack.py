"""DAG for tests/e2e/test_airflow_stack.py: one run exercises every harness scenario concurrently."""

from __future__ import annotations

import time
from datetime import timedelta

from airflow.providers.standard.operators.bash import BashOperator
from airflow.providers.standard.sensors.time_delta import TimeDeltaSensor, WaitSensor
from airflow.sdk import dag, task


@task(retries=0)
def sleeper(seconds: int = 300, short_try: int = 0, ti=None):
    """Sleep ``seconds`` (1 s steps, printing progress); from try ``short_try`` on, sleep only 2 s."""
    if short_try and ti.try_number >= short_try:
        seconds = 2
    print(f"sleeper start try={ti.try_number} seconds={seconds}", flush=True)
    for i in range(seconds):
        time.sleep(1)
        if i % 10 == 0:
            print(f"sleeper tick {i}", flush=True)
    return {"slept": seconds, "try": ti.try_number}


@task
def produce(ti=None):
    print("produce says hello", flush=True)
    ti.xcom_push(key="tup", value=(1, "a"))
    return {"answer": 42, "items": [1, 2, 3], "try": ti.try_number}


@dag(dag_id="selftest_stack", schedule=None, catchup=False, max_active_tasks=8, tags=["e2e-selftest"])
def selftest_stack():
    sleeper.override(task_id="sleep_markfail")()
    sleeper.override(task_id="sleep_clear")(seconds=300, short_try=2)
    sleeper.override(task_id="sleep_until_stop")()  # still running when the stack is stopped
    produce()
    BashOperator(task_id="templated", bash_command="echo run={{ run_id }} && echo last-line-{{ ti.try_number }}")
    # deferred for an hour (relative to the run's run_after): the test marks it failed
    TimeDeltaSensor(task_id="defer_markfail", delta=timedelta(hours=1), deferrable=True, retries=0)
    # deferred for 60 s from its start, then the triggerer ends it directly (end_from_trigger=True)
    WaitSensor(task_id="defer_restart", time_to_wait=timedelta(seconds=60), deferrable=True, retries=0)


selftest_stack()
