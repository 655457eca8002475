import pytest

from simgen.augment.spec import CODES, KEYWORDS, ORDER, Spec, code_ranges, levels_table, parse_spec
from simgen.errors import SpecError


@pytest.mark.parametrize(
    "text, canonical",
    [
        ("FN+GB+RB", "RB+GB+FN"),
        ("GB+FN+RB", "RB+GB+FN"),  # a set: order of writing does not matter
        ("L-FN+H-GB", "H-GB+L-FN"),
        (" l-fn + h-gb ", "H-GB+L-FN"),
        ("none", "none"),
        ("", "none"),
        ("raw", "none"),
        ("all", "DC+islands+RB+GB+RV+FN"),
        ("image", "islands+RB+GB+RV+FN"),
        ("L-all", "L-DC+L-islands+L-RB+L-GB+L-RV+L-FN"),
        ("L-all+H-GB", "L-DC+L-islands+L-RB+H-GB+L-RV+L-FN"),
        ("all+RD", "RD+DC+islands+RB+GB+RV+FN"),
        ("FN@0.04+GB@1:2", "GB@1:2+FN@0.04"),
        ("poisson+s&p+gauss+std", "PN+GN+SP+ST"),
        ("Islands+island", None),
    ],
)
def test_parse_canonical(text, canonical):
    if canonical is None:
        with pytest.raises(SpecError, match="twice"):
            parse_spec(text)
        return
    spec = parse_spec(text)
    assert spec.canonical == canonical
    assert parse_spec(spec.canonical).canonical == canonical  # canonical form round-trips


def test_unknown_code_lists_valid_ones_and_suggests():
    with pytest.raises(SpecError) as err:
        parse_spec("FN+GBB")
    msg = str(err.value)
    assert "'GBB'" in msg and "did you mean 'GB'" in msg
    for code in ORDER:
        assert code in msg
    assert "\n" not in msg


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("FN++GB", "empty term"),
        ("L-ST", "no intensity levels"),
        ("GB+GB", "twice"),
        ("FN@x", "bad value"),
        ("GB@2:1", "bad range"),
        ("L-GB@1", "either a level prefix or a value"),
        ("all@1", "takes no value"),
        ("ST@1", "takes no value"),
        ("none+GB", "cannot be combined"),
        ("PN@0", "must be > 0"),
        ("GB@-1", "must be >= 0"),
    ],
)
def test_spec_errors(text, fragment):
    with pytest.raises(SpecError, match=fragment):
        parse_spec(text)


def test_levels_and_ranges():
    for _code, info in CODES.items():
        for p in info.params:
            lo, hi = p.default
            assert lo <= min(p.low[0], p.high[0]) and hi >= max(p.low[1], p.high[1])
            assert p.low[0] <= p.low[1] and p.high[0] <= p.high[1]
    assert code_ranges("GB", "L") == {"sigma": (0.4, 1.0)}
    assert code_ranges("gb", "H") == {"sigma": (1.0, 2.5)}
    assert code_ranges("GB") == {"sigma": (0.4, 2.5)}
    assert parse_spec("GB@1.5").item("GB").ranges() == {"sigma": (1.5, 1.5)}
    assert parse_spec("L-islands").item("islands").ranges()["count"] == (1, 3)
    with pytest.raises(SpecError):
        code_ranges("XX")
    rows = levels_table()
    assert {r["code"] for r in rows} == set(CODES)


def test_stages_and_keywords():
    spec = parse_spec("all+RD+LR+GN")
    assert [i.code for i in spec.simulation_items] == ["LR", "RD", "DC"]
    assert "GN" in [i.code for i in spec.image_items]
    assert set(KEYWORDS["image"]) <= set(KEYWORDS["all"])
    assert all(CODES[c].stage == "image" for c in KEYWORDS["image"])
    assert spec.without("RD", "LR").codes == ("DC", "islands", "RB", "GB", "RV", "FN", "GN")
    assert isinstance(parse_spec(spec), Spec) and parse_spec(spec) is spec
    d = spec.describe()
    assert d["canonical"] == spec.canonical and d["codes"]["GB"]["ranges"]["sigma"] == [0.4, 2.5]
    tags = [c.tag for c in CODES.values()]
    assert len(set(tags)) == len(tags)
