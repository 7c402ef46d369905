from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from convtrain.cli.app import app
from convtrain.errors import ConfigError
from convtrain.ops.explain import ARTICLE_INPUT, ARTICLE_KERNEL, explain, parse_matrix, parse_pair

runner = CliRunner()
X = parse_matrix(ARTICLE_INPUT, "input")
K = parse_matrix(ARTICLE_KERNEL, "kernel")


def test_article_default_example():
    ex = explain(X, K, bias=1.0)
    assert ex.output == [[11, 14], [20, 23]]
    first = ex.windows[0]
    assert first.patch == [[1, 2], [4, 5]] and first.products == [[1, 0], [4, 5]]
    assert first.total == 10 and first.value == 11
    assert ex.torch_output == ex.output and ex.agrees
    assert ex.formulas[0].endswith("floor((3 + 2*0 - 1*(2 - 1) - 1) / 1) + 1 = 2")


def test_stride_two_padding_one():
    ex = explain(X, K, bias=1.0, stride=(2, 2), padding=(1, 1))
    assert ex.padded[0] == [0, 0, 0, 0, 0] and ex.padded[1] == [0, 1, 2, 3, 0]
    assert ex.output == [[2, 6], [8, 23]]
    assert [w.total for w in ex.windows] == [1, 5, 7, 22]
    assert ex.agrees


def test_dilation_and_rectangular_input():
    x = parse_matrix("1 2 3 4; 5 6 7 8; 9 10 11 12; 13 14 15 16", "input")
    ex = explain(x, K, bias=0.0, dilation=(2, 2))
    assert ex.windows[0].rows == [0, 2] and ex.windows[0].patch == [[1, 3], [9, 11]]
    assert ex.output == [[21, 24], [33, 36]]
    ex = explain(parse_matrix("1 2 3 4 5; 6 7 8 9 10", "input"), parse_matrix("1 -1", "kernel"), stride=(1, 2))
    assert ex.output == [[-1, -1], [-1, -1]] and ex.agrees


def test_parsers_reject_bad_input():
    with pytest.raises(ConfigError, match="different lengths"):
        parse_matrix("1 2; 3", "kernel")
    with pytest.raises(ConfigError, match="not a row of numbers"):
        parse_matrix("1 a", "input")
    with pytest.raises(ConfigError, match="--stride must be"):
        parse_pair("0", "stride", 1)
    assert parse_pair("1,2", "padding", 0) == (1, 2)
    with pytest.raises(ConfigError, match="kernel spans"):
        explain([[1.0]], K)


def test_conv_command_default_output():
    result = runner.invoke(app, ["conv"])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "not flipped" in out
    assert "1x1 + 2x0 + 4x1 + 5x1 = 10;  + b 1 = 11" in out
    assert "= 2" in out and "agree" in out
    assert "22, not 21" in out  # the article's arithmetic slip is called out


def test_conv_command_json_and_errors():
    result = runner.invoke(app, ["conv", "--input", "1 2 3; 4 5 6; 7 8 9", "--kernel", "1 0; 1 1", "--stride", "2",
                                 "--padding", "1", "--json"])
    assert result.exit_code == 0
    assert json.loads(result.stdout)["output"] == [[2, 6], [8, 23]]
    bad = runner.invoke(app, ["conv", "--kernel", "1 2; 3"])
    assert bad.exit_code == 2 and "different lengths" in bad.stderr
