"""JSON columns: one encoder, one typed decoder per column type."""

from __future__ import annotations

from typing import Any

import msgspec

from server.models import (
    CompactionInfo,
    ContentBlock,
    ErrorInfo,
    PendingToolCall,
    ToolCallRecord,
    ToolRef,
    ToolResultBlock,
)

encode = msgspec.json.Encoder().encode
decode_content = msgspec.json.Decoder(list[ContentBlock]).decode
decode_tools = msgspec.json.Decoder(list[ToolRef]).decode
decode_object = msgspec.json.Decoder(dict[str, Any]).decode
decode_strings = msgspec.json.Decoder(list[str]).decode
decode_error = msgspec.json.Decoder(ErrorInfo).decode
decode_tool_calls = msgspec.json.Decoder(list[ToolCallRecord]).decode
decode_pending = msgspec.json.Decoder(list[PendingToolCall]).decode
decode_compaction = msgspec.json.Decoder(CompactionInfo).decode
decode_results = msgspec.json.Decoder(list[ToolResultBlock]).decode


def text(value: Any) -> str:
    """Encode a value for a TEXT JSON column."""
    return encode(value).decode()
