"""GET /cluster: cluster health derived from Qdrant's GET /cluster."""

from __future__ import annotations

import marshmallow as ma
from marshmallow import fields

from api.schemas.common import Passthrough

HEALTH_RULES = (
    "How status is derived: red when Qdrant cannot be reached (then the answer is still 200, with "
    "reason saying why; GET /readyz answers 503 in that case), when the Raft state has no leader or when "
    "Qdrant reports its consensus thread stopped with an error; yellow when raft_info.pending_operations "
    "> 0, when message_send_failures is not empty, when the consensus thread is not working or when QBM "
    "cannot reach a peer at its REST URL (members); green "
    "otherwise. A single-node Qdrant (no distributed mode; Qdrant answers status 'disabled') is green "
    "with mode 'single' and raft_info null."
)


class RaftInfoSchema(Passthrough):
    term = fields.Integer(required=True)
    commit = fields.Integer(required=True)
    pending_operations = fields.Integer(required=True)
    leader = fields.Integer(required=True, allow_none=True, metadata={"description": "null: no leader"})
    role = fields.String(
        required=True, allow_none=True, metadata={"description": "Leader, Follower, Candidate, ..."}
    )
    is_voter = fields.Boolean(required=True)


class MemberSchema(ma.Schema):
    peer_id = fields.Integer(required=True)
    uri = fields.String(required=True, allow_none=True, metadata={"description": "The peer's p2p URI"})
    rest_url = fields.String(required=True, metadata={
        "description": "Where QBM reaches the peer's REST API (QBM_QDRANT_PEERS, else the p2p URI's host with "
                       "QBM_QDRANT_URL's port)"})
    reachable = fields.Boolean(required=True)
    error = fields.String(required=True, allow_none=True, metadata={"description": "Why it is not reachable"})


class ClusterSchema(Passthrough):
    __doc__ = "Cluster health. " + HEALTH_RULES

    status = fields.String(
        required=True,
        validate=ma.validate.OneOf(["green", "yellow", "red"]),
        metadata={"description": HEALTH_RULES},
    )
    mode = fields.String(
        required=True,
        validate=ma.validate.OneOf(["cluster", "single", "unknown"]),
        metadata={"description": "cluster: distributed mode; single: one node without Raft; "
                                 "unknown: Qdrant could not be reached"},
    )
    peer_id = fields.Integer(required=True, allow_none=True,
                             metadata={"description": "This node's peer id; null when not known"})
    raft_info = fields.Nested(RaftInfoSchema, required=True, allow_none=True)
    peers = fields.Dict(
        keys=fields.String(),
        values=fields.String(allow_none=True),
        required=True,
        metadata={"description": "Peer id -> peer URI"},
    )
    reason = fields.String(required=True, allow_none=True,
                           metadata={"description": "Why the status is not green (null when green)"})
    members = fields.List(fields.Nested(MemberSchema), metadata={
        "description": "Cluster mode: every peer with its REST URL and whether QBM can reach it"})
