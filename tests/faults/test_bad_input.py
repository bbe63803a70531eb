"""Bad input to the manual DAGs is refused before anything reaches Kafka (property-based).

The values come from hypothesis: anything at all, and near misses of valid values (a 32-hex id
with one character off, one too many or too few, upper case, a trailing newline...). Each one must
be refused where a user or the MES can give it: by the DAG's params (what a trigger validates),
by the provider's protocol builders, and by the operators the DAGs' tasks are built from, all
before the hook starts. Each case then reads the request topics from their beginning: they must be empty.
"""

from __future__ import annotations

import re
import string
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException, ParamValidationError
from blockchain_common import gateway_args
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from blockchain_provider import protocol
from blockchain_provider.exceptions import BlockchainError, InvalidIdentifierError
from blockchain_provider.hooks.kafka_blockchain import KafkaBlockchainHook
from blockchain_provider.operators.order import AnswerOrderRequestOperator
from blockchain_provider.operators.partner import AnswerPartnerRequestOperator
from blockchain_provider.operators.requests import GetRequestOperator
from tests.dags.conftest import refused_by_params
from tests.faults.conftest import load_dag, requests_sent
from tests.operator_runs import run_operator, task_context

pytestmark = pytest.mark.broker

HEX32 = re.compile(r"[0-9a-f]{32}")
VALID_ID = "0123456789abcdef" * 2
SETTINGS = settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    derandomize=True,
)

ANSWER = {
    "partner": ("blockchain_partner_answer", protocol.PARTNER_ANSWER, AnswerPartnerRequestOperator),
    "order": ("blockchain_order_answer", protocol.ORDER_ANSWER, AnswerOrderRequestOperator),
}


def valid_id(value: Any) -> bool:
    """The contract (PROTOCOL.md 3.5): exactly 32 lowercase hex characters, nothing around them."""
    return isinstance(value, str) and HEX32.fullmatch(value) is not None


def near_miss_ids() -> st.SearchStrategy[str]:
    """Valid ids with one thing wrong."""
    hex_id = st.text("0123456789abcdef", min_size=32, max_size=32)
    wrong_char = st.sampled_from([*"ABCDEFGgz -_/\\\n\t", "\u0663", "\uff41", "\x00", "\u00e9"])
    return st.one_of(
        st.text("0123456789abcdef", min_size=0, max_size=31),
        st.text("0123456789abcdef", min_size=33, max_size=40),
        st.tuples(hex_id, st.integers(0, 31), wrong_char).map(
            lambda t: t[0][: t[1]] + t[2] + t[0][t[1] + 1 :]
        ),
        st.tuples(hex_id, wrong_char).map(lambda t: t[0] + t[1]),  # trailing character
        st.tuples(hex_id, wrong_char).map(lambda t: t[1] + t[0]),  # leading character
        hex_id.map(str.upper),
        hex_id.map(lambda h: "{{ " + h + " }}"),  # a template the operator must not send unrendered
    ).filter(lambda v: not valid_id(v))


ANY_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)
BAD_IDS = st.one_of(near_miss_ids(), ANY_VALUE).filter(lambda v: not valid_id(v))
DECISIONS = st.one_of(
    st.sampled_from(["accept", "reject"]), ANY_VALUE, st.sampled_from(["Accept", " reject", "yes"])
)


def task_refused_before_kafka(
    task, context, refusal: type[BaseException], match: str | None = None
) -> BaseException:
    """Run *task* as a worker would; it must fail with *refusal* (its message containing *match*)
    before its hook exists (nothing sent)."""
    with pytest.raises(refusal, match=match) as info:
        run_operator(task, context)
    assert "hook" not in vars(task), (
        f"the task made its hook (and may have sent) before refusing: {info.value!r}"
    )
    return info.value


def refused_before_kafka(
    action, refusal: type[Exception] | tuple[type[Exception], ...], match: str
) -> BaseException:
    """Run *action* with a fresh hook; it must raise *refusal* before the hook starts (nothing sent).

    :param refusal: the exception class (or classes) the refusal is.
    :param match: a regular expression its message must contain (the refused input's name).
    """
    hook = KafkaBlockchainHook()
    try:
        with pytest.raises(refusal, match=match) as info:
            action(hook)
        assert hook._reader is None, f"the hook started (and may have sent) before refusing: {info.value!r}"
        return info.value
    finally:
        hook.close()


@pytest.fixture
def quiet_stack(make_stack):
    """Topics and connections, and no gateway: anything sent would stay on a request topic."""
    return make_stack(timeout=1, serve=False)


def assert_nothing_sent(stack) -> None:
    sent = requests_sent(stack)
    assert sent == {name: [] for name in sent}


@pytest.mark.parametrize("kind", ["partner", "order"])
def test_the_answer_dags_refuse_every_invalid_id_and_decision_before_kafka(quiet_stack, kind):
    dag_id, topic, operator = ANSWER[kind]
    dag = load_dag(dag_id)
    answer = (
        KafkaBlockchainHook.answer_partner_request
        if kind == "partner"
        else KafkaBlockchainHook.answer_order_request
    )

    @SETTINGS
    @given(request_id=st.one_of(BAD_IDS, st.just(VALID_ID)), decision=DECISIONS)
    @example(request_id=VALID_ID + "\n", decision="accept")
    @example(request_id=VALID_ID, decision="ACCEPT")
    @example(request_id="g" * 32, decision="accept")
    def check(request_id: Any, decision: Any) -> None:
        good_id, good_decision = valid_id(request_id), decision in ("accept", "reject")
        if good_id and good_decision:
            return  # a valid trigger: not this case's business
        assert refused_by_params(dag, {"request_id": request_id, "decision": decision}), (
            request_id,
            decision,
        )
        if good_id:
            return
        # the provider refuses the id on every path, whatever the decision
        with pytest.raises(BlockchainError):
            protocol.answer_call(topic, request_id, True)
        refused = rf"^Invalid {kind} request id "
        refused_before_kafka(lambda hook: answer(hook, request_id, True), InvalidIdentifierError, refused)
        # the answer DAG's first task, which checks the request before anything is answered
        try:
            check_task = GetRequestOperator(
                kind=kind,
                task_id=f"check_{kind}_request",
                request_id=request_id,
                expected_status="OPEN",
                addressed_to_us=True,
                **gateway_args(),
            )
        except InvalidIdentifierError:
            pass
        else:
            # a template is checked once rendered; unrendered, it is refused at the first step
            task_refused_before_kafka(check_task, task_context(), AirflowFailException, refused)
        try:
            op = operator(task_id="answer", request_id=request_id, decision="accept")
        except BlockchainError:
            return
        # a template is checked once rendered; unrendered, it is refused at the first step
        with pytest.raises(BlockchainError):
            op.first_step({})

    check()
    assert_nothing_sent(quiet_stack)


ID_VALUES = st.one_of(
    st.integers(-5, 10), st.integers(min_value=2**31), ANY_VALUE, st.sampled_from([1.0, 2.5, "1"])
)
STATUS_VALUES = st.one_of(
    st.text(max_size=80), st.sampled_from(["", " ", "\t\n", "x" * 65, "RUNNING"]), ANY_VALUE
)
PROCESS_VALUES = st.one_of(st.text(max_size=220), st.sampled_from(["", "x" * 201, "Stamping"]), ANY_VALUE)


def test_the_production_unit_update_refuses_every_invalid_conf_before_kafka(quiet_stack):
    from include.mes.db import mes_engine
    from include.sample_data import generate_plant

    generate_plant(mes_engine("mes_db"), units=2, weeks=1)
    units = {unit.id for unit in quiet_stack.mes().production_units()}
    dag = load_dag("blockchain_production_unit_update")
    task = dag.get_task("update_unit_record")

    def no_control(text: str) -> bool:
        return not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F or 0xD800 <= ord(c) <= 0xDFFF for c in text)

    @SETTINGS
    @given(unit_id=ID_VALUES, status=STATUS_VALUES, process_name=PROCESS_VALUES)
    @example(unit_id=999, status="RUNNING", process_name="Stamping")  # no such unit
    @example(unit_id=1, status="   ", process_name="Stamping")  # blank status
    @example(unit_id=999.0, status="RUNNING", process_name="Stamping")  # JSON schema calls 999.0 an integer
    def check(unit_id: Any, status: Any, process_name: Any) -> None:
        # JSON Schema calls 1.0 an integer: it is unit 1
        unit = int(unit_id) if isinstance(unit_id, float) and unit_id.is_integer() else unit_id
        valid = (
            isinstance(unit, int)
            and not isinstance(unit, bool)
            and unit in units
            and isinstance(status, str)
            and len(status.strip()) > 0
            and len(status) <= 64
            and no_control(status)
            and isinstance(process_name, str)
            and len(process_name) <= 200
            and no_control(process_name)
        )
        if valid:
            return  # a valid update: not this case's business
        conf = {"production_unit_id": unit_id, "status": status, "process_name": process_name}
        if refused_by_params(dag, conf):
            return
        # accepted by the trigger (a unit that does not exist, a blank status...): the DAG's task
        # fails it at once (no retry) before its first request
        context = task_context(params=conf, run_id="manual__bad_input")
        task_refused_before_kafka(task, context, AirflowFailException)

    check()
    assert_nothing_sent(quiet_stack)


@pytest.mark.airflow_db
def test_a_run_triggered_with_an_invalid_conf_does_not_start(quiet_stack, airflow_db):
    for dag_id, conf in [
        ("blockchain_partner_answer", {"request_id": "not-an-id", "decision": "accept"}),
        ("blockchain_production_unit_update", {"production_unit_id": 0, "status": "", "process_name": 1}),
    ]:
        with pytest.raises(ParamValidationError):
            load_dag(dag_id).test(run_conf=conf)
    assert_nothing_sent(quiet_stack)


def test_a_request_id_with_a_trailing_newline_is_refused(quiet_stack):
    """``^...$`` in Python also matches before a final newline: the id pattern must be anchored
    with ``fullmatch``/``\\Z`` (and the Param given ``maxLength``)."""
    request_id = VALID_ID + "\n"
    assert refused_by_params(
        load_dag("blockchain_partner_answer"), {"request_id": request_id, "decision": "accept"}
    )
    with pytest.raises(BlockchainError):
        protocol.validate_request_id(request_id)
    with pytest.raises(BlockchainError):
        protocol.validate_public_key("02" + "ab" * 32 + "\n")
    assert_nothing_sent(quiet_stack)


def test_the_strategies_reach_the_near_misses():
    """The near-miss strategy does produce what it claims (a guard against a strategy that drifts)."""
    seen: set[str] = set()

    @settings(max_examples=300, derandomize=True, database=None)
    @given(near_miss_ids())
    def collect(value: str) -> None:
        assert not valid_id(value)
        if value.endswith("\n"):
            seen.add("trailing newline")
        if value and value[0] not in string.hexdigits:
            seen.add("leading character")
        if len(value) == 32 and value != value.lower():
            seen.add("upper case")

    collect()
    assert seen == {"trailing newline", "leading character", "upper case"}
