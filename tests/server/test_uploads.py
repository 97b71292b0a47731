"""The hub's bookkeeping of file uploads waiting for their orders (``server.uploads``): pure, time passed in."""

from __future__ import annotations

import hashlib

import pytest

from server.uploads import UploadError, Uploads


def test_chunks_in_order_make_an_upload_with_its_size_and_sha256() -> None:
    uploads = Uploads(idle=60)
    uploads.add("u", 0, b"hello ", now=0)
    uploads.add("u", 1, b"world", now=1)
    upload = uploads.get("u", now=2)
    assert upload is not None
    assert upload.chunks == [b"hello ", b"world"] and upload.size == 11 == uploads.size
    assert upload.sha256() == hashlib.sha256(b"hello world").hexdigest()


def test_a_chunk_out_of_order_drops_the_upload() -> None:
    uploads = Uploads()
    uploads.add("u", 0, b"a", now=0)
    with pytest.raises(UploadError, match="out of order"):
        uploads.add("u", 2, b"c", now=0)
    assert uploads.get("u", now=0) is None and uploads.size == 0
    with pytest.raises(UploadError):
        uploads.add("v", 1, b"never started", now=0)
    assert len(uploads) == 0


def test_the_same_content_sent_again_starts_over_and_is_counted_once() -> None:
    uploads = Uploads()
    for _ in range(3):
        uploads.add("u", 0, b"abc", now=0)
        uploads.add("u", 1, b"def", now=0)
    assert uploads.size == 6 and len(uploads) == 1


def test_released_uploads_free_their_bytes() -> None:
    uploads = Uploads()
    uploads.add("u", 0, b"x" * 100, now=0)
    uploads.add("v", 0, b"y" * 10, now=0)
    uploads.release("u")
    uploads.release("u")  # twice: harmless
    assert uploads.size == 10 and uploads.get("u", now=0) is None
    taken = uploads.pop("v")
    assert taken is not None and taken.chunks == [b"y" * 10] and uploads.size == 0


def test_an_upload_unused_for_the_idle_time_expires_and_each_use_restarts_it() -> None:
    uploads = Uploads(idle=100)
    uploads.add("kept", 0, b"k", now=0)
    uploads.add("dropped", 0, b"d", now=0)
    assert uploads.get("kept", now=90) is not None  # a submit naming it (a rolling fan-out's next order)
    assert uploads.expire(now=150) == 1
    assert uploads.get("dropped", now=150) is None and uploads.get("kept", now=150) is not None
    assert uploads.expire(now=260) == 1 and uploads.size == 0
