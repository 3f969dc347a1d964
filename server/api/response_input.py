"""The body of POST /v1/responses, decoded at the edge, and its input items made into what a
run takes: the user's text, the results of client tools, instructions, client tools.

OpenAI's input items are a union whose `message` member may leave out its `type`, so the
items are decoded one by one by their type rather than as one tagged union.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from server.errors import InvalidRequest
from server.models import ClientTool, TextBlock, ToolResultBlock


class ConversationRef(msgspec.Struct, forbid_unknown_fields=True):
    id: str


class ResponseBody(msgspec.Struct, forbid_unknown_fields=True):
    model: str
    input: str | list[dict[str, Any]]
    instructions: str | None = None
    metadata: dict[str, str] | None = None
    conversation: str | ConversationRef | None = None
    previous_response_id: str | None = None
    store: bool = True
    stream: bool = False
    background: bool = False
    tools: list[dict[str, Any]] = []
    work_dir: str | None = None  # sessiond's own: a new session's folder
    # Accepted and left to the agent, which sets its own sampling and limits.
    tool_choice: Any = None
    parallel_tool_calls: bool | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_output_tokens: int | None = None
    truncation: str | None = None
    user: str | None = None
    include: list[str] | None = None
    stream_options: dict[str, Any] | None = None
    text: dict[str, Any] | None = None


class InputText(msgspec.Struct, tag="input_text", tag_field="type"):
    text: str


class OutputTextPart(msgspec.Struct, tag="output_text", tag_field="type"):
    text: str
    annotations: list[Any] = []


class MessageInput(msgspec.Struct, forbid_unknown_fields=True):
    role: Literal["user", "system", "developer", "assistant"]
    content: str | list[InputText | OutputTextPart]
    type: Literal["message"] = "message"
    id: str | None = None
    status: str | None = None


class CallOutputInput(msgspec.Struct, forbid_unknown_fields=True):
    call_id: str
    output: str | list[InputText]
    type: Literal["function_call_output"] = "function_call_output"
    id: str | None = None
    status: str | None = None


class FunctionToolInput(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    type: Literal["function"] = "function"
    parameters: dict[str, Any] | None = None
    description: str | None = None
    strict: bool | None = None


class Turn(msgspec.Struct):
    """What one request brings to its run."""

    text: list[TextBlock]
    results: list[ToolResultBlock]
    instructions: str | None
    tools: list[ClientTool]


body_decoder = msgspec.json.Decoder(ResponseBody)
MAX_METADATA = 16


def _text_of(content: str | list[Any]) -> str:
    if isinstance(content, str):
        return content
    return "".join(part.text for part in content)


def _convert(item: dict[str, Any], kind: type[Any], where: str) -> Any:
    try:
        return msgspec.convert(item, kind)
    except msgspec.ValidationError as exc:
        raise InvalidRequest(f"{where}: {exc}", field=where) from exc


def turn_of(body: ResponseBody) -> Turn:
    """The request's input items and instructions as one run's turn."""
    texts: list[TextBlock] = []
    results: list[ToolResultBlock] = []
    system: list[str] = [body.instructions] if body.instructions else []
    items: list[dict[str, Any]] = (
        [{"role": "user", "content": body.input}] if isinstance(body.input, str) else body.input
    )
    for i, item in enumerate(items):
        where = f"input[{i}]"
        kind = item.get("type", "message") if isinstance(item, dict) else None
        if kind == "message":
            message: MessageInput = _convert(item, MessageInput, where)
            text = _text_of(message.content)
            if message.role == "assistant":
                raise InvalidRequest(
                    f"{where}: sessiond keeps the history itself; continue a conversation with "
                    "previous_response_id or conversation instead of sending assistant turns",
                    field=where,
                )
            if message.role == "user":
                texts.append(TextBlock(text))
            elif text:
                system.append(text)
        elif kind == "function_call_output":
            call: CallOutputInput = _convert(item, CallOutputInput, where)
            results.append(ToolResultBlock(call.call_id, _text_of(call.output)))
        else:
            raise InvalidRequest(
                f"{where}: input items may be messages or function_call_output, not {kind!r}",
                field=where,
            )
    if results and texts:
        raise InvalidRequest(
            "send function_call_output items on their own: they answer the response that "
            "asked for them, which then goes on",
            field="input",
        )
    if not results and not any(t.text.strip() for t in texts):
        raise InvalidRequest("input must hold some user text", field="input")
    return Turn(texts, results, "\n\n".join(system) or None, tools_of(body.tools))


def tools_of(raw: list[dict[str, Any]]) -> list[ClientTool]:
    """`function` tools are the client's: the run pauses for their results."""
    tools: list[ClientTool] = []
    for i, item in enumerate(raw):
        where = f"tools[{i}]"
        if item.get("type") != "function":
            raise InvalidRequest(
                f"{where}: only function tools are taken (the agent brings its own server "
                f"tools), not {item.get('type')!r}",
                field=where,
            )
        tool: FunctionToolInput = _convert(item, FunctionToolInput, where)
        schema = tool.parameters or {"type": "object", "properties": {}}
        tools.append(ClientTool(tool.name, schema, tool.description or ""))
    return tools


def check_metadata(metadata: dict[str, str] | None) -> dict[str, str]:
    """OpenAI's limits: 16 pairs, keys of at most 64 characters, values of at most 512."""
    if metadata is None:
        return {}
    if len(metadata) > MAX_METADATA:
        raise InvalidRequest(f"metadata holds at most {MAX_METADATA} pairs", field="metadata")
    for key, value in metadata.items():
        if len(key) > 64 or len(value) > 512:
            raise InvalidRequest(
                "metadata keys are at most 64 characters, values at most 512", field="metadata"
            )
    return metadata
