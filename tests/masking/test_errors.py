from __future__ import annotations

from sluice.errors import ConfigError, SluiceError
from sluice.masking.errors import MaskingConfigError, MaskingError


def test_error_tree_and_sqlstate() -> None:
    err = MaskingError("boom")
    assert isinstance(err, SluiceError)
    assert err.sqlstate == "58000"
    assert issubclass(MaskingConfigError, ConfigError)
    assert MaskingConfigError("x").sqlstate == "F0000"
