"""`mixfleet dashboard` flags: bad ones exit 2 with one message and bind nothing."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from mixfleet.cli import main


@pytest.mark.parametrize(("args", "words"), [
    (["--port", "70000"], ["--port must be in [0, 65535]", "70000", "--port 8600"]),
    (["--port", "-1"], ["--port must be in [0, 65535]", "-1"]),
    (["{missing}"], ["RUNS_DIR", "is not a directory"]),
    (["--fleet", "{missing}"], ["--fleet", "is not a directory"]),
    (["--token", "short"], ["--token VALUE is refused", "ps", "--token-file"]),
    (["--token-file", "{missing}"], ["--token-file", "cannot be opened", "chmod 600"]),
    (["--refresh", "0"], ["--refresh must be in [0.2, 60]", "--refresh 2.0"]),
])
def test_bad_flags_exit_2_with_a_message(args: list[str], words: list[str], tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    """Each bad flag: exit code 2, one message naming the flag, the value and the fix."""
    args = [a.replace("{missing}", str(tmp_path / "nope")) for a in args]
    rc = main(["dashboard", str(tmp_path), *args])
    err = capsys.readouterr().err
    assert rc == 2
    for w in words:
        assert w in err, err
    assert err.count("mixfleet: error:") == 1


def test_a_port_in_use_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A port another program holds: exit 2 and a message with the port and the fix."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        rc = main(["dashboard", str(tmp_path), "--port", str(port)])
    err = capsys.readouterr().err
    assert rc == 2 and f"127.0.0.1:{port}" in err and "--port" in err


def test_a_port_that_is_not_a_number_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    """argparse's own check also ends in exit code 2."""
    with pytest.raises(SystemExit) as e:
        main(["dashboard", "--port", "http"])
    assert e.value.code == 2 and "--port" in capsys.readouterr().err
