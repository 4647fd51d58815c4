"""A vendor's classes state their facts at class creation: a missing one fails at import, not at the first run."""

from __future__ import annotations

import importlib
import importlib.util
import re
from pathlib import Path

import pytest

from airflow_provider_cancel.core.hook import ExecutionHook
from airflow_provider_cancel.core.operator import ExecutionOperator
from airflow_provider_cancel.core.sensor import ExecutionSensor
from airflow_provider_cancel.registry import VENDORS


def test_a_hook_missing_facts_or_required_methods_fails_at_class_creation():
    with pytest.raises(TypeError, match=r"NoFacts must define conn_type, .*status_words, status_call\(\), "
                                        r"parse_status\(\), cancel_call\(\), test_call\(\)"):
        class NoFacts(ExecutionHook):
            pass

    with pytest.raises(TypeError, match=r"HalfDone must define status_words, test_call\(\) \(see"):
        class HalfDone(ExecutionHook):
            conn_type = default_conn_name = hook_name = vendor = "x"
            default_host, api_key_header = "https://x.example", "X-Key"

            def status_call(self, execution_id):  # type: ignore[override]
                return None

            def parse_status(self, execution_id, body, call):  # type: ignore[override]
                return None

            def cancel_call(self, execution_id):  # type: ignore[override]
                return None


def test_an_abstract_intermediate_base_is_exempt_and_its_subclasses_are_not():
    class VendorBase(ExecutionHook, abstract=True):
        api_key_header = "X-Key"

    with pytest.raises(TypeError, match="Concrete must define conn_type"):
        class Concrete(VendorBase):
            pass


def test_an_operator_or_sensor_without_hook_class_fails_at_class_creation():
    with pytest.raises(TypeError, match="NoHookOperator must set hook_class"):
        class NoHookOperator(ExecutionOperator):
            pass

    with pytest.raises(TypeError, match="NoHookSensor must set hook_class"):
        class NoHookSensor(ExecutionSensor):
            pass

    class AbstractOperator(ExecutionOperator, abstract=True):  # an intermediate base: no hook yet
        pass


@pytest.mark.parametrize("vendor", VENDORS, ids=lambda v: v.conn_type)
def test_every_vendor_operator_is_generic_over_its_own_hook(vendor):
    module = importlib.import_module(vendor.module)
    hook, operator = getattr(module, vendor.hook), getattr(module, vendor.operator)
    assert operator.hook_class is hook and getattr(module, vendor.sensor).hook_class is hook
    assert [base.__args__ for base in operator.__orig_bases__] == [(hook,)]  # ExecutionOperator[<its hook>]
    spec = importlib.util.find_spec(vendor.module)
    assert spec is not None and spec.origin is not None
    assert not re.search(r"assert isinstance\(hook", Path(spec.origin).read_text())
