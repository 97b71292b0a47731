"""Boot reports: the HMAC-signed headers a startup script sends, and every way parsing or verifying refuses one."""

from __future__ import annotations

import contextlib
import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.boot import (
    HEADER_MACHINE,
    HEADER_SIGNATURE,
    HEADER_STATUS,
    HEADER_STEP,
    HEADER_TIME,
    MAX_DETAIL,
    MAX_SKEW,
    SIGNATURE_PREFIX,
    BootReport,
    BootStatus,
    parse_report,
    report_key,
    verify_report,
)
from protocol.errors import ErrorCode, ProtocolError
from tests.protocol.support import DAEMON, FUZZ, NOW, OTHER_DAEMON, identity

KEY = report_key(DAEMON)
HEADERS = (HEADER_MACHINE, HEADER_TIME, HEADER_STEP, HEADER_STATUS, HEADER_SIGNATURE)


def report(**changes: object) -> BootReport:
    base = BootReport(DAEMON.id, int(NOW), "installing-python", BootStatus.RUNNING, b"Collecting aiohttp\n")
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def refused(headers: dict[str, str], body: bytes = b"") -> ProtocolError:
    with pytest.raises(ProtocolError) as caught:
        parse_report(headers, body)
    return caught.value


# round trip
@pytest.mark.parametrize("status", list(BootStatus))
def test_headers_parse_back_to_the_same_report_and_verify(status: BootStatus) -> None:
    sent = report(status=status)
    parsed, signature = parse_report(sent.headers(KEY), sent.detail)
    assert parsed == sent
    assert signature == sent.signature(KEY)
    assert signature.startswith(SIGNATURE_PREFIX)
    verify_report(parsed, signature, KEY, NOW)


def test_an_empty_body_and_a_body_of_exactly_max_detail_are_accepted() -> None:
    for detail in (b"", b"x" * MAX_DETAIL):
        sent = report(detail=detail)
        parsed, signature = parse_report(sent.headers(KEY), detail)
        assert parsed.detail == detail
        verify_report(parsed, signature, KEY, NOW)


def test_header_values_are_stripped_and_the_signature_hex_is_case_insensitive() -> None:
    sent = report()
    headers = {k: f" {v} " for k, v in sent.headers(KEY).items()}
    parsed, signature = parse_report(headers, sent.detail)
    assert parsed == sent
    upper = SIGNATURE_PREFIX + signature.removeprefix(SIGNATURE_PREFIX).upper()
    verify_report(parsed, upper, KEY, NOW)


@pytest.mark.parametrize("step", ["a", "0", "installing-python", "step.2_b-c", "a" * 64])
def test_valid_step_names(step: str) -> None:
    sent = report(step=step)
    parsed, _ = parse_report(sent.headers(KEY), sent.detail)
    assert parsed.step == step


# parse rejections
@pytest.mark.parametrize("header", HEADERS)
def test_a_missing_header_is_bad_field(header: str) -> None:
    headers = report().headers(KEY)
    del headers[header]
    error = refused(headers)
    assert error.code is ErrorCode.BAD_FIELD
    assert header in error.message


@pytest.mark.parametrize("header", HEADERS)
def test_an_empty_header_is_bad_field(header: str) -> None:
    error = refused({**report().headers(KEY), header: ""})
    assert error.code is ErrorCode.BAD_FIELD
    assert header in error.message


@pytest.mark.parametrize("value", ["soon", "1.5", "1700000000.0", "0x10", "1e9", "12 34"])
def test_a_time_that_is_not_whole_seconds_is_bad_field(value: str) -> None:
    error = refused({**report().headers(KEY), HEADER_TIME: value})
    assert error.code is ErrorCode.BAD_FIELD
    assert HEADER_TIME in error.message


@pytest.mark.parametrize(
    "step", ["Installing", "INSTALL", "two words", "a" * 65, "-leading-dash", ".hidden", "slash/step", "ünïcode"]
)
def test_a_bad_step_name_is_bad_field(step: str) -> None:
    error = refused({**report().headers(KEY), HEADER_STEP: step})
    assert error.code is ErrorCode.BAD_FIELD
    assert error.details.get("header") == HEADER_STEP


def test_a_whitespace_only_step_is_bad_field() -> None:
    assert refused({**report().headers(KEY), HEADER_STEP: "   "}).code is ErrorCode.BAD_FIELD


@pytest.mark.parametrize("status", ["done", "OK", "Running", "fail", "success"])
def test_an_unknown_status_is_bad_field(status: str) -> None:
    error = refused({**report().headers(KEY), HEADER_STATUS: status})
    assert error.code is ErrorCode.BAD_FIELD
    assert error.details.get("header") == HEADER_STATUS


@pytest.mark.parametrize("prefix", ["", "sha256=", "hmac-sha1=", "HMAC-SHA256="])
def test_a_signature_without_its_prefix_is_bad_field(prefix: str) -> None:
    sent = report()
    hex_mac = sent.signature(KEY).removeprefix(SIGNATURE_PREFIX)
    error = refused({**sent.headers(KEY), HEADER_SIGNATURE: prefix + hex_mac}, sent.detail)
    assert error.code is ErrorCode.BAD_FIELD
    assert SIGNATURE_PREFIX in error.message


def test_a_body_over_max_detail_is_frame_too_large() -> None:
    sent = report(detail=b"x" * (MAX_DETAIL + 1))
    error = refused(sent.headers(KEY), sent.detail)
    assert error.code is ErrorCode.FRAME_TOO_LARGE


def test_the_size_check_comes_before_the_headers() -> None:
    assert refused({}, b"x" * (MAX_DETAIL + 1)).code is ErrorCode.FRAME_TOO_LARGE


# verification
def _bad_mac(received: BootReport, signature: str, key: bytes = KEY) -> None:
    with pytest.raises(ProtocolError) as caught:
        verify_report(received, signature, key, NOW)
    assert caught.value.code is ErrorCode.BAD_MAC


@pytest.mark.parametrize(
    "field, value",
    [
        ("detail", b"Collecting aiohttp\r"),
        ("detail", b""),
        ("step", "installing-pythom"),
        ("status", BootStatus.OK),
        ("time", int(NOW) + 1),
        ("machine", OTHER_DAEMON.id),
    ],
)
def test_a_report_changed_after_signing_is_bad_mac(field: str, value: object) -> None:
    sent = report()
    headers = sent.headers(KEY)
    tampered = dataclasses.replace(sent, **{field: value})  # type: ignore[arg-type]
    # as the hub would see it: the tampered headers/body with the original signature
    received, signature = parse_report({**tampered.headers(KEY), HEADER_SIGNATURE: headers[HEADER_SIGNATURE]},
                                       tampered.detail)  # fmt: skip
    assert received == tampered
    _bad_mac(received, signature)


def test_a_report_signed_with_another_key_is_bad_mac() -> None:
    sent = report()
    received, signature = parse_report(sent.headers(report_key(OTHER_DAEMON)), sent.detail)
    _bad_mac(received, signature)


def test_a_garbage_or_truncated_signature_is_bad_mac() -> None:
    sent = report()
    good = sent.signature(KEY)
    for signature in (SIGNATURE_PREFIX, SIGNATURE_PREFIX + "zz" * 32, good[:-1], good + "0"):
        _bad_mac(sent, signature)


@pytest.mark.parametrize("offset", [MAX_SKEW + 1, -(MAX_SKEW + 1), 10 * MAX_SKEW, -10 * MAX_SKEW])
def test_a_report_beyond_the_skew_is_stale_either_way(offset: float) -> None:
    sent = report(time=int(NOW + offset))
    with pytest.raises(ProtocolError) as caught:
        verify_report(sent, sent.signature(KEY), KEY, NOW)
    assert caught.value.code is ErrorCode.STALE_TIMESTAMP


@pytest.mark.parametrize("offset", [MAX_SKEW, -MAX_SKEW, 0])
def test_a_report_within_the_skew_is_accepted(offset: float) -> None:
    sent = report(time=int(NOW + offset))
    verify_report(sent, sent.signature(KEY), KEY, NOW)


def test_the_skew_limit_can_be_narrowed() -> None:
    sent = report(time=int(NOW) - 10)
    verify_report(sent, sent.signature(KEY), KEY, NOW, max_skew=10)
    with pytest.raises(ProtocolError) as caught:
        verify_report(sent, sent.signature(KEY), KEY, NOW, max_skew=9)
    assert caught.value.code is ErrorCode.STALE_TIMESTAMP


def test_the_mac_is_checked_before_the_clock() -> None:
    """A forged report learns nothing about the hub's clock: it is BAD_MAC whatever its time."""
    sent = report(time=int(NOW) - 100_000)
    _bad_mac(sent, report().signature(KEY))


# the report key
def test_the_report_key_is_deterministic_per_identity_and_differs_between_identities() -> None:
    assert report_key(DAEMON) == report_key(identity("daemon")) == KEY
    assert len(KEY) == 32
    assert report_key(OTHER_DAEMON) != KEY
    assert len({report_key(identity(f"machine-{i}")) for i in range(20)}) == 20


def test_the_report_key_is_not_the_private_seed_or_another_derived_secret() -> None:
    assert DAEMON.derive(b"something-else") != KEY
    assert KEY.hex() not in DAEMON.private_text()


# fuzz
HEADER_NAMES = st.sampled_from([*HEADERS, "Content-Type", "x-crc-machine"])
HEADER_VALUES = st.one_of(
    st.text(max_size=80),
    st.sampled_from(["", " ", "ok", "running", "failed", "installing", "1700000000", SIGNATURE_PREFIX]),
    st.integers().map(str),
    st.text(alphabet="0123456789abcdef", max_size=64).map(lambda h: SIGNATURE_PREFIX + h),
)


@FUZZ
@given(
    headers=st.dictionaries(HEADER_NAMES, HEADER_VALUES, max_size=8),
    body=st.one_of(st.binary(max_size=256), st.sampled_from([b"x" * MAX_DETAIL, b"x" * (MAX_DETAIL + 1)])),
)
def test_parsing_and_verifying_arbitrary_headers_raise_only_protocol_errors(
    headers: dict[str, str], body: bytes
) -> None:
    try:
        parsed, signature = parse_report(headers, body)
    except ProtocolError:
        return
    with contextlib.suppress(ProtocolError):
        verify_report(parsed, signature, KEY, NOW)


@FUZZ
@given(
    machine=st.text(min_size=1, max_size=40),
    time=st.integers(),
    detail=st.binary(max_size=64),
)
def test_a_report_for_any_claimed_machine_and_time_raises_only_protocol_errors(
    machine: str, time: int, detail: bytes
) -> None:
    headers = {**report().headers(KEY), HEADER_MACHINE: machine, HEADER_TIME: str(time)}
    try:
        parsed, signature = parse_report(headers, detail)
        verify_report(parsed, signature, KEY, NOW)
    except ProtocolError:
        pass


@pytest.mark.parametrize("when", [10**400, -(10**400), 2**63])
def test_a_signed_report_with_an_absurd_time_is_refused_not_a_crash(when: int) -> None:
    sent = report(time=when)
    try:
        parsed, signature = parse_report(sent.headers(KEY), sent.detail)
    except ProtocolError as exc:
        assert exc.code is ErrorCode.BAD_FIELD
        return
    with pytest.raises(ProtocolError) as caught:
        verify_report(parsed, signature, KEY, NOW)
    assert caught.value.code is ErrorCode.STALE_TIMESTAMP
