"""Helpers shared by CLI tests (importable because pytest's ``pythonpath`` includes tests/)."""

from click.testing import CliRunner

from simgen.cli import main


def run(*args):
    """Invoke ``simgen ARGS...`` in-process; exceptions other than exits propagate."""
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def assert_one_line_error(res, *fragments):
    """Exit code 2, exactly one non-empty output line starting with ``Error: `` (containing
    every fragment), and no traceback."""
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), res.output
    assert "Traceback" not in res.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]
