"""Fuzzing an averaged ensemble's tensor names (``listener.model.ensemble.split_members``):
names come from an untrusted file, so any set of them is members or a named refusal."""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from listener.errors import ModelLoadError
from listener.model.ensemble import MAX_MEMBERS, split_members

FUZZ = settings(settings.get_profile("listener-fuzz"), max_examples=400)
_name = st.one_of(
    st.text(max_size=30),
    st.builds(lambda i, rest: f"members.{i}.{rest}",
              st.one_of(st.integers(-3, 120).map(str),
                        st.sampled_from(["01", "x", "", "1e1", "\u00b9", "\u0663"])),
              st.sampled_from(["conv1.weight", "", "layer1.0.bn1.bias", ".", "members.0.a"])))


@FUZZ
@given(names=st.lists(_name, max_size=12))
@example(names=["members.0.a", "members.1.a", "members.01.a"])
@example(names=["members.0.a", "conv1.weight"])
@example(names=["members.0.a", "members.\u00b9.a"])  # a superscript one: isdigit, not int
def test_names_split_into_members_or_are_refused_by_name(names: list[str]) -> None:
    sd = dict.fromkeys(names)
    try:
        groups = split_members(sd, "f.safetensors")  # type: ignore[arg-type]
    except ModelLoadError as err:
        assert str(err).startswith("f.safetensors: an averaged ensemble")
        return
    if groups is None:
        assert not any(n.startswith("members.") for n in names)
        return
    assert 2 <= len(groups) <= MAX_MEMBERS
    # Every name is one member's, under exactly one spelling of its number.
    assert sum(len(g) for g in groups) == len(set(names))
    assert {f"members.{i}.{k}" for i, g in enumerate(groups) for k in g} == set(names)
