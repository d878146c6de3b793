"""Every kind of malformed record gets its own reason, in both codecs and for every event kind."""

import pytest

from factories import T0
from lead_inputs import FAULTS, expected_reason, lead_events, malformed
from nurture.streams.codecs import MAX_PAYLOAD_BYTES, DecodeError, decode_event, encode_event

NOW = T0 + 1000
KINDS = ("click", "open", "form")


@pytest.mark.parametrize("codec", ["json", "avro"])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("fault", FAULTS)
def test_fault_kind_gets_its_reason(fault: str, kind: str, codec: str) -> None:
    for serial in range(0, 400, 7):  # varies cut points, bad byte sequences and sizes
        key, value = malformed(fault, kind, codec, "lead-1", T0, serial)
        if key is None:
            continue  # a record without a key never reaches the codec
        with pytest.raises(DecodeError) as caught:
            decode_event(kind, codec, value, key, now_ms=NOW)

        assert caught.value.reason == expected_reason(fault, codec), (serial, str(caught.value))


@pytest.mark.parametrize("codec", ["json", "avro"])
def test_every_cut_of_a_payload_is_truncated(codec: str) -> None:
    expected = expected_reason("truncated", codec)
    for event in lead_events("lead-1", T0, "Żaneta 👩‍💻"):
        payload = encode_event(event, codec)
        for end in range(1, len(payload)):
            with pytest.raises(DecodeError) as caught:
                decode_event(event.kind, codec, payload[:end], b"lead-1", now_ms=NOW)
            assert caught.value.reason == expected, (event.kind, end)


@pytest.mark.parametrize("codec", ["json", "avro"])
def test_other_codec_is_wrong_codec(codec: str) -> None:
    other = "avro" if codec == "json" else "json"
    event = lead_events("lead-1", T0, "Ola")[0]

    with pytest.raises(DecodeError) as caught:
        decode_event("form", codec, encode_event(event, other), b"lead-1", now_ms=NOW)

    assert caught.value.reason == "wrong_codec"
    assert f"codec is {codec}" in str(caught.value)


def test_payload_over_the_limit() -> None:
    with pytest.raises(DecodeError) as caught:
        decode_event("click", "json", b"{" + b" " * MAX_PAYLOAD_BYTES + b"}", b"lead-1", now_ms=NOW)

    assert caught.value.reason == "payload_too_large"


@pytest.mark.parametrize("codec", ["json", "avro"])
def test_text_in_many_scripts_decodes_unchanged(codec: str) -> None:
    name = "Noe\u0308 Łucja 👩‍💻 Σοφία محمد 𠮷 🇵🇱"
    for event in lead_events("lead-1", T0, name):
        decoded = decode_event(event.kind, codec, encode_event(event, codec), b"lead-1", now_ms=NOW)
        assert decoded == event
    form = decode_event("form", codec, encode_event(lead_events("lead-1", T0, name)[0], codec), b"lead-1",
                        now_ms=NOW)
    assert form.attrs["fields"]["first_name"].encode("utf-8") == name.encode("utf-8")
