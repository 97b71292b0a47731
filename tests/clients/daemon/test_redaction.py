"""The daemon's redaction of secret values from output (clients/daemon/redaction.py): every form of every value
is masked, however the stream is cut into chunks, and overlapping occurrences leave no byte behind."""

from __future__ import annotations

import base64
import itertools
import random
import urllib.parse

import pytest

from clients.daemon.redaction import MASK, Redactor, forms, redact

SECRET = b"s3cr3t/pa ss+w=rd?&"


def streamed(values: list[bytes], data: bytes, cuts: list[int], *, complete: bool = True) -> tuple[bytes, int]:
    redactor = Redactor(values)
    out, previous = b"", 0
    for cut in [*sorted(cuts), len(data)]:
        out += redactor.feed(data[previous:cut])
        previous = cut
    return out + redactor.finish(complete=complete), redactor.count


def test_every_form_of_a_value_is_masked_and_counted() -> None:
    encoded = [
        SECRET,
        base64.b64encode(SECRET),
        base64.b64encode(SECRET).rstrip(b"="),
        base64.urlsafe_b64encode(SECRET),
        base64.urlsafe_b64encode(SECRET).rstrip(b"="),
        urllib.parse.quote(SECRET, safe="").encode(),
        urllib.parse.quote_plus(SECRET).encode(),
    ]
    assert set(encoded) <= forms(SECRET)
    data = b"".join(b"[" + form + b"]\n" for form in encoded)
    out, count = redact([SECRET], data)
    assert out == b"[***]\n" * len(encoded) and count == len(encoded)


def test_output_without_secrets_passes_unchanged_and_nothing_is_held_back_needlessly() -> None:
    redactor = Redactor([SECRET])
    assert redactor.feed(b"hello world\n") == b"hello world\n"
    assert redactor.feed(b"almost s3cr") == b"almost "  # could be the secret's start: held back
    assert redactor.feed(b"een\n") == b"s3creen\n"  # it was not
    assert redactor.finish() == b"" and redactor.count == 0
    assert Redactor([]).feed(b"anything") == b"anything"


def test_a_value_split_across_chunks_at_every_offset_is_masked() -> None:
    data = b"before " + SECRET + b" middle " + base64.b64encode(SECRET) + b" after\n"
    expected, count = redact([SECRET], data)
    assert expected == b"before *** middle *** after\n" and count == 2
    for first, second in itertools.combinations(range(len(data) + 1), 2):
        assert streamed([SECRET], data, [first, second]) == (expected, count)
    assert streamed([SECRET], data, list(range(len(data)))) == (expected, count)  # a byte at a time


def test_overlapping_and_repeated_values_leave_no_byte_behind() -> None:
    values = [b"abcdef", b"defghi", b"xyxy"]
    out, count = redact(values, b"1 abcdefghi 2 xyxyxy 3 abcdef4defghi")
    assert out == b"1 *** 2 *** 3 ***4***" and count == 4
    random.seed(19)
    alphabet = [b"a", b"abc", b"def", b"ghi", b"xy", b"\n", b"abcdef", b"defghi"]
    for _ in range(500):
        data = b"".join(random.choice(alphabet) for _ in range(random.randint(0, 14)))
        whole = redact(values, data)
        for value in values:
            assert value not in whole[0]
        cuts = random.sample(range(len(data) + 1), min(len(data), random.randint(0, 5)))
        assert streamed(values, data, cuts) == whole


def test_a_stream_cut_short_masks_a_held_back_beginning_of_a_value() -> None:
    # The command was killed (or the pipe abandoned) right after printing part of a secret: the rest was lost,
    # so what was held back is masked; a stream that really ended releases it (it was not the secret).
    assert streamed([SECRET], b"ok s3cr3t/p", [5], complete=False) == (b"ok " + MASK, 1)
    assert streamed([SECRET], b"ok s3cr3t/p", [5], complete=True) == (b"ok s3cr3t/p", 0)


@pytest.mark.parametrize("size", [4, 64, 8192])
def test_the_held_back_part_never_exceeds_the_longest_form(size: int) -> None:
    value = bytes(random.Random(size).randrange(1, 256) for _ in range(size))  # never the filler below
    redactor = Redactor([value])
    longest = max(len(form) for form in forms(value))
    fed = b"\x00" * 100 + value[:-1]
    released = redactor.feed(fed)
    assert released.startswith(b"\x00" * 100) and len(fed) - len(released) < longest
    assert redactor.feed(value[-1:] + b"\n") == b"***\n"
