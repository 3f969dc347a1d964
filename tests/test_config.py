"""Settings from the environment, `make run`'s command line and `sessiond --help`."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from server import config
from server.cli.commands import build_parser

ROOT = Path(__file__).resolve().parents[1]


def test_list_variables_split_on_commas_and_whitespace(tmp_path: Path) -> None:
    env = {
        "SESSIOND_CORS_ORIGINS": "http://127.0.0.1:8765, https://app.example:8443",
        "SESSIOND_ALLOW_ROOTS": f"{tmp_path}/a,{tmp_path}/b\n {tmp_path}/c",
    }
    settings = config.load({}, env, config_file=str(tmp_path / "none.toml"))
    assert settings.cors_origins == ["http://127.0.0.1:8765", "https://app.example:8443"]
    assert settings.allow_roots == [f"{tmp_path}/a", f"{tmp_path}/b", f"{tmp_path}/c"]


def test_one_origin_stays_whole(tmp_path: Path) -> None:
    env = {"SESSIOND_CORS_ORIGINS": "http://localhost:3000"}
    settings = config.load({}, env, config_file=str(tmp_path / "none.toml"))
    assert settings.cors_origins == ["http://localhost:3000"]


def make_run(*assignments: str) -> str:
    """The command `make run` would run (dry run: nothing is installed or started)."""
    make = shutil.which("make")
    if make is None:
        pytest.skip("make is not installed")
    # the venv target is made up to date so that only the run recipe prints
    done = subprocess.run(
        [make, "-n", "-o", ".venv/bin/sessiond", "run", *assignments],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin"},
    )
    lines = [line for line in done.stdout.splitlines() if "sessiond serve" in line]
    assert len(lines) == 1, done.stdout
    return lines[0]


def test_make_run_passes_no_flags_unless_asked() -> None:
    command = make_run()
    assert command.split() == [".venv/bin/sessiond", "serve"]


def test_make_run_passes_what_was_set() -> None:
    command = make_run("PORT=8080", "DB=/tmp/x.db", "HOST=0.0.0.0")
    words = command.split()
    assert words[:2] == [".venv/bin/sessiond", "serve"]
    flags = dict(zip(words[2::2], words[3::2], strict=True))
    assert flags == {"--port": "8080", "--db": "/tmp/x.db", "--host": "0.0.0.0"}
    assert make_run("PORT=9090").split()[2:] == ["--port", "9090"]


def help_of(*argv: str) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args([*argv, "--help"])
    assert exited.value.code == 0


def test_help_names_every_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    help_of()
    text = capsys.readouterr().out
    for command in ("serve", "chat", "sessions ls", "sessions show", "sessions rm"):
        assert f"sessiond {command} " in text, (command, text)
    for command in ("sessions export", "sessions import"):
        assert f"sessiond {command} " in text, (command, text)
    prefix = "  sessiond "
    for name in [
        line[len(prefix) :].split("  ")[0] for line in text.splitlines() if line.startswith(prefix)
    ]:
        help_of(*name.split())  # every command the help names exists
        assert capsys.readouterr().out.startswith(f"usage: sessiond {name}"), name


@pytest.mark.parametrize(
    "env", [{"SESSIOND_REQUEST_TIMEOUT_S": "0"}, {"SESSIOND_MAX_CONNECTIONS": "0"}]
)
def test_edge_settings_are_checked(tmp_path: Path, env: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="invalid setting"):
        config.load({}, env, config_file=str(tmp_path / "none.toml"))


def test_edge_settings_from_the_environment(tmp_path: Path) -> None:
    env = {"SESSIOND_REQUEST_TIMEOUT_S": "2.5", "SESSIOND_MAX_CONNECTIONS": "100"}
    settings = config.load({}, env, config_file=str(tmp_path / "none.toml"))
    assert (settings.request_timeout_s, settings.max_connections) == (2.5, 100)
