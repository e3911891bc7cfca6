"""The fact script's output: sections split on marker lines."""

from tasks.runtime.facts import parse_sections


def test_parse_sections_splits_on_markers():
    out = "junk\n@@xcatfab:a\n1\n2\n@@xcatfab:b.c\n{\"x\": 1}\n@@xcatfab:end\n"
    f = parse_sections(out)
    assert f.text("a") == "1\n2" and f.json("b.c") == {"x": 1} and "end" in f
