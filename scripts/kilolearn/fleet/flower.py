"""kilolearn's fleet on Flower: the ClientApp that wraps a board, the server strategy that
checks and aggregates the boards' blobs (:mod:`.aggregate`), and the two ways Flower carries the
messages: in this process, one board after the other (:class:`InlineGrid`), or Flower's
simulation engine (``flwr.simulation.run_simulation``, Ray: many virtual boards, or devices a
few at a time).

The model travels as the kilolearn blob itself, one ``Array`` (stype ``kilolearn.klm``) in the
messages' ArrayRecord: what the board LOADs and what it reads back, CRC included.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Error,
    Message,
    MetricRecord,
    RecordDict,
)
from flwr.clientapp import ClientApp
from flwr.common.constant import SUPERLINK_NODE_ID, ErrorCode
from flwr.common.logger import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg
from flwr.supercore.task_identity import TaskIdentity

from ..cliargs import one_line
from ..formats import export
from . import aggregate as agg
from . import boards as B

STYPE = "kilolearn.klm"


def arrays_of(blob: bytes) -> ArrayRecord:
    """A blob as the ArrayRecord the messages carry."""
    return ArrayRecord({"blob": Array(dtype="uint8", shape=(len(blob),), stype=STYPE,
                                      data=bytes(blob))})


def blob_of(arrays: ArrayRecord) -> bytes:
    """The blob an ArrayRecord carries (ValueError when it holds none)."""
    a = arrays.get("blob") if isinstance(arrays, ArrayRecord) else None
    if a is None or a.stype != STYPE:
        raise ValueError("the reply carries no kilolearn blob")
    return bytes(a.data)


# ---------------------------------------------------------------------------- the boards


@dataclass
class FleetSpec:
    """What the ClientApp needs to be any board of the fleet (sent to Flower's simulation
    workers as is: data by name, each board's share by index)."""

    data: str
    parts: list[np.ndarray]
    local: B.Local
    boards: list[B.Board]  # one per partition, or one for all
    faults: dict[tuple[int, int], str] = field(default_factory=dict)  # (round, board) -> fault

    def board(self, k: int) -> B.Board:
        return self.boards[k] if len(self.boards) > 1 else self.boards[0]


def client_app(spec: FleetSpec) -> ClientApp:
    """The Flower ClientApp of board ``partition-id``: a train message carries the global blob
    and the round; the reply, the adapted blob with its sample count and figures, or an Error
    saying why the board could not train (its device timed out, refused, lost power)."""
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        k = int(context.node_config["partition-id"])
        rnd = int(msg.content["config"]["server-round"])
        try:
            blob = blob_of(msg.content["arrays"])
            ds = B.load_data(spec.data)
            idx = spec.parts[k]
            idx = idx[spec.local.order(len(idx), k, rnd)]
            st = spec.local.settings(len(idx), k, rnd)
            out = B.run_round(spec.board(k), blob, ds.x_train[idx], ds.y_train[idx], st,
                              spec.faults.get((rnd, k)))
        except Exception as e:  # noqa: BLE001 - any failure of the board: an Error reply
            return Message(Error(ErrorCode.CLIENT_APP_RAISED_EXCEPTION,
                                 f"board {k}: {B.failure(e)}"), reply_to=msg)
        metrics = MetricRecord({**out.metrics, "board": k})
        return Message(RecordDict({"arrays": arrays_of(out.blob), "metrics": metrics}),
                       reply_to=msg)

    return app


# ---------------------------------------------------------------------------- the server


@dataclass
class BoardReport:
    board: int
    ok: bool
    reason: str = ""
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class RoundReport:
    round: int
    boards: list[BoardReport] = field(default_factory=list)
    accuracy: float | None = None
    blob: bytes = b""  # the global model after the round

    @property
    def dropped(self) -> list[BoardReport]:
        return [b for b in self.boards if not b.ok]


class KiloFedAvg(FedAvg):
    """FedAvg over kilolearn blobs: every board trains every round; a reply is checked (an
    Error, no blob, a blob whose CRC or tables fail or that is not the global model's) and
    dropped with its reason logged; the others are aggregated as :mod:`.aggregate` defines
    (int8: integer weighted mean, round-half-even, bit-reproducible)."""

    def __init__(self, n_boards: int, on_round: Callable[[RoundReport], None] | None = None):
        super().__init__(fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=n_boards,
                         min_available_nodes=n_boards)
        self.rounds: list[RoundReport] = []
        self.on_round = on_round
        self.node_board: dict[int, int] = {}
        self._global = b""

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        self._global = blob_of(arrays)
        return super().configure_train(server_round, arrays, config, grid)

    def _reject(self, rep: RoundReport, board: int, reason: str) -> None:
        log(logging.WARNING, "round %d: board %s dropped: %s", rep.round, board, reason)
        rep.boards.append(BoardReport(board, False, reason))

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        rep = RoundReport(server_round)
        base = export.read(self._global)
        kept: list[tuple[int, export.Blob, int]] = []
        for msg in replies:
            node = msg.metadata.src_node_id
            if msg.has_error():
                reason = msg.error.reason or f"error {msg.error.code}"
                board = self.node_board.get(node, -1)
                k, sep, rest = reason.removeprefix("board ").partition(": ")
                if reason.startswith("board ") and sep and k.isdigit():
                    board, reason = int(k), rest
                self._reject(rep, board, reason)
                continue
            mr = msg.content.get("metrics")
            metrics = {k: float(v) for k, v in mr.items()} if isinstance(mr, MetricRecord) \
                else {}
            board = int(metrics.get("board", -1))
            self.node_board[node] = board
            n = int(metrics.get("num-examples", 0))
            try:
                if n <= 0:
                    raise agg.Rejected(f"{n} samples trained")
                b = agg.check(blob_of(msg.content["arrays"]), base)
            except (agg.Rejected, ValueError, KeyError) as e:
                self._reject(rep, board, one_line(str(e)))
                continue
            rep.boards.append(BoardReport(board, True, "", metrics))
            kept.append((board, b, n))
        kept.sort(key=lambda t: t[0])
        rep.boards.sort(key=lambda r: r.board)
        if kept:
            rep.blob = agg.aggregate([b for _, b, _ in kept], [n for *_, n in kept],
                                     self._global)
        else:
            log(logging.WARNING, "round %d: no board returned a model; the global model stays",
                server_round)
            rep.blob = self._global
        self.rounds.append(rep)
        return arrays_of(rep.blob), MetricRecord({"boards": len(kept),
                                                  "dropped": len(rep.dropped)})


# ---------------------------------------------------------------------------- the engines


class InlineGrid(Grid):
    """Flower's Grid for boards served from this process: each message goes to its node's
    ClientApp in turn (node k is partition k); an exception becomes an Error reply, as in
    Flower's own engines."""

    def __init__(self, app: ClientApp, n_nodes: int):
        self.app = app
        self.n = n_nodes
        self.contexts = {k + 1: Context(run_id=1, node_id=k + 1, node_config={
            "partition-id": k, "num-partitions": n_nodes}, state=RecordDict(), run_config={})
            for k in range(n_nodes)}
        self.replies: dict[str, Message] = {}
        # who is sending, as Flower's own runtimes set it for a ServerApp's process
        TaskIdentity.task_id, TaskIdentity.run_id = 1, 1
        TaskIdentity.node_id = SUPERLINK_NODE_ID

    def set_run(self, run) -> None:  # noqa: ANN001 - flwr's Run
        self._run = run

    @property
    def run(self):  # noqa: ANN201 - flwr's Run
        return getattr(self, "_run", None)

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int,
                       group_id: str, ttl: float | None = None) -> Message:
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        return list(self.contexts)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for msg in messages:
            msg.metadata.__dict__["_message_id"] = mid = str(uuid.uuid4())
            try:
                reply = self.app(msg, self.contexts[msg.metadata.dst_node_id])
            except Exception as e:  # noqa: BLE001 - a crashed ClientApp: an Error reply
                reply = Message(Error(ErrorCode.CLIENT_APP_RAISED_EXCEPTION,
                                      f"{type(e).__name__}: {one_line(str(e))}"), reply_to=msg)
            self.replies[mid] = reply
            ids.append(mid)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self.replies.pop(m) for m in message_ids if m in self.replies]

    def send_and_receive(self, messages: Iterable[Message], *,
                         timeout: float | None = None) -> Iterable[Message]:
        return self.pull_messages(self.push_messages(messages))


def serve(grid: Grid, strategy: KiloFedAvg, blob: bytes, rounds: int,
          evaluate: Callable[[bytes], float]) -> None:
    """The server's side of a run: ``rounds`` rounds of ``strategy`` from ``blob``, the global
    model evaluated after each (``strategy.rounds`` gets the reports)."""
    def evaluate_fn(rnd: int, arrays: ArrayRecord) -> MetricRecord:
        acc = evaluate(blob_of(arrays))
        if rnd and strategy.rounds:
            strategy.rounds[-1].accuracy = acc
            if strategy.on_round:
                strategy.on_round(strategy.rounds[-1])
        return MetricRecord({"accuracy": acc})

    strategy.start(grid=grid, initial_arrays=arrays_of(blob), num_rounds=rounds,
                   evaluate_fn=evaluate_fn)


def run_inline(spec: FleetSpec, strategy: KiloFedAvg, blob: bytes, rounds: int,
               evaluate: Callable[[bytes], float]) -> None:
    """The fleet with every board served from this process, one after the other."""
    serve(InlineGrid(client_app(spec), len(spec.parts)), strategy, blob, rounds, evaluate)


def run_simulation(spec: FleetSpec, strategy: KiloFedAvg, blob: bytes, rounds: int,
                   evaluate: Callable[[bytes], float], workers: int = 2) -> None:
    """The fleet in Flower's simulation engine: ``len(spec.parts)`` virtual SuperNodes, their
    ClientApps run by ``workers`` Ray workers at a time."""
    import os

    from flwr.serverapp import ServerApp
    from flwr.simulation import run_simulation as flwr_run

    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")  # no GPUs: no tip

    server = ServerApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        serve(grid, strategy, blob, rounds, evaluate)

    flwr_run(server_app=server, client_app=client_app(spec), num_supernodes=len(spec.parts),
             backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                             "init_args": {"num_cpus": workers, "num_gpus": 0,
                                           "include_dashboard": False,
                                           "logging_level": "error",
                                           "log_to_driver": False}})
