"""Fuzzing the config loader: any text, and structured YAML built from the known keys."""

from __future__ import annotations

import string

import yaml
from hypothesis import example, given, settings
from hypothesis import strategies as st

from listener.config import Config, parse_config
from listener.errors import ListenerError

FUZZ = settings(settings.get_profile("listener-fuzz"), max_examples=300)

_SECTIONS = {name: list(getattr(field.annotation, "model_fields", {}) or [])
             for name, field in Config.model_fields.items()}
_scalar = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20),
                    st.sampled_from(["auto", "cpu", "cuda", "orcasound", "hls",
                                     "http://127.0.0.1:9/x", "$UNDEFINED_VAR", "~/x", "..",
                                     "2001-02-30", "0x1F", "1_000", ".inf", "layer1",
                                     "a" * 300]))
_value = st.recursive(_scalar, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
    st.text(string.ascii_lowercase + "_", max_size=12), inner, max_size=3), max_leaves=8)


@st.composite
def _config_doc(draw: st.DrawFn) -> dict:
    doc: dict = {}
    if draw(st.booleans()):
        doc["station"] = {"id": draw(st.sampled_from(["x", "rpi_a", ".", "..", ".x", ""])
                                     | st.text(max_size=10))}
    for section in draw(st.lists(st.sampled_from(sorted(_SECTIONS)), max_size=4, unique=True)):
        keys = _SECTIONS[section] or ["weights", "id"]
        body = draw(st.dictionaries(st.sampled_from(keys) | st.text(max_size=8), _value,
                                    max_size=4))
        doc[section] = draw(st.sampled_from([body, [body], None, "text"]))
    return doc


@FUZZ
@given(text=st.text(max_size=200))
@example(text="a: 2001-02-30\n")  # a date YAML reads as one that does not exist
@example(text="station: {id: x}\ndetection: {window_s: 2, hop_s: 1e-300}\n")
@example(text="&a [*a]")
@example(text="station: {id: x}\nmodel:\n  model_id: '" + "x" * 10_000 + "'\n")
def test_any_text_is_a_config_or_a_config_error(text: str) -> None:
    try:
        parse_config(text, "fuzz.yaml")
    except ListenerError as err:
        assert str(err).startswith("fuzz.yaml")


@FUZZ
@given(doc=_config_doc())
@example(doc={"station": {"id": "x"}, "buffer": {"\r": None}})  # a key that ends the line
@example(doc={"station": {"id": "x"}, "stream\u2028": 1})
def test_structured_configs_load_or_name_the_problem(doc: dict) -> None:
    text = yaml.safe_dump(doc, allow_unicode=True)
    try:
        cfg = parse_config(text, "fuzz.yaml")
    except ListenerError as err:
        assert str(err).startswith("fuzz.yaml") and len(str(err).splitlines()) == 1, str(err)
        return
    assert cfg.station.id and not cfg.station.id.startswith(".")
