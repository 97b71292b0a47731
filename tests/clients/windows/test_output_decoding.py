"""Decoding what PowerShell and native programs print: UTF-8 first, the console's OEM code page as fallback."""

from __future__ import annotations

import sys

import pytest

from clients.windows.powershell import current_oem_codepage, decode_output


def test_utf8_output_is_decoded_as_utf8() -> None:
    text = "grüße, привет, 日本語 🎉\r\n"
    assert decode_output(text.encode("utf-8"), 437) == text


def test_a_leading_utf8_byte_order_mark_is_dropped() -> None:
    assert decode_output(b"\xef\xbb\xbfok", None) == "ok"


@pytest.mark.parametrize(
    ("codepage", "text"),
    [(437, "Größe: 5 ┌─┐"), (850, "Données: Ñandú"), (866, "Привет, мир")],
)
def test_output_that_is_not_utf8_is_decoded_with_the_oem_code_page(codepage: int, text: str) -> None:
    data = text.encode(f"cp{codepage}")
    with pytest.raises(UnicodeDecodeError):
        data.decode("utf-8")
    assert decode_output(data, codepage) == text


def test_without_a_code_page_undecodable_bytes_become_replacement_characters() -> None:
    assert decode_output(b"caf\xe9", None) == "caf\ufffd"


def test_an_unknown_code_page_does_not_raise() -> None:
    assert decode_output(b"caf\xe9", 99999) == "caf\ufffd"


def test_empty_output_is_empty_text() -> None:
    assert decode_output(b"", 437) == ""


@pytest.mark.skipif(sys.platform == "win32", reason="off Windows only")
def test_there_is_no_oem_code_page_off_windows() -> None:
    assert current_oem_codepage() is None


def test_a_results_output_in_the_oem_code_page_is_normalised_to_utf8() -> None:
    from clients.daemon.executor import ExecOutcome, ExecStatus
    from clients.windows.executor import as_utf8

    raw = "Größe ✓".encode(), "Größe".encode("cp850")
    outcome = ExecOutcome(ExecStatus.SUCCEEDED, 0, raw[0], raw[1], False, False, "", 0.1)

    normalised = as_utf8(outcome, 850)

    assert normalised.stdout.decode("utf-8") == "Größe ✓"
    assert normalised.stderr.decode("utf-8") == "Größe"
