"""B3OS: a workflow run (a saved workflow by id, or an inline definition) and its nodes' outputs.

API facts (docs/b3os.md): `Authorization: Bearer <key>`, plus `X-Org-ID` from the connection extra `org_id`
where an endpoint needs an organisation context. Every answer is the envelope {code, data, message, requestId}:
`unwrap` opens it, once, for every call (an error envelope becomes ExecutionApiError with its code and request
id). Run states: running, waiting (paused on a wait node, e.g. a human approval: may last long, not terminal),
success, failure, cancelled. A client-chosen `runId` makes a create idempotent: a duplicate is refused with
400079 "duplicate run ID", which means an earlier attempt of the same create made the run, so it is adopted.
There is no error field on a run: a failure is explained by the nodes whose status is "failure".
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

from airflow_provider_cancel.core.errors import ExecutionApiError, ProviderConfigError
from airflow_provider_cancel.core.hook import CancelOutcome, ExecutionHook, is_template, parse_model, short_repr
from airflow_provider_cancel.core.http import ApiCall, parse_error_body, quote_path_id
from airflow_provider_cancel.core.links import ExecutionLink
from airflow_provider_cancel.core.operator import ExecutionOperator
from airflow_provider_cancel.core.sensor import ExecutionSensor
from airflow_provider_cancel.core.state import ExecutionState, ExecutionStatus, LazyPayload, normalize_status

if TYPE_CHECKING:
    from airflow.sdk import Context

# Every B3OS path this module calls, relative to the base URL (https://api.b3os.org).
RUN_WORKFLOW_PATH = "/v1/workflows/{workflow_id}/run"
RUN_DEFINITION_PATH = "/v1/runs"
RUN_PATH = "/v1/runs/{run_id}"
CANCEL_PATH = "/v1/runs/{run_id}/cancel"
APP_URL = "https://b3os.org"  # the web app; per-run pages are not documented, so links name the workflow

S = ExecutionState
STATUS_WORDS = {
    "running": S.RUNNING,
    "waiting": S.RUNNING,  # paused on a wait node (e.g. a human approval): still in progress
    "success": S.SUCCEEDED,
    "failure": S.FAILED,
    "cancelled": S.CANCELLED,
}
NODE_DONE = ("success", "failure", "skipped")
RUN_ID = re.compile(r"run_\w+", re.ASCII)
WORKFLOW_ID = re.compile(r"wf_\w+", re.ASCII)
ORG_ID = re.compile(r"org_\w+", re.ASCII)
DUPLICATE_RUN_ID = "400079"
DETAIL_LIMIT = 500  # characters of one failed node's result in an exception message


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow", defer_build=True)  # schemas built on first use, not at DAG parse


class Envelope(_Model):
    code: int | str | None = None
    data: Any = None
    message: str | None = None
    requestId: str | None = None


class RunStarted(_Model):
    runId: str


class NodeState(_Model):
    type: str | None = None
    status: str | None = None
    input: Any = None
    result: Any = None
    error: Any = None
    startedAt: str | None = None
    finishedAt: str | None = None


class Run(_Model):
    id: str
    status: str
    workflowId: str | None = None
    workflowVersion: int | None = None
    totalCu: float | None = None
    startedAt: str | None = None
    finishedAt: str | None = None
    executionState: dict[str, NodeState] | None = None


def _success_code(code: int | str | None) -> bool:
    if code is None:
        return True
    try:
        number = int(code)
    except (TypeError, ValueError):
        return str(code).strip().lower() in ("ok", "success")
    return number == 0 or 200 <= number < 300  # the docs show both 200 and 0


def unwrap(body: Any, *, vendor: str, call: ApiCall) -> Any:
    """The `data` of a B3OS envelope. An error envelope, even in an HTTP 200, raises ExecutionApiError."""
    envelope = parse_model(Envelope, body, vendor=vendor, call=call)
    if not _success_code(envelope.code):
        code, message, request_id = parse_error_body(body)
        raise ExecutionApiError(
            vendor=vendor, method=call.method, path=call.path, status_code=200,
            message=message or "error envelope without a message", code=code, request_id=request_id,
        )
    return envelope.data


def is_duplicate_run_id(error: ExecutionApiError) -> bool:
    """B3OS's answer to a runId that already exists (400079; tolerate a 409 or the bare message too)."""
    if error.code == DUPLICATE_RUN_ID:
        return True
    return error.status_code in (400, 409) and "duplicate run" in (error.message or "").lower()


def idempotent_run_id(key: str) -> str:
    """A `run_...` id derived from an idempotency key: the same key always names the same run.
    26 base32 characters (130 bits of a SHA-256), as long as the ids B3OS makes itself."""
    return "run_" + base64.b32encode(hashlib.sha256(key.encode()).digest()).decode().lower()[:26]


def check_workflow_id(value: object, *, where: str = "workflow_id") -> str:
    if not isinstance(value, str) or not WORKFLOW_ID.fullmatch(value) or len(value) > 200:
        raise ProviderConfigError(f"{where} must be a B3OS workflow id like 'wf_abc123', got {short_repr(value)}")
    return value


def validate_definition(definition: object, *, where: str = "definition", skip_templates: bool = False) -> None:
    """What B3OS requires of an inline definition, checked before any request: a "root" node of type "manual",
    and every child a node lists must exist. ``skip_templates`` leaves Jinja values for run time (DAG parse)."""

    def skip(value: object) -> bool:
        return skip_templates and is_template(value)

    if not isinstance(definition, Mapping):
        raise ProviderConfigError(f"{where} must be a mapping with a 'nodes' mapping, got {type(definition).__name__}")
    nodes = definition.get("nodes")
    if not isinstance(nodes, Mapping) or not nodes:
        raise ProviderConfigError(
            f"{where}.nodes must be a non-empty mapping of node id to node, got {short_repr(nodes)}"
        )
    if "root" not in nodes:
        raise ProviderConfigError(
            f'{where} has no "root" node: B3OS starts every run at a node "root" of type "manual" '
            f"(nodes given: {', '.join(map(str, nodes))})"
        )
    for node_id, node in nodes.items():
        if not isinstance(node, Mapping):
            raise ProviderConfigError(f"{where}: node {node_id!r} must be a mapping, got {type(node).__name__}")
        node_type = node.get("type")
        if not skip(node_type) and not (isinstance(node_type, str) and node_type.strip()):
            raise ProviderConfigError(f"{where}: node {node_id!r} needs a 'type', got {short_repr(node_type)}")
        if node_id == "root" and not skip(node_type) and node_type != "manual":
            raise ProviderConfigError(f'{where}: node "root" must have type "manual", got {short_repr(node_type)}')
        children = node.get("children", [])
        if skip(children):
            continue
        if children is None:
            children = []
        if isinstance(children, str) or not isinstance(children, Sequence):
            raise ProviderConfigError(
                f"{where}: node {node_id!r}: children must be a list of node ids, got {short_repr(children)}"
            )
        for child in children:
            if child not in nodes and not skip(child):
                raise ProviderConfigError(
                    f"{where}: node {node_id!r} lists child {short_repr(child)}, which is not a node of the "
                    f"definition (nodes: {', '.join(map(str, nodes))})"
                )


def describe_progress(run: Run) -> str | None:
    """E.g. "3/5 nodes done, totalCu 12.5"; a summary read has no node states, then totalCu alone."""
    parts: list[str] = []
    nodes = run.executionState or {}
    if run.status.strip().lower() == "waiting":
        waiting = [node_id for node_id, node in nodes.items() if (node.status or "").lower() == "waiting"]
        where = f"node {', '.join(waiting)}" if waiting else "a wait node"
        parts.append(f"paused on {where} (e.g. awaiting a human approval)")
    if nodes:
        counts = Counter((node.status or "").lower() for node in nodes.values())
        parts.append(f"{sum(counts[s] for s in NODE_DONE)}/{len(nodes)} nodes done")
        if counts["failure"]:
            parts.append(f"{counts['failure']} failed")
    if run.totalCu is not None:
        parts.append(f"totalCu {run.totalCu:g}")
    return ", ".join(parts) or None


def describe_failure(run: Run) -> str:
    """The failed nodes, by id, with their result or error: a run has no error field of its own."""
    if run.executionState is None:
        return "the run failed (this read carries no node states to say where)"
    failed = [(i, n) for i, n in run.executionState.items() if (n.status or "").lower() == "failure"]
    if not failed:
        return "the run failed, but no node reports status 'failure'"
    return "; ".join(f"node {node_id!r} ({node.type or 'unknown type'}) failed: {_detail(node)}"
                     for node_id, node in failed)


def _detail(node: NodeState) -> str:
    value = node.error if node.error not in (None, "", {}) else node.result
    if value in (None, "", {}):
        return "no result or error recorded"
    text = value if isinstance(value, str) else json.dumps(value, default=str, sort_keys=True)
    return text if len(text) <= DETAIL_LIMIT else text[:DETAIL_LIMIT] + "…"


class B3osHook(ExecutionHook):
    """B3OS API: run workflows, read, cancel. Connection: API key (``b3sk_...``) in the password; optional
    extra ``org_id`` (``org_...``), sent as ``X-Org-ID``."""

    conn_type = "b3os"
    default_conn_name = "b3os_default"
    hook_name = "B3OS"
    vendor = "B3OS"
    default_host = "https://api.b3os.org"
    api_key_header = "Authorization"
    api_key_scheme = "Bearer"
    status_words = STATUS_WORDS
    execution_id_pattern = RUN_ID
    execution_id_example = "run_01jv8k5m2q9x4t7c3b6n0r8w1z"
    idempotent_create = True

    def extra_headers(self, extra: Mapping[str, Any]) -> dict[str, str]:
        org_id = extra.get("org_id")
        if org_id is None or (isinstance(org_id, str) and not org_id.strip()):
            return {}
        if not isinstance(org_id, str) or not ORG_ID.fullmatch(org_id.strip()):
            raise ProviderConfigError(
                f"Connection {self.conn_id!r}: extra org_id must look like 'org_abc123', got {short_repr(org_id)}"
            )
        return {"X-Org-ID": org_id.strip()}

    def call_api(self, call: ApiCall) -> Any:
        """Send one request and return the envelope's `data`."""
        return unwrap(self.client.request(call), vendor=self.vendor, call=call)

    # -- start -----------------------------------------------------------------------------------------
    def run_workflow(
        self,
        workflow_id: str,
        *,
        payload: Mapping[str, Any] | None = None,
        run_id: str | None = None,
        simulate: bool = False,
        dust_test: bool = False,
        version: int | None = None,
    ) -> str:
        """Run a saved workflow; returns the run id. With ``run_id`` the create is idempotent (and retried)."""
        workflow_id = check_workflow_id(workflow_id)
        if simulate and dust_test:
            raise ProviderConfigError("simulate and dust_test are mutually exclusive: B3OS refuses both")
        body: dict[str, Any] = {}
        if payload is not None:
            body["payload"] = dict(payload)
        if run_id is not None:
            body["runId"] = self.validate_execution_id(run_id)
        if simulate:
            body["simulate"] = True
        if dust_test:
            body["dustTest"] = True
        if version is not None:
            body["version"] = version
        path = RUN_WORKFLOW_PATH.format(workflow_id=quote_path_id(workflow_id))
        return self._start(ApiCall("POST", path, "create", json=body, retry_safe=run_id is not None),
                           run_id, workflow_id=workflow_id)

    def run_definition(
        self,
        definition: Mapping[str, Any],
        *,
        payload: Mapping[str, Any] | None = None,
        prop_values: Mapping[str, Any] | None = None,
        run_id: str | None = None,
    ) -> str:
        """Run an inline (ephemeral) definition; returns the run id. Idempotent with ``run_id``."""
        validate_definition(definition)
        body: dict[str, Any] = {"definition": dict(definition)}
        if payload is not None:
            body["payload"] = dict(payload)
        if prop_values is not None:
            body["propValues"] = dict(prop_values)
        if run_id is not None:
            body["runId"] = self.validate_execution_id(run_id)
        return self._start(ApiCall("POST", RUN_DEFINITION_PATH, "create", json=body, retry_safe=run_id is not None),
                           run_id, workflow_id=None)

    def _start(self, call: ApiCall, run_id: str | None, *, workflow_id: str | None) -> str:
        if run_id is not None:
            self.planned(run_id)  # recorded before the create is sent: its answer may never arrive
        try:
            data = self.call_api(call)
        except ExecutionApiError as err:
            if run_id is None or not is_duplicate_run_id(err):
                raise
            return self._adopt(run_id, workflow_id, err)
        started = self.started(parse_model(RunStarted, data, vendor=self.vendor, call=call).runId)
        if run_id is not None and started != run_id:
            self.log.warning("B3OS answered run id %s for requested run id %s; using %s", started, run_id, started)
        return started

    def _adopt(self, run_id: str, workflow_id: str | None, duplicate: ExecutionApiError) -> str:
        """Our run id is taken: an earlier attempt of this very create made the run (its answer was lost).
        Read the run to confirm before using it."""
        try:
            run = self.get_run(run_id, summary=True)
        except ExecutionApiError as err:
            raise ExecutionApiError(
                vendor=self.vendor, method=duplicate.method, path=duplicate.path, status_code=duplicate.status_code,
                code=duplicate.code, request_id=duplicate.request_id,
                message=f"{duplicate.message}, but run {run_id} could not be read to adopt it ({err})",
            ) from err
        if (run.workflowId or "") != (workflow_id or ""):  # an inline definition's run has workflowId ""
            theirs = f"workflow {run.workflowId!r}" if run.workflowId else "an inline definition"
            ours = f"workflow {workflow_id!r}" if workflow_id else "an inline definition"
            raise ExecutionApiError(
                vendor=self.vendor, method=duplicate.method, path=duplicate.path, status_code=duplicate.status_code,
                code=duplicate.code, request_id=duplicate.request_id,
                message=f"run id {run_id} already belongs to a run of {theirs}, not of {ours}: not adopting it",
            )
        self.log.info("B3OS run %s already exists (%s): an earlier attempt of this create made it; using it",
                      run_id, run.status)
        return self.started(run.id)

    # -- read ------------------------------------------------------------------------------------------
    def run_call(self, run_id: str, *, summary: bool, node_ids: Sequence[str] | None = None) -> ApiCall:
        params: dict[str, str] = {}
        if summary:
            params["summary"] = "true"
        if node_ids:
            params["nodeIds"] = ",".join(node_ids)
        return ApiCall("GET", RUN_PATH.format(run_id=quote_path_id(run_id)), "status" if summary else "result",
                       params=params or None)

    def get_run(self, run_id: str, *, summary: bool = False, node_ids: Sequence[str] | None = None) -> Run:
        """The run; in full (node states and outputs) unless ``summary``; ``node_ids`` keeps only those nodes."""
        call = self.run_call(self.validate_execution_id(run_id), summary=summary, node_ids=node_ids)
        return parse_model(Run, self.call_api(call), vendor=self.vendor, call=call)

    def get_status(self, execution_id: str, *, deadline: float | None = None) -> ExecutionStatus:
        status = super().get_status(execution_id, deadline=deadline)
        if status.state is S.FAILED and status.payload.get("executionState") is None:
            # A summary read has no node states: read the run once in full to name the nodes that failed.
            try:
                return self.run_status(execution_id, self.get_run(execution_id, summary=False))
            except ExecutionApiError as err:
                self.log.warning("Could not read the failed nodes of B3OS run %s: %s", execution_id, err)
        return status

    # -- adapter ---------------------------------------------------------------------------------------
    def status_call(self, execution_id: str) -> ApiCall:
        return self.run_call(execution_id, summary=True)

    def parse_status(self, execution_id: str, body: Any, call: ApiCall) -> ExecutionStatus:
        run = parse_model(Run, unwrap(body, vendor=self.vendor, call=call), vendor=self.vendor, call=call)
        return self.run_status(execution_id, run)

    def run_status(self, execution_id: str, run: Run) -> ExecutionStatus:
        state = normalize_status(run.status, self.status_words)
        error = None
        if state is S.UNKNOWN and run.finishedAt:
            # A finished run in a status we do not know can't be trusted as a success.
            state, error = S.FAILED, f"finished in an unrecognised status {run.status!r}"
        elif state is S.FAILED:
            error = describe_failure(run)
        elif state is S.CANCELLED and run.finishedAt:
            error = f"cancelled at {run.finishedAt}"
        return ExecutionStatus(run.id, state, run.status, progress=describe_progress(run), error=error,
                               payload=LazyPayload(run))

    def cancel_call(self, execution_id: str) -> ApiCall:
        return ApiCall("POST", CANCEL_PATH.format(run_id=quote_path_id(execution_id)), "cancel")

    def cancel_outcome(self, body: Any) -> CancelOutcome:
        data = unwrap(body, vendor=self.vendor, call=ApiCall("POST", CANCEL_PATH, "cancel"))
        status = data.get("status") if isinstance(data, Mapping) else None
        if normalize_status(status, self.status_words) in (S.SUCCEEDED, S.FAILED):
            return CancelOutcome.ALREADY_FINISHED
        return CancelOutcome.REQUESTED

    def cancel_error_outcome(self, error: ExecutionApiError) -> CancelOutcome | None:
        # 409: the run is not running/waiting any more; 404: no such run. Also as codes in an HTTP 200 envelope.
        code = error.code if error.status_code == 200 else None
        if code == "409":
            return CancelOutcome.ALREADY_FINISHED
        if code == "404":
            return CancelOutcome.NOT_FOUND
        return super().cancel_error_outcome(error)

    def test_call(self) -> ApiCall:
        # Reading a run that cannot exist: 404 proves the key was accepted, 401/403 that it was not.
        return self.run_call("run_airflow_connection_test", summary=True)

    def execution_url(self, execution_id: str, info: Mapping[str, Any]) -> str | None:
        workflow_id = info.get("workflow_id")
        if isinstance(workflow_id, str) and WORKFLOW_ID.fullmatch(workflow_id):
            return f"{APP_URL}/workflows/{workflow_id}"
        return None  # an inline definition has no page


class B3osWorkflowLink(ExecutionLink):
    name = "B3OS workflow"


class B3osRunWorkflowOperator(ExecutionOperator[B3osHook]):
    """Run a B3OS workflow (a saved workflow by id, or an inline definition), wait for it, return its outputs.

    :param workflow_id: a saved workflow's id, ``wf_...`` (templated). Give this or ``definition``.
    :param definition: an inline workflow definition ``{"nodes": {...}}`` (templated; a mapping or JSON text).
        It must have a node ``"root"`` of type ``"manual"``, and every child a node lists must exist.
    :param payload: trigger data, readable in the workflow as ``{{root.result.key}}`` (templated).
    :param prop_values: values for ``{{$props.key}}`` of an inline definition (templated).
    :param simulate: dry-run a saved workflow on simulation forks (default False). Not with ``dust_test``.
    :param dust_test: a real run of a saved workflow with dust amounts (~$0.01; default False). Not with
        ``simulate``.
    :param version: run this version of a saved workflow (templated; default: B3OS's choice, the draft first).
    :param output_node_ids: return only these nodes' results (templated; list or comma-separated text).

    ``definition`` and ``payload`` are rendered by Airflow's Jinja, and B3OS's own expressions use the same
    braces: write ``{{ '{{root.result.key}}' }}`` (or wrap the text in ``{% raw %}...{% endraw %}``) so that
    Airflow leaves them for B3OS.

    The run is started with a ``runId`` derived from the task instance and try, so a create retried after a
    lost answer never starts a second run. A run in ``waiting`` (e.g. awaiting a human approval) is still in
    progress: the task keeps waiting (mind ``execution_timeout``). Returns
    ``{"run_id", "status", "totalCu", "outputs": {node_id: result}}``; the run id is in XCom under
    ``execution_id`` as soon as the run starts.
    """

    hook_class = B3osHook
    template_fields: Sequence[str] = (
        "conn_id", "workflow_id", "definition", "payload", "prop_values", "version", "output_node_ids",
    )
    template_fields_renderers = {"definition": "json", "payload": "json", "prop_values": "json"}
    operator_extra_links = (B3osWorkflowLink(),)

    def __init__(
        self,
        *,
        workflow_id: str | None = None,
        definition: Mapping[str, Any] | str | None = None,
        payload: Mapping[str, Any] | str | None = None,
        prop_values: Mapping[str, Any] | str | None = None,
        simulate: bool = False,
        dust_test: bool = False,
        version: int | str | None = None,
        output_node_ids: Sequence[str] | str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.workflow_id = workflow_id
        self.definition = definition
        self.payload = payload
        self.prop_values = prop_values
        self.simulate = simulate
        self.dust_test = dust_test
        self.version = version
        self.output_node_ids = output_node_ids
        where = self.task_id
        if (workflow_id is None) == (definition is None):
            raise ProviderConfigError(f"{where}: give exactly one of workflow_id or definition")
        for name, flag in (("simulate", simulate), ("dust_test", dust_test)):
            if not isinstance(flag, bool):
                raise ProviderConfigError(f"{where}: {name} must be True or False, got {short_repr(flag)}")
        if simulate and dust_test:
            raise ProviderConfigError(f"{where}: simulate and dust_test are mutually exclusive")
        if definition is not None and (simulate or dust_test or version is not None):
            raise ProviderConfigError(
                f"{where}: simulate, dust_test and version apply to a saved workflow (workflow_id), "
                "not to an inline definition"
            )
        if workflow_id is not None and prop_values is not None:
            raise ProviderConfigError(f"{where}: prop_values apply to an inline definition, not to a saved workflow")
        if workflow_id is not None and not is_template(workflow_id):
            check_workflow_id(workflow_id, where=f"{where}: workflow_id")
        if definition is not None and not is_template(definition):
            validate_definition(self._as_mapping(definition, "definition"), where=f"{where}: definition",
                                skip_templates=True)
        for name in ("payload", "prop_values"):
            value = getattr(self, name)
            if value is not None and not is_template(value):
                self._as_mapping(value, name)
        if version is not None and not is_template(version):
            self._version_number()
        if output_node_ids is not None and not is_template(output_node_ids):
            self._node_ids()

    # -- argument checks -------------------------------------------------------------------------------
    def _as_mapping(self, value: object, name: str) -> dict[str, Any]:
        """A mapping, or JSON text of an object (what a template renders to without native rendering)."""
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError as err:
                raise ProviderConfigError(f"{self.task_id}: {name} is text but not JSON: {err}") from None
        if not isinstance(value, Mapping):
            raise ProviderConfigError(f"{self.task_id}: {name} must be a mapping, got {type(value).__name__}")
        return dict(value)

    def _version_number(self) -> int:
        value = self.version
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value.strip())
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ProviderConfigError(f"{self.task_id}: version must be a positive integer, got {short_repr(value)}")
        return value

    def _node_ids(self) -> list[str] | None:
        value = self.output_node_ids
        if value is None:
            return None
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",")]
        if isinstance(value, str) or not isinstance(value, Sequence) or not value or not all(
            isinstance(v, str) and v and "," not in v for v in value
        ):
            raise ProviderConfigError(
                f"{self.task_id}: output_node_ids must be a non-empty list of node ids, got {short_repr(value)}"
            )
        return list(value)

    def _optional_mapping(self, name: str) -> dict[str, Any] | None:
        value = getattr(self, name)
        return None if value is None else self._as_mapping(value, name)

    def validate_request(self) -> None:
        where = self.task_id
        if self.workflow_id is not None:
            self.workflow_id = check_workflow_id(self.workflow_id, where=f"{where}: workflow_id")
            self.version = None if self.version is None else self._version_number()
        else:
            definition = self._as_mapping(self.definition, "definition")
            validate_definition(definition, where=f"{where}: definition")
            self.definition = definition
        self.payload = self._optional_mapping("payload")
        self.prop_values = self._optional_mapping("prop_values")
        self.output_node_ids = node_ids = self._node_ids()
        if node_ids and self.workflow_id is None:
            nodes = self._as_mapping(self.definition, "definition")["nodes"]
            if unknown := [n for n in node_ids if n not in nodes]:
                raise ProviderConfigError(
                    f"{where}: output_node_ids {unknown} are not nodes of the definition "
                    f"(nodes: {', '.join(map(str, nodes))})"
                )

    # -- adapter ---------------------------------------------------------------------------------------
    def link_info(self) -> Mapping[str, Any]:
        return {"workflow_id": self.workflow_id} if self.workflow_id is not None else {}

    def start_execution(self, hook: B3osHook, context: Context) -> str:
        run_id = idempotent_run_id(self.idempotency_key(context))
        payload = self._optional_mapping("payload")
        if self.workflow_id is not None:
            return hook.run_workflow(
                self.workflow_id, payload=payload, run_id=run_id, simulate=self.simulate, dust_test=self.dust_test,
                version=None if self.version is None else self._version_number(),
            )
        return hook.run_definition(self._as_mapping(self.definition, "definition"), payload=payload,
                                   prop_values=self._optional_mapping("prop_values"), run_id=run_id)

    def fetch_result(self, hook: B3osHook, status: ExecutionStatus) -> Any:
        node_ids = self._node_ids()
        run = hook.get_run(status.execution_id, summary=False, node_ids=node_ids)
        nodes = run.executionState or {}
        outputs = {node_id: node.result for node_id, node in nodes.items() if not node_ids or node_id in node_ids}
        if node_ids and (missing := [n for n in node_ids if n not in outputs]):
            self.log.warning("B3OS run %s has no state for nodes %s", status.execution_id, missing)
        self.log.info("B3OS run %s used %s CU; returning the results of %d nodes", status.execution_id,
                      run.totalCu, len(outputs))
        return {"run_id": status.execution_id, "status": run.status, "totalCu": run.totalCu, "outputs": outputs}


class B3osRunSensor(ExecutionSensor):
    """Wait for a B3OS run started elsewhere, by its run id (``run_...``). A ``waiting`` run (e.g. awaiting
    approval) is still in progress. Never cancels the run."""

    hook_class = B3osHook
