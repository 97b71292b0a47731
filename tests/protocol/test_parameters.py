"""Typed job parameters: declared as ``NAME[?][:TYPE][=DEFAULT]``, bound by the job's signature, and every value a
run is given checked against them before anything is signed."""

from __future__ import annotations

from dataclasses import replace

import pytest

from protocol import ErrorCode, Identity, ProtocolError
from protocol.jobs import JobStatement
from protocol.parameters import JobParameter, ParameterType, check_parameters, parse_spec, resolve
from protocol.plans import PlanError, parse_plan, plan_to_wire

MASTER = Identity.from_seed(b"\x01" * 32)
DEPLOY = (
    parse_spec("release"),
    parse_spec("replicas:integer=2"),
    parse_spec("stage:choice(dev|prod)=dev"),
    parse_spec("token:secret"),
    parse_spec("note?"),
)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("release", JobParameter("release")),
        ("replicas:integer=2", JobParameter("replicas", ParameterType.INTEGER, "2")),
        ("stage:choice(dev|prod)=dev", JobParameter("stage", ParameterType.CHOICE, "dev", ("dev", "prod"))),
        ("token:secret", JobParameter("token", ParameterType.SECRET)),
        ("note?", JobParameter("note", optional=True)),
        ("empty=", JobParameter("empty", default="")),
    ],
)
def test_a_spec_declares_a_parameter(spec: str, expected: JobParameter) -> None:
    assert parse_spec(spec) == expected
    assert JobParameter.from_wire(expected.to_wire()) == expected


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("bad name", "variable name"),
        ("n:float", "type is one of"),
        ("n:choice", "choice(a|b|c)"),
        ("n:string(a|b)", "only it lists choices"),
        ("n:choice(a|b)=c", "is one of a, b"),
        ("n:integer=two", "is an integer"),
        ("n:secret=hunter2", "cannot have a default"),
        ("1st", "variable name"),
    ],
)
def test_a_malformed_spec_is_refused_saying_why(spec: str, says: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_spec(spec)
    assert caught.value.code is ErrorCode.BAD_FIELD and says in caught.value.message


def test_values_are_checked_and_defaults_filled_in() -> None:
    arguments = resolve(DEPLOY, {"release": "42", "replicas": " 3 "}, ["token"])
    assert arguments.values == {"release": "42", "replicas": "3", "stage": "dev"}
    assert arguments.secrets == frozenset({"token"})
    assert resolve(DEPLOY, {"release": "1", "note": "x", "stage": "prod"}, ["token"]).values["note"] == "x"


@pytest.mark.parametrize(
    ("given", "secrets", "says"),
    [
        ({}, ["token"], "parameter release is required"),
        ({"release": "1"}, [], "secret parameter token is required"),
        ({"release": "1", "replicas": "many"}, ["token"], "is an integer"),
        ({"release": "1", "stage": "test"}, ["token"], "is one of dev, prod"),
        ({"release": "1", "colour": "red"}, ["token"], "no parameter 'colour'"),
        ({"release": "1", "token": "hunter2"}, [], "is a secret: give it with --secret"),
        ({}, ["release", "token"], "is not a secret"),
    ],
)
def test_a_wrong_value_is_refused_naming_the_parameter(given: dict[str, str], secrets: list[str], says: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        resolve(DEPLOY, given, secrets)
    assert says in caught.value.message


def test_a_name_declared_twice_or_too_many_parameters_are_refused() -> None:
    with pytest.raises(ProtocolError, match="unique"):
        check_parameters([parse_spec("a"), parse_spec("a=1")])
    with pytest.raises(ProtocolError, match="at most"):
        check_parameters([parse_spec(f"p{i}") for i in range(33)])


def test_parameters_are_bound_by_the_jobs_signature_and_jobs_without_them_sign_as_before() -> None:
    plain = JobStatement(MASTER.id, "", "deploy", 1, "sh", "echo", 1.0).signed(MASTER)
    assert plain.signing_payload().startswith(b"\x98\xaacrc-job-v1")  # unchanged: older statements still verify
    typed = replace(plain, parameters=DEPLOY).signed(MASTER)
    typed.verify(MASTER.public, "deploy")
    assert JobStatement.from_wire(typed.to_wire()) == typed
    for loosened in (DEPLOY[1:], (replace(DEPLOY[0], default="1"), *DEPLOY[1:]), ()):
        with pytest.raises(ProtocolError) as caught:
            replace(typed, parameters=loosened).verify(MASTER.public, "deploy")
        assert caught.value.code is ErrorCode.BAD_SIGNATURE


def test_a_plan_job_step_carries_its_parameter_values_and_only_a_job_step_does() -> None:
    plan = parse_plan({"name": "p", "steps": [{"id": "a", "target": "all", "job": "deploy",
                                                "params": {"release": 42, "stage": "prod"}}]})  # fmt: skip
    assert plan.steps[0].params == {"release": "42", "stage": "prod"}
    assert parse_plan(plan_to_wire(plan)) == plan
    with pytest.raises(PlanError, match="params are for a job step"):
        parse_plan({"name": "p", "steps": [{"id": "a", "target": "all", "command": "x", "params": {"a": "1"}}]})
    with pytest.raises(PlanError, match="params maps"):
        parse_plan({"name": "p", "steps": [{"id": "a", "target": "all", "job": "x", "params": ["a"]}]})
