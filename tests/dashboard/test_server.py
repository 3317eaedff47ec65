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

from mixfleet.dashboard.app import cookie_name
from mixfleet.live.store import DB_NAME
from tests.dashboard.conftest import (
    TOKEN,
    CliServer,
    ThreadServer,
    get,
    get_json,
    make_synthetic_run,
)

MakeServer = Callable[..., ThreadServer]


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
    """No token or a wrong one (header, cookie or ?token=) gets 401 on every endpoint,
    static files included; the right one in the header or the cookie gets 200."""
    srv = thread_server(runs=(site,))
    name = cookie_name(srv.port)
    for path in ("/", "/api/runs", "/api/chips", "/api/info", "/static/app.js"):
        assert get(srv.base + path, token=None)[0] == 401
        assert get(srv.base + path, token="wrong-token-000000000")[0] == 401
        assert get(srv.base + path, {"Cookie": f"{name}=nope"})[0] == 401
        assert get(srv.base + path, {"Cookie": f"mixfleet_token_1={TOKEN}"})[0] == 401
        assert get(f"{srv.base}{path}?token=wrong-token-000000000", token=None)[0] == 401
        assert get(srv.base + path, token=TOKEN)[0] == 200
        assert get(srv.base + path, {"Cookie": f"{name}={TOKEN}"})[0] == 200


def test_the_printed_url_trades_its_token_for_an_httponly_cookie(
        thread_server: MakeServer, site: Path) -> None:
    """`/?token=TOKEN` answers 303 to the same URL without the token and sets the token
    as an HttpOnly, SameSite=Strict cookie, with which later requests pass."""
    import http.client

    srv = thread_server(runs=(site,))
    host, port = srv.base.removeprefix("http://").rsplit(":", 1)
    con = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        con.request("GET", f"/api/runs?points=50&token={TOKEN}")
        r = con.getresponse()
        r.read()
        cookie = r.getheader("set-cookie") or ""
        assert r.status == 303 and r.getheader("location") == "/api/runs?points=50"
    finally:
        con.close()
    attrs = [a.strip().lower() for a in cookie.split(";")]
    assert attrs[0] == f"{cookie_name(srv.port)}={TOKEN}".lower()
    assert "httponly" in attrs and "samesite=strict" in attrs and "path=/" in attrs
    assert get(srv.base + "/api/runs?points=50", {"Cookie": cookie.split(";")[0]})[0] == 200


def test_the_printed_url_followed_like_a_browser_ends_on_the_page_with_the_cookie(
        cli_server: CliServer) -> None:
    """Opening the URL the CLI printed (redirect followed, cookies kept) lands on the page
    at the URL without the token; the page's own requests then pass on the cookie alone,
    and a client without it still gets 401."""
    import http.cookiejar
    import urllib.request

    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    with opener.open(cli_server.url, timeout=30) as r:
        assert r.status == 200 and r.url == cli_server.base + "/"
        assert b"<html" in r.read().lower()
    assert [c.name for c in jar] == [cookie_name(cli_server.port)]
    assert all(c.has_nonstandard_attr("HttpOnly") for c in jar)
    with opener.open(cli_server.base + "/api/runs", timeout=30) as r:
        assert r.status == 200 and json.loads(r.read())["runs"]
    assert get(cli_server.base + "/api/runs", token=None)[0] == 401


def test_the_cli_prints_its_generated_token_once_and_refuses_token_values(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Without flags a fresh token is generated and printed once, in the URL; `--token
    VALUE` (visible in `ps`) exits 2 naming --token-file."""
    import mixfleet.dashboard.server as server
    from mixfleet.cli import main

    seen: dict = {}
    monkeypatch.setattr(server, "serve", lambda cfg, sock: (seen.update(cfg=cfg),
                                                            sock.close()))
    assert main(["dashboard", str(tmp_path), "--port", "0"]) == 0
    out = capsys.readouterr().out
    token = seen["cfg"].token
    assert len(token) >= 32 and out.count(token) == 1 and f"/?token={token}" in out
    assert main(["dashboard", str(tmp_path), "--port", "0"]) == 0
    assert seen["cfg"].token != token
    capsys.readouterr()
    assert main(["dashboard", str(tmp_path), "--token", "a-token-on-the-command-line"]) == 2
    err = capsys.readouterr().err
    assert "--token VALUE is refused" in err and "--token-file" in err


def test_a_token_file_is_used_and_a_readable_one_refused(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """`--token-file` with mode 0600 gives the server its token (not printed); mode 0644
    exits 2 with the chmod fix, and a link in its place is refused."""
    import mixfleet.dashboard.server as server
    from mixfleet.cli import main

    seen: dict = {}
    monkeypatch.setattr(server, "serve", lambda cfg, sock: (seen.update(cfg=cfg),
                                                            sock.close()))
    f = tmp_path / "token"
    f.write_text(TOKEN + "\n")
    f.chmod(0o600)
    assert main(["dashboard", str(tmp_path), "--port", "0", "--token-file", str(f)]) == 0
    assert seen["cfg"].token == TOKEN and TOKEN not in capsys.readouterr().out
    seen.clear()
    f.chmod(0o644)
    assert main(["dashboard", str(tmp_path), "--port", "0", "--token-file", str(f)]) == 2
    err = capsys.readouterr().err
    assert "0644" in err and f"chmod 600 {f}" in err and seen == {}
    f.chmod(0o600)
    (tmp_path / "link").symlink_to(f)
    assert main(["dashboard", str(tmp_path), "--port", "0", "--token-file",
                 str(tmp_path / "link")]) == 2
    assert "--token-file" in capsys.readouterr().err and seen == {}


def test_a_linked_run_of_another_user_is_not_listed(thread_server: MakeServer,
                                                    tmp_path: Path) -> None:
    """A link in the runs folder to a run directory outside it is listed when the run is
    the user's own, and not when it belongs to another uid (needs root to chown)."""
    if os.getuid() != 0:
        pytest.skip("needs root to give a run directory to another uid")
    runs = tmp_path / "runs"
    runs.mkdir()
    mine = make_synthetic_run(tmp_path / "elsewhere" / "mine")
    theirs = make_synthetic_run(tmp_path / "elsewhere" / "theirs")
    for p in [theirs, *theirs.iterdir()]:
        os.chown(p, 54321, 54321)
    (runs / "mine").symlink_to(mine)
    (runs / "theirs").symlink_to(theirs)
    make_synthetic_run(runs / "inside")
    srv = thread_server(runs=(runs,))
    names = sorted(r["name"] for r in get_json(srv.base + "/api/runs")["runs"])
    assert names == ["inside", "mine"]
    srv2 = thread_server(runs=(runs, theirs))  # given by name: the user asked for it
    names = sorted(r["name"] for r in get_json(srv2.base + "/api/runs")["runs"])
    assert names == ["inside", "mine", "theirs"]


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
    assert get(srv.base + "/api/runs", {"Host": "evil.example"}, token=None)[0] == 401
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
    """No --fleet: 'no live fleet'. With the live fleet's fleet.db: its jobs table, read-only."""
    srv = thread_server(runs=())
    assert get_json(srv.base + "/api/fleet")["state"] == "none"
    fleet = tmp_path / "fleet"
    fleet.mkdir()
    con = sqlite3.connect(fleet / DB_NAME)
    con.execute("CREATE TABLE jobs (id TEXT, state TEXT, devices INTEGER)")
    con.executemany("INSERT INTO jobs VALUES (?, ?, ?)", [("j1", "running", 4),
                                                         ("j2", "queued", 2)])
    con.commit()
    con.close()
    before = (fleet / DB_NAME).read_bytes()
    srv2 = thread_server(runs=(), fleet=fleet)
    d = get_json(srv2.base + "/api/fleet")
    assert d["state"] == "ok" and d["tables"]["jobs"]["count"] == 2
    assert d["tables"]["jobs"]["columns"] == ["id", "state", "devices"]
    assert sorted(r[0] for r in d["tables"]["jobs"]["rows"]) == ["j1", "j2"]
    assert (fleet / DB_NAME).read_bytes() == before


def test_a_non_loopback_bind_has_a_token_too(
        thread_server: MakeServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """`--host 0.0.0.0` starts with a generated token printed in the URL, and a server
    with that token refuses requests without it. (The test never listens beyond
    loopback: the socket the CLI gets is a loopback one.)"""
    import mixfleet.dashboard.server as server
    from mixfleet.cli import main

    seen: dict = {}
    real_bind = server.bind

    def loopback_bind(cfg):  # type: ignore[no-untyped-def]
        seen["cfg"] = cfg
        return real_bind(dataclasses.replace(cfg, host="127.0.0.1"))

    monkeypatch.setattr(server, "bind", loopback_bind)
    monkeypatch.setattr(server, "serve", lambda cfg, sock: sock.close())
    assert main(["dashboard", str(tmp_path), "--host", "0.0.0.0", "--port", "0"]) == 0
    cfg = seen["cfg"]
    assert cfg.host == "0.0.0.0" and f"?token={cfg.token}" in capsys.readouterr().out
    srv = thread_server(runs=(tmp_path,), token=cfg.token)
    assert get(srv.base + "/api/runs", token=None)[0] == 401
    assert get(srv.base + "/api/runs", token=cfg.token)[0] == 200


def test_the_vendored_chart_library_is_served_and_is_package_data(
        thread_server: MakeServer, site: Path) -> None:
    """uPlot is served from the package with the security headers, its MIT license beside
    it, and every file of static/ is matched by pyproject's package-data (a wheel ships
    it)."""
    import fnmatch
    import tomllib

    from mixfleet.dashboard.app import STATIC_DIR

    srv = thread_server(runs=(site,))
    status, headers, body = get(srv.base + "/static/vendor/uplot/uPlot.iife.min.js")
    assert status == 200 and b"uPlot" in body[:200]
    assert "script-src 'self'" in headers["content-security-policy"]
    license_text = (STATIC_DIR / "vendor" / "uplot" / "LICENSE").read_text()
    assert "MIT License" in license_text
    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["mixfleet"]
    pkg = STATIC_DIR.parents[1]
    for f in STATIC_DIR.rglob("*"):
        if f.is_file():
            rel = f.relative_to(pkg).as_posix()
            assert any(fnmatch.fnmatch(f.name, p[3:]) if p.startswith("**/") else
                       fnmatch.fnmatch(rel, p) for p in patterns), rel
