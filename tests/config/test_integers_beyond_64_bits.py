"""Integers beyond 64 bits given through the Python API (issue 32): Python's int-string limit (4,300 digits)
made a 5,000-digit override a ValueError from deep inside; each is now a ConfigError naming the key,
before anything runs (the command line's cases are rows of tests/hostile/test_third_surface.py).

Breaks tried (each failed here, then restored): the API's mapping form written as ``f"{key}={value}"``
instead of through override_text (the first two rows: ValueError "Exceeds the limit"); override_text's
``except ValueError`` removed (the second row); the YAML reader's digit limit (yamlsafe.MAX_INT_DIGITS
check) skipped (the third row: ValueError from PyYAML's int()).
"""

from __future__ import annotations

import pytest

import convtrain
from convtrain.errors import ConfigError


@pytest.mark.parametrize("overrides, key", [
    ({"seed": 10**5000}, "seed"),
    ({"train.epochs": [10**5000]}, "train.epochs"),
    (["seed=" + "7" * 5000], "seed"),
    ({"seed": 2**64}, "seed"),
])
def test_an_api_override_beyond_64_bits_is_a_config_error_naming_the_key(overrides, key, tmp_path):
    with pytest.raises(ConfigError) as info:
        convtrain.train("smoke", overrides=overrides, run_dir=tmp_path / "run", progress=False)
    message = str(info.value)
    assert f"{key}" in message and len(message) < 300 and "\n" not in message, message
    assert not (tmp_path / "run").exists()  # refused before the run directory was made
