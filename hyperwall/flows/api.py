"""Request and response bodies of the manager's flow endpoints (`POST
/v1/agent/HOST/flows`, `GET /v1/flows`): pydantic models shared by the server
(`manager.flow_routes`, where they make the OpenAPI schema), the agent's shipper and the
client. Like `manager_api`, no server code."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from hyperwall.flows.batch import MAX_FILE_ID, MAX_RECORDS


class FlowBatch(BaseModel):
    """Flow records an agent ships (`flows.batch`): the complete lines of bytes
    [offset, end) of one of its flow log files, decoded."""

    model_config = ConfigDict(strict=True, extra="forbid")

    file: str = Field(min_length=1, max_length=MAX_FILE_ID, description="the file's identity")
    offset: int = Field(ge=0, le=2**62, description="where the batch starts in the file")
    end: int = Field(ge=0, le=2**62, description="where it ends (after its last line)")
    records: list[dict[str, Any]] = Field(max_length=MAX_RECORDS, description="flow records")


class FlowBatchResult(BaseModel):
    stored: int = Field(description="records stored; 0 if the manager had this batch already")
    file: str = Field(description="the file the host's shipping stands in")
    offset: int = Field(description="where the agent goes on from in that file")


class FlowsPage(BaseModel):
    records: list[dict[str, Any]] = Field(description="flow records, oldest first")
    cursor: int = Field(description="pass as `after` to get only records stored since")
