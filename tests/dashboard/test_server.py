"""The server: loopback by default, the token on every request, read-only, bad files
reported on the page, and nothing written into run directories."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.dashboard.conftest import (
    CliServer,
    ThreadServer,
    get,
    get_json,
    make_synthetic_run,
)

MakeServer = Callable[..., ThreadServer]

TOKEN = "t0ken-for-tests-0123456789"


def _listening(port: int) -> list[str]:
    """Local addresses listening on ``port``, from `ss -ltn` (else /proc/net/tcp*)."""
    if shutil.which("ss"):
        out = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True,
                             text=True, check=True).stdout
        return [line.split()[3].rsplit(":", 1)[0] for line in out.splitlines() if line]
    addrs = []
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(name).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            ip, p = local.split(":")
            if state == "0A" and int(p, 16) == port:
                addrs.append(ip)
    return ["127.0.0.1" if a == "0100007F" else a for a in addrs]


def test_listens_on_loopback_only_by_default(cli_server: CliServer) -> None:
    """Started without --host, the dashboard listens on 127.0.0.1 and nowhere else."""
    assert _listening(cli_server.port) == ["127.0.0.1"]


def test_a_token_is_required_on_every_request(thread_server: MakeServer, site: Path) -> None:
    """With a token: no token or a wrong one gets 401 on every endpoint; the right one
    (header, or ?token= which sets a cookie) gets 200."""
    srv = thread_server(runs=(site,), token=TOKEN)
    for path in ("/", "/api/runs", "/api/chips", "/api/info", "/static/app.js"):
        assert get(srv.base + path)[0] == 401
        assert get(srv.base + path, {"Authorization": "Bearer wrong-token-000000000"})[0] == 401
        assert get(srv.base + path, {"Authorization": f"Bearer {TOKEN}"})[0] == 200
    status, headers, _ = get(f"{srv.base}/?token={TOKEN}")
    assert status == 200 and f"mixfleet_token={TOKEN}" in headers["set-cookie"]
    assert get(srv.base + "/api/runs", {"Cookie": f"mixfleet_token={TOKEN}"})[0] == 200
    assert get(srv.base + "/api/runs", {"Cookie": "mixfleet_token=nope"})[0] == 401


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_no_endpoint_accepts_a_write_and_nothing_is_written(thread_server: MakeServer,
                                                            site: Path) -> None:
    """POST, PUT, PATCH and DELETE are refused (405) everywhere, and after every page's
    data was read the site's files are byte-for-byte where they were."""
    before = _snapshot(site)
    srv = thread_server(runs=(site,))
    runs = get_json(srv.base + "/api/runs")["runs"]
    sims = get_json(srv.base + "/api/sims")["results"]
    paths = ["/", "/api/info", "/api/runs", "/api/chips", "/api/sims", "/api/fleet",
             *[f"/api/run/{r['id']}" for r in runs], *[f"/api/sim/{s['id']}" for s in sims]]
    for p in paths:
        assert get(srv.base + p)[0] == 200, p
        for m in ("POST", "PUT", "PATCH", "DELETE"):
            assert get(srv.base + p, method=m)[0] == 405, (m, p)
    assert _snapshot(site) == before


def test_a_foreign_host_header_is_refused_on_loopback(thread_server: MakeServer,
                                                      site: Path) -> None:
    """On a loopback bind, a request naming another host (DNS rebinding) gets 400."""
    srv = thread_server(runs=(site,))
    assert get(srv.base + "/api/runs", {"Host": "evil.example"})[0] == 400
    assert get(srv.base + "/api/runs", {"Host": "localhost"})[0] == 200


def test_bad_files_are_named_on_the_page_and_the_server_keeps_going(
        thread_server: MakeServer, tmp_path: Path) -> None:
    """A corrupt metrics line, a folder with nothing to show, a broken and a vanished
    results.json: each is said in words, and the server answers afterwards."""
    runs = tmp_path / "runs"
    bad = make_synthetic_run(runs / "bad")
    with (bad / "metrics.jsonl").open("a") as f:
        f.write("{oops\n")
    empty = tmp_path / "empty"
    empty.mkdir()
    (runs / "sim").mkdir()
    (runs / "sim" / "results.json").write_text("{not json")
    (runs / "sim2").mkdir()
    (runs / "sim2" / "results.json").write_text(json.dumps({"policies": []}))
    srv = thread_server(runs=(runs, empty))
    listing = get_json(srv.base + "/api/runs")
    assert any("corrupt line" in p for p in listing["runs"][0]["problems"])
    assert any(str(empty) in n and "no run directory" in n for n in listing["notes"])
    sims = {s["path"]: s["id"] for s in get_json(srv.base + "/api/sims")["results"]}
    broken = get_json(srv.base + f"/api/sim/{sims[str(runs / 'sim' / 'results.json')]}")
    assert "not valid JSON" in broken["error"]
    sid = sims[str(runs / "sim2" / "results.json")]
    os.remove(runs / "sim2" / "results.json")
    status, _, body = get(srv.base + f"/api/sim/{sid}")
    assert status in (200, 404) and (b"missing" in body or b"no such" in body)
    assert get(srv.base + "/api/info")[0] == 200


def test_fleet_page_without_and_with_a_fleet_dir(thread_server: MakeServer,
                                                tmp_path: Path) -> None:
    """No --fleet: 'no live fleet'. With a fleet.sqlite: its jobs table, read-only."""
    srv = thread_server(runs=())
    assert get_json(srv.base + "/api/fleet")["state"] == "none"
    fleet = tmp_path / "fleet"
    fleet.mkdir()
    con = sqlite3.connect(fleet / "fleet.sqlite")
    con.execute("CREATE TABLE jobs (id TEXT, state TEXT, devices INTEGER)")
    con.executemany("INSERT INTO jobs VALUES (?, ?, ?)", [("j1", "running", 4),
                                                         ("j2", "queued", 2)])
    con.commit()
    con.close()
    before = (fleet / "fleet.sqlite").read_bytes()
    srv2 = thread_server(runs=(), fleet=fleet)
    d = get_json(srv2.base + "/api/fleet")
    assert d["state"] == "ok" and d["tables"]["jobs"]["count"] == 2
    assert d["tables"]["jobs"]["columns"] == ["id", "state", "devices"]
    assert sorted(r[0] for r in d["tables"]["jobs"]["rows"]) == ["j1", "j2"]
    assert (fleet / "fleet.sqlite").read_bytes() == before


def test_a_non_loopback_bind_generates_prints_and_requires_a_token(
        thread_server: MakeServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """`--host 0.0.0.0 --token` (no value) generates a token and prints it with the URL,
    and a server with that token refuses requests without it. (The test never listens
    beyond loopback: the socket the CLI gets is a loopback one.)"""
    import mixfleet.dashboard.server as server
    from mixfleet.cli import main

    seen: dict = {}
    real_bind = server.bind

    def loopback_bind(cfg):  # type: ignore[no-untyped-def]
        seen["cfg"] = cfg
        return real_bind(dataclasses.replace(cfg, host="127.0.0.1"))

    def no_serve(cfg, sock) -> None:  # type: ignore[no-untyped-def]
        sock.close()

    monkeypatch.setattr(server, "bind", loopback_bind)
    monkeypatch.setattr(server, "serve", no_serve)
    assert main(["dashboard", str(tmp_path), "--host", "0.0.0.0", "--port", "0",
                 "--token"]) == 0
    out = capsys.readouterr().out
    cfg = seen["cfg"]
    assert cfg.host == "0.0.0.0" and len(cfg.token) >= 16
    assert f"?token={cfg.token}" in out
    assert f"generated token (every request needs it): {cfg.token}" in out
    srv = thread_server(runs=(tmp_path,), token=cfg.token)
    assert get(srv.base + "/api/runs")[0] == 401
    assert get(srv.base + "/api/runs", {"Authorization": f"Bearer {cfg.token}"})[0] == 200
