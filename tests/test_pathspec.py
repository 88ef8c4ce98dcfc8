"""PathSpec text forms, both directions, and the errors for bad strings."""

from __future__ import annotations

import pytest

from codenn import PathSpecError
from codenn.paths.spec import PaperIndices, PathSpec

BLOCKS = {"alexnet": 7, "mobilenet_v2": 7, "resnet": 6}


@pytest.mark.parametrize(
    "text",
    [
        "alexnet[:1] > mobilenet_v2[1:4] > alexnet[5:]",
        "alexnet[:2] > alexnet[4:]",
        "alexnet[:]",
        "alexnet[:1] > mobilenet_v2[1:3] > resnet[2:4] > alexnet[5:]",
    ],
)
def test_compact_form_round_trips(text: str) -> None:
    spec = PathSpec.parse(text)
    assert str(spec) == text
    assert PathSpec.parse(str(spec)) == spec


def test_whitespace_and_bare_name() -> None:
    assert str(PathSpec.parse(" alexnet [ : 2 ]>alexnet[4 : ] ")) == "alexnet[:2] > alexnet[4:]"
    assert str(PathSpec.parse("alexnet")) == "alexnet[:]"


def test_paper_form_both_ways() -> None:
    cross = PathSpec.parse("alexnet[:1] > mobilenet_v2[1:4] > alexnet[5:]")
    assert cross.indices == PaperIndices(lout=0, lin=5, hin=1, hout=3)
    assert cross.paper_form() == "alexnet/mobilenet_v2: lout=0 hin=1 hout=3 lin=5"
    assert PathSpec.parse(cross.paper_form()) == cross
    skip = PathSpec.from_indices("alexnet", lout=1, lin=4)
    assert str(skip) == "alexnet[:2] > alexnet[4:]"
    assert skip.paper_form() == "alexnet: lout=1 lin=4"
    assert PathSpec.parse("alexnet: lout=1, lin=4") == skip
    assert skip.kind == "skip" and cross.kind == "cross" and PathSpec.parse("alexnet").kind == "original"
    assert cross.hosts == ("mobilenet_v2",)


def test_resolve_normalises_open_ends() -> None:
    spec = PathSpec.parse("alexnet[0:1] > mobilenet_v2[1:7] > alexnet[5:7]").resolve(BLOCKS)
    assert str(spec) == "alexnet[:1] > mobilenet_v2[1:7] > alexnet[5:]"
    assert spec.indices.hout == 6


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty path spec"),
        ("alexnet[:2] >", "segment 2"),
        ("alexnet[:2] > alexnet[4", "segment 2"),
        ("alexnet[3:1] > alexnet[4:]", "is empty"),
        ("alexnet[:2] > mobilenet_v2[1:3]", "must start and end on the local service"),
        ("alexnet[1:3] > alexnet[4:]", "must start at block 0"),
        ("alexnet[-1:2]", "negative"),
        ("alex net[:2]", "segment 1"),
        ("alexnet: lout=1 lin=2", "skip at least one block"),
        ("alexnet: lout=1 foo=3 lin=4", "valid keys: lout, hin, hout, lin"),
        ("alexnet/mobilenet_v2: lout=1 lin=4", "needs hin and hout"),
        ("alexnet: lout=0 hin=1 hout=2 lin=5", "no host service named"),
        ("alexnet/mobilenet_v2: lout=3 hin=1 hout=2 lin=2", "lin > lout"),
    ],
)
def test_bad_strings_raise_pathspec_error(text: str, message: str) -> None:
    with pytest.raises(PathSpecError, match=message):
        PathSpec.parse(text)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("alexnet[:2] > vgg[1:3] > alexnet[4:]", "unknown service 'vgg'; known services: 'alexnet'"),
        ("alexnet[:2] > alexnet[4:9]", "out of range; 'alexnet' has blocks 0..6"),
        ("alexnet[:2] > alexnet[4:6]", "must run to the local service's end"),
        ("alexnet[:4] > alexnet[2:]", "already ran"),
        ("alexnet[:2] > alexnet[2:]", "skips no block"),
        ("alexnet[:1] > mobilenet_v2[8:] > alexnet[3:]", "out of range"),
        ("alexnet[:3] > mobilenet_v2[1:2] > alexnet[1:]", "goes back to block 1"),
    ],
)
def test_specs_that_do_not_fit_the_services(text: str, message: str) -> None:
    with pytest.raises(PathSpecError, match=message):
        PathSpec.parse(text).resolve(BLOCKS)


def test_multi_host_chain_has_no_paper_form() -> None:
    spec = PathSpec.parse("alexnet[:1] > mobilenet_v2[1:3] > resnet[2:4] > alexnet[5:]")
    assert spec.hosts == ("mobilenet_v2", "resnet")
    with pytest.raises(PathSpecError, match="no lout/hin/hout/lin form"):
        spec.paper_form()


def test_one_host_visit_reads_the_cross_shape_once() -> None:
    from codenn.errors import ConfigError, PathShapeError
    from codenn.paths.spec import HostVisit

    spec = PathSpec.parse("alexnet[:1] > mobilenet_v2[1:] > alexnet[5:]")
    assert spec.one_host_visit(BLOCKS, local="alexnet", host="mobilenet_v2") == HostVisit(
        "alexnet", "mobilenet_v2", lout=0, hin=1, hout=6, lin=5)
    with pytest.raises(PathSpecError, match="open-ended; pass 'mobilenet_v2'"):
        spec.one_host_visit()
    for other in ("alexnet[:2] > alexnet[4:]", "alexnet[:1] > mobilenet_v2[1:3] > resnet[2:4] > alexnet[5:]"):
        with pytest.raises(PathShapeError, match="not local > host > local .*one-visit cross path"):
            PathSpec.parse(other).one_host_visit(BLOCKS)
    with pytest.raises(ConfigError, match="for local service 'resnet'"):  # a PathShapeError is a ConfigError too
        spec.one_host_visit(BLOCKS, local="resnet")
    with pytest.raises(PathShapeError, match="visits host 'mobilenet_v2', but the service given is 'resnet'"):
        spec.one_host_visit(BLOCKS, host="resnet")
