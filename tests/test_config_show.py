"""`sessiond config show`: every setting's value and where it came from, a flag over the
environment over the file over the default, and secrets masked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from server.cli import main

SECRET = "sk-ant-api03-TOPSECRETVALUE"
PASSWORD = "hunter2pw"

# setting: (in the file, in the environment, as a flag, what wins, from where)
TABLE = {
    "port": (7001, "8001", "9001", 9001, "flag"),
    "host": ("10.0.0.1", "10.0.0.2", None, "10.0.0.2", "env"),
    "ping_s": (5.0, None, None, 5.0, "file"),
    "max_body_bytes": (None, None, None, 1024 * 1024, "default"),
    "rate_runs_per_min": (None, "7", "8", 8, "flag"),
    "log_format": ("text", None, "json", "json", "flag"),
}
FLAGS = {
    "port": "--port",
    "rate_runs_per_min": "--rate-runs-per-min",
    "log_format": "--log-format",
}


def shown(text: str) -> dict[str, tuple[object, str]]:
    rows = {}
    for line in text.splitlines():
        name, rest = line.split(maxsplit=1)
        value, source = rest.rsplit(maxsplit=1)
        rows[name] = (json.loads(value), source)
    return rows


def test_flag_over_env_over_file_over_default_with_secrets_masked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = ["[sessiond]"]
    lines += [f"{k} = {json.dumps(f)}" for k, (f, _, _, _, _) in TABLE.items() if f is not None]
    lines.append(f'provider_base_urls = ["openai=https://ops:{PASSWORD}@proxy.internal/v1"]')
    config = tmp_path / "sessiond.toml"
    config.write_text("\n".join(lines) + "\n")
    for name, (_, env, _, _, _) in TABLE.items():
        monkeypatch.delenv(f"SESSIOND_{name.upper()}", raising=False)
        if env is not None:
            monkeypatch.setenv(f"SESSIOND_{name.upper()}", env)
    monkeypatch.setenv("ANTHROPIC_API_KEY", SECRET)
    argv = ["config", "show", "--config", str(config)]
    for name, (_, _, flag, _, _) in TABLE.items():
        if flag is not None:
            argv += [FLAGS[name], flag]

    assert main(argv) == 0
    out = capsys.readouterr().out
    rows = shown(out)
    for name, (_, _, _, value, source) in TABLE.items():
        assert rows[name] == (value, source), name
    assert rows["ANTHROPIC_API_KEY"] == ("********", "env")
    urls, source = rows["provider_base_urls"]
    assert source == "file" and urls == ["openai=https://********@proxy.internal/v1"]
    assert SECRET not in out and PASSWORD not in out
    assert rows["metrics_public"] == (False, "default")


def test_a_bad_setting_is_named_not_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SESSIOND_PORT", "not-a-port")
    assert main(["config", "show", "--config", str(tmp_path / "none.toml")]) == 2
    err = capsys.readouterr().err
    assert "invalid setting" in err and "port" in err and "Traceback" not in err
