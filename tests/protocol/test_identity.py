"""Ed25519 identities: fingerprint ids, text forms, signatures, and keeping the private key out of logs."""

from __future__ import annotations

import base64
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.errors import ErrorCode, ProtocolError
from protocol.identity import ID_LENGTH, PRIVATE_KEY_PREFIX, PUBLIC_KEY_PREFIX, Identity, PublicKey, fingerprint
from tests.protocol.support import FUZZ, MASTER, OTHER_MASTER, identity, seed

ID_PATTERN = re.compile(r"[a-z2-7]{20}")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def test_an_id_is_twenty_lower_case_base32_characters() -> None:
    assert ID_LENGTH == 20
    assert ID_PATTERN.fullmatch(MASTER.id)
    assert len(MASTER.id) == 20


def test_an_id_is_stable_for_the_same_key() -> None:
    again = Identity.from_seed(seed("master"))
    assert again.id == MASTER.id
    assert MASTER.id == MASTER.public.id == fingerprint(MASTER.public.raw)
    assert PublicKey(MASTER.public.raw).id == MASTER.id


def test_an_id_does_not_change_between_releases() -> None:
    # Pinned: ids are stored in scenarios and configs, so the fingerprint function must never change.
    zero = Identity.from_seed(bytes(32))
    assert zero.public.to_text() == "ed25519:O2onvM62pC1io6jQKm8Nc2UyFXcd4kOmOsBIoYtZ2ik="
    assert zero.id == fingerprint(zero.public.raw)
    assert len({zero.id, MASTER.id, OTHER_MASTER.id}) == 3


def test_different_keys_have_different_ids() -> None:
    ids = {identity(f"key-{n}").id for n in range(50)}
    assert len(ids) == 50


def test_a_public_key_survives_its_text_form() -> None:
    text = MASTER.public.to_text()
    assert text.startswith(PUBLIC_KEY_PREFIX)
    assert PublicKey.from_text(text) == MASTER.public
    assert PublicKey.from_text(f"  {text}\n") == MASTER.public


def test_a_private_key_survives_its_text_form() -> None:
    text = MASTER.private_text()
    assert text.startswith(PRIVATE_KEY_PREFIX)
    restored = Identity.from_private_text(f"{text}\n")
    assert restored.id == MASTER.id
    assert restored.public == MASTER.public
    assert restored.sign(b"hello") == MASTER.sign(b"hello")  # Ed25519 signatures are deterministic


def test_generate_draws_its_seed_from_the_given_source() -> None:
    requests: list[int] = []

    def source(n: int) -> bytes:
        requests.append(n)
        return seed("master")

    assert Identity.generate(source).id == MASTER.id
    assert requests == [32]


@pytest.mark.parametrize(
    "text",
    [
        "",
        "ed25519:",
        "ed25519",
        "rsa:" + b64(bytes(32)),
        "ED25519:" + b64(bytes(32)),
        "ed25519:not base64!",
        "ed25519:" + b64(bytes(32))[:-1],
        "ed25519:" + b64(bytes(31)),
        "ed25519:" + b64(bytes(33)),
        "ed25519:ümlaut",
        PRIVATE_KEY_PREFIX + b64(bytes(32)),
    ],
)
def test_text_that_is_not_a_public_key_is_a_bad_field(text: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        PublicKey.from_text(text)
    assert caught.value.code is ErrorCode.BAD_FIELD


@pytest.mark.parametrize(
    "text",
    [
        "",
        PRIVATE_KEY_PREFIX,
        PRIVATE_KEY_PREFIX + "***",
        PRIVATE_KEY_PREFIX + b64(bytes(31)),
        PRIVATE_KEY_PREFIX + b64(bytes(64)),
        "ed25519:" + b64(bytes(32)),
        "ed25519-private:ümlaut",
    ],
)
def test_text_that_is_not_a_private_key_is_a_bad_field(text: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        Identity.from_private_text(text)
    assert caught.value.code is ErrorCode.BAD_FIELD


@pytest.mark.parametrize("size", [0, 31, 33, 64])
def test_a_raw_key_or_seed_of_the_wrong_length_is_a_bad_field(size: int) -> None:
    with pytest.raises(ProtocolError) as caught:
        PublicKey(bytes(size))
    assert caught.value.code is ErrorCode.BAD_FIELD
    assert caught.value.details == {"size": size}
    with pytest.raises(ProtocolError) as caught:
        Identity.from_seed(bytes(size))
    assert caught.value.code is ErrorCode.BAD_FIELD


def test_a_signature_verifies_with_the_signers_public_key() -> None:
    MASTER.public.verify(MASTER.sign(b"payload"), b"payload")


@pytest.mark.parametrize(
    ("signature", "data"),
    [
        pytest.param(OTHER_MASTER.sign(b"payload"), b"payload", id="other-signer"),
        pytest.param(MASTER.sign(b"payload"), b"payloaD", id="other-data"),
        pytest.param(MASTER.sign(b"payload")[:-1], b"payload", id="truncated"),
        pytest.param(MASTER.sign(b"payload") + b"\x00", b"payload", id="extended"),
        pytest.param(b"", b"payload", id="empty"),
        pytest.param(bytes(64), b"payload", id="zeros"),
    ],
)
def test_a_wrong_signature_is_a_bad_signature_naming_the_signer(signature: bytes, data: bytes) -> None:
    with pytest.raises(ProtocolError) as caught:
        MASTER.public.verify(signature, data)
    assert caught.value.code is ErrorCode.BAD_SIGNATURE
    assert caught.value.details == {"signer": MASTER.id}


@FUZZ
@given(st.binary(max_size=64), st.integers(min_value=0, max_value=63), st.integers(min_value=0, max_value=7))
def test_flipping_any_bit_of_a_signature_breaks_it(data: bytes, index: int, bit: int) -> None:
    signature = bytearray(MASTER.sign(data))
    signature[index] ^= 1 << bit
    with pytest.raises(ProtocolError) as caught:
        MASTER.public.verify(bytes(signature), data)
    assert caught.value.code is ErrorCode.BAD_SIGNATURE


def test_the_repr_of_an_identity_shows_its_id_but_not_its_key() -> None:
    secret = MASTER.private_text()[len(PRIVATE_KEY_PREFIX) :]
    for shown in (repr(MASTER), str(MASTER), f"{MASTER}", repr([MASTER])):
        assert MASTER.id in shown
        assert secret not in shown
        assert seed("master").hex() not in shown
        assert repr(seed("master")) not in shown


def test_the_only_public_attribute_of_an_identity_is_its_public_key() -> None:
    public = {name: value for name, value in vars(MASTER).items() if not name.startswith("_")}
    assert public == {"public": MASTER.public}
    assert repr(seed("master")) not in repr(MASTER.public)
