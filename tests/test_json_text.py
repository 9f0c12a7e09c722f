"""The guard's shortcut for JSON bodies (http/guard.py): a body its bytes show to be plain text skips the walk
over every string, and no body that holds a string that is not text, or nests too deep, is ever let through
by it, whatever its encoding."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from labcloud.http.guard import MAX_JSON_DEPTH, json_string_problems, plainly_text

# Text with lone surrogates now and then: what a hostile client can put in a JSON string.
texts = st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=8)
documents = st.recursive(
    st.none() | st.booleans() | st.integers() | texts,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=20,
)


def encodings(document: Any) -> list[bytes]:
    """The bytes a client could send for ``document``: escaped, raw UTF-8, UTF-16 and UTF-32."""
    escaped = json.dumps(document, ensure_ascii=True)
    raw = json.dumps(document, ensure_ascii=False)
    return [
        escaped.encode("ascii"),
        raw.encode("utf-8", "surrogatepass"),
        *(escaped.encode(codec) for codec in ("utf-16-le", "utf-16-be", "utf-32-le")),
        *(raw.encode(codec, "surrogatepass") for codec in ("utf-16-le", "utf-32-be")),
    ]


@settings(max_examples=400, deadline=None)
@given(documents)
def test_a_body_called_plain_text_has_nothing_the_walk_would_refuse(document: Any) -> None:
    for body in encodings(document):
        if plainly_text(body):
            assert json_string_problems(json.loads(body)) == [], body


def test_the_shortcut_takes_ordinary_bodies_and_leaves_the_rest_to_the_walk() -> None:
    heartbeat = json.dumps({"free": {"cpus": 1}, "telemetry": {"load1": 0.2, "status": {"ok": True}}})
    assert plainly_text(heartbeat.encode())
    assert not plainly_text(b'{"name": "\\ud800"}')  # an escaped lone surrogate
    assert not plainly_text('{"name": "\ud800"}'.encode("utf-8", "surrogatepass"))  # an encoded one
    assert not plainly_text('{"name": "\\ud800"}'.encode("utf-16-le"))  # its escape, in UTF-16
    assert not plainly_text('{"name": "caf\u00e9"}'.encode())  # any non-ASCII byte: walked, and fine
    deep = "[" * (MAX_JSON_DEPTH + 2) + "0" + "]" * (MAX_JSON_DEPTH + 2)
    assert not plainly_text(deep.encode())
    assert json_string_problems(json.loads(deep))  # too deep: the walk refuses it
