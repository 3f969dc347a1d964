"""The zip bundle of POST /sessions/export and /sessions/import.

    manifest.json        format, version, created_at, counts, and a SHA-256 for every other file
    sessions.json        [{"session": …, "runs": […]}, …]
    messages.jsonl       every message of every session, one per line, in session and seq order
    agents.json          the sessions' agents, when asked for (with_agents; absent otherwise)
    transcripts/<id>.md  a readable transcript of each session (ignored on import)

Reading a bundle trusts nothing: not the zip's own size fields (each member is read against a
budget), not the manifest (every listed file must be present with its checksum).
"""

from __future__ import annotations

import hashlib
import io
import struct
import zipfile
import zlib

import msgspec

from server.errors import InvalidRequest, PayloadTooLarge
from server.models import Agent, Run, SessionRecord
from server.transfer.transcript import VERSION, SessionExport, jsonl, markdown

FORMAT = "sessiond-bundle"
MANIFEST = "manifest.json"
SESSIONS = "sessions.json"
MESSAGES = "messages.jsonl"
AGENTS = "agents.json"
_READ_ERRORS = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    zlib.error,
    EOFError,
    NotImplementedError,  # zipfile's answer to a compression method it lacks: a bad bundle
    RuntimeError,
    OSError,
    ValueError,
    struct.error,
)


class Counts(msgspec.Struct):
    sessions: int
    messages: int
    runs: int


class Manifest(msgspec.Struct):
    format: str
    version: int
    created_at: str
    counts: Counts
    checksums: dict[str, str]


class BundleEntry(msgspec.Struct):
    session: SessionRecord
    runs: list[Run]


class Unpacked(msgspec.Struct):
    manifest: Manifest
    sessions: bytes
    messages: bytes
    agents: bytes | None  # None: the bundle carries no agents


_encoder = msgspec.json.Encoder()
_manifest = msgspec.json.Decoder(Manifest)


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def pack(exports: list[SessionExport], created_at: str, agents: list[Agent] | None = None) -> bytes:
    files = {
        SESSIONS: _encoder.encode([BundleEntry(e.session, e.runs) for e in exports]),
        MESSAGES: b"".join(jsonl(e.messages) for e in exports),
    }
    if agents is not None:
        files[AGENTS] = _encoder.encode(agents)
    for export in exports:
        files[f"transcripts/{export.session.id}.md"] = markdown(export).encode()
    counts = Counts(
        len(exports),
        sum(len(e.messages) for e in exports),
        sum(len(e.runs) for e in exports),
    )
    manifest = Manifest(
        FORMAT, VERSION, created_at, counts, {name: digest(data) for name, data in files.items()}
    )
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(MANIFEST, msgspec.json.format(_encoder.encode(manifest), indent=2))
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def unpack(data: bytes, limit: int) -> Unpacked:
    """The bundle's files, checked against its manifest; at most `limit` bytes unpacked."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return _unpack(archive, limit)
    except _READ_ERRORS as exc:
        raise InvalidRequest(f"the bundle is not a readable zip file: {exc}") from exc


def _unpack(archive: zipfile.ZipFile, limit: int) -> Unpacked:
    members = _members(archive, limit)
    budget = [limit]
    manifest = _read_manifest(_read(archive, members, MANIFEST, budget))
    files: dict[str, bytes] = {}
    for name, expected in manifest.checksums.items():
        files[name] = _read(archive, members, name, budget)
        if digest(files[name]) != expected.removeprefix("sha256:").lower():
            raise InvalidRequest(f"the bundle's {name} does not match its checksum in {MANIFEST}")
    for name in (SESSIONS, MESSAGES):
        if name not in files:
            raise InvalidRequest(f"the bundle's {MANIFEST} lists no checksum for {name}")
    return Unpacked(manifest, files[SESSIONS], files[MESSAGES], files.get(AGENTS))


def _members(archive: zipfile.ZipFile, limit: int) -> dict[str, zipfile.ZipInfo]:
    members: dict[str, zipfile.ZipInfo] = {}
    for info in archive.infolist():
        if info.filename in members:
            raise InvalidRequest(f"the bundle holds {info.filename} twice")
        if info.flag_bits & 0x1:
            raise InvalidRequest(f"the bundle's {info.filename} is encrypted")
        members[info.filename] = info
    declared = sum(info.file_size for info in members.values())
    if declared > limit:
        raise PayloadTooLarge(f"the bundle unpacks to {declared} bytes; the limit is {limit}")
    return members


def _read(
    archive: zipfile.ZipFile, members: dict[str, zipfile.ZipInfo], name: str, budget: list[int]
) -> bytes:
    info = members.get(name)
    if info is None:
        raise InvalidRequest(f"the bundle has no {name}")
    with archive.open(info) as member:
        data = member.read(budget[0] + 1)
    if len(data) > budget[0]:
        raise PayloadTooLarge("the bundle unpacks to more than the import limit allows")
    budget[0] -= len(data)
    return data


def _read_manifest(data: bytes) -> Manifest:
    try:
        manifest = _manifest.decode(data)
    except msgspec.DecodeError as exc:
        raise InvalidRequest(f"the bundle's {MANIFEST} is invalid: {exc}") from exc
    if manifest.format != FORMAT:
        raise InvalidRequest(f"{MANIFEST}: format must be {FORMAT!r}")
    if manifest.version != VERSION:
        raise InvalidRequest(
            f"{MANIFEST}: version {manifest.version} is not supported (this server reads "
            f"version {VERSION})"
        )
    return manifest
