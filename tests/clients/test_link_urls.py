import pytest

from clients.link import hub_ws_url


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("http://127.0.0.1:8750", "ws://127.0.0.1:8750/v1/ws"),
        ("https://hub.example:443", "wss://hub.example:443/v1/ws"),
        ("ws://127.0.0.1:8750", "ws://127.0.0.1:8750/v1/ws"),
        ("wss://hub.example/v1/ws", "wss://hub.example/v1/ws"),
        ("http://127.0.0.1:8750/", "ws://127.0.0.1:8750/v1/ws"),
        ("127.0.0.1:8750", "ws://127.0.0.1:8750/v1/ws"),
        ("http://[::1]:8750", "ws://[::1]:8750/v1/ws"),
        ("https://example.org/crc", "wss://example.org/crc/v1/ws"),
    ],
)
def test_every_documented_hub_url_form_maps_to_the_websocket_endpoint(given: str, expected: str) -> None:
    assert hub_ws_url(given) == expected


@pytest.mark.parametrize("bad", ["ftp://hub:21", "http://", "gopher://hub:70"])
def test_a_hub_url_with_another_scheme_is_refused_with_a_clear_message(bad: str) -> None:
    with pytest.raises(ValueError, match="must look like"):
        hub_ws_url(bad)
