"""bench.tlsping runs its round trips over real TLS, with either kind of SSL object."""

from __future__ import annotations

import re

import pytest
from bench import instructions, tlsping


@pytest.mark.parametrize(("flags", "kind"), [([], "gateway"), (["--standard"], "standard")])
def test_the_round_trips_complete_over_tls(
    flags: list[str], kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert tlsping.main(["--n", "50", *flags]) == 0
    out = capsys.readouterr().out
    assert re.fullmatch(rf"{kind} SSL objects: [\d.]+ µs per round trip \(50\)\n", out), out


def test_standard_is_only_for_the_tls_count(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        instructions.main(["--standard"])
    assert exited.value.code == 2
    assert "--standard goes with --tls" in capsys.readouterr().err
