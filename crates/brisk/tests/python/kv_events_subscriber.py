"""An independent consumer of brisk's KV events, written from vLLM's schema.

Usage: kv_events_subscriber.py PUB_ENDPOINT REPLAY_ENDPOINT TOPIC

Subscribes, prints "ready" once connected, then applies every batch to a mirror of the
replica's cached blocks: a gap in the sequence numbers (including the batches published
before it connected) is filled from the replay socket, as vllm-router does. Each event is
checked against what vLLM promises (a stored run's token count is a whole number of blocks,
removed blocks were stored). When a line arrives on stdin it prints the state as one JSON
line; at end of input it exits.

The types below are vLLM's (vllm/distributed/kv_events.py) as its consumers decode them:
the batch is an array, each event a map tagged with its class name under "type".
"""

import json
import select
import sys

import msgspec
import zmq


class EventBatch(msgspec.Struct, array_like=True, forbid_unknown_fields=True):
    ts: float
    events: list
    data_parallel_rank: int | None = None


class BlockStored(msgspec.Struct, tag=True, forbid_unknown_fields=True):
    block_hashes: list[int]
    parent_block_hash: int | None
    token_ids: list[int]
    block_size: int
    lora_id: int | None
    medium: str | None
    lora_name: str | None


class BlockRemoved(msgspec.Struct, tag=True, forbid_unknown_fields=True):
    block_hashes: list[int]
    medium: str | None


class AllBlocksCleared(msgspec.Struct, tag=True, forbid_unknown_fields=True):
    pass


class KVEventBatch(EventBatch, array_like=True, forbid_unknown_fields=True):
    events: list[BlockStored | BlockRemoved | AllBlocksCleared]


decoder = msgspec.msgpack.Decoder(type=KVEventBatch)
END_SEQ = -1


def main() -> None:
    endpoint, replay_endpoint, topic = sys.argv[1], sys.argv[2], sys.argv[3].encode()
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.connect(endpoint)
    sub.setsockopt(zmq.SUBSCRIBE, topic)
    replay = ctx.socket(zmq.DEALER)
    replay.connect(replay_endpoint)

    cached: dict[int, list[int]] = {}  # hash -> tokens of its block
    ever_stored: set[int] = set()
    state = {"next_seq": 0, "batches": 0, "stored": 0, "removed": 0, "cleared": 0,
             "replayed": 0, "errors": []}

    def fail(message: str) -> None:
        state["errors"].append(message)

    def apply(seq: int, payload: bytes) -> None:
        batch = decoder.decode(payload)
        if batch.data_parallel_rank not in (None, 0):
            fail(f"rank {batch.data_parallel_rank}")
        state["batches"] += 1
        state["next_seq"] = seq + 1
        for event in batch.events:
            if isinstance(event, BlockStored):
                bs = event.block_size
                if len(event.token_ids) != bs * len(event.block_hashes):
                    fail(f"{len(event.token_ids)} tokens for {len(event.block_hashes)} blocks")
                if event.parent_block_hash is not None and event.parent_block_hash not in ever_stored:
                    fail(f"parent {event.parent_block_hash} never stored")
                if event.medium != "GPU" or event.lora_id is not None:
                    fail(f"medium {event.medium} lora {event.lora_id}")
                for i, h in enumerate(event.block_hashes):
                    if h in cached:
                        fail(f"{h} stored twice")
                    cached[h] = event.token_ids[i * bs:(i + 1) * bs]
                    ever_stored.add(h)
                state["stored"] += len(event.block_hashes)
            elif isinstance(event, BlockRemoved):
                for h in event.block_hashes:
                    if cached.pop(h, None) is None:
                        fail(f"removed {h}, not cached")
                state["removed"] += len(event.block_hashes)
            else:
                cached.clear()
                state["cleared"] += 1

    def fill_gap(upto: int) -> None:
        replay.send_multipart([b"", state["next_seq"].to_bytes(8, "big")])
        while True:
            if not replay.poll(5000):
                fail("replay timed out")
                return
            frames = replay.recv_multipart()
            if len(frames) != 4 or frames[0] != b"":
                fail(f"replay framing {len(frames)} frames")
                return
            seq = int.from_bytes(frames[2], "big", signed=True)
            if seq == END_SEQ:
                return
            if frames[1] != topic:
                fail("replay topic")
            if seq == state["next_seq"] and seq < upto:
                apply(seq, frames[3])
                state["replayed"] += 1

    print("ready", flush=True)
    poller = zmq.Poller()
    poller.register(sub, zmq.POLLIN)
    while True:
        for _ in poller.poll(50):
            frames = sub.recv_multipart()
            if len(frames) != 3 or frames[0] != topic or len(frames[1]) != 8:
                fail(f"live framing {len(frames)} frames")
                continue
            seq = int.from_bytes(frames[1], "big")
            if seq > state["next_seq"]:
                fill_gap(seq)
            if seq == state["next_seq"]:
                apply(seq, frames[2])
            elif seq > state["next_seq"]:
                fail(f"gap to {seq} not filled (at {state['next_seq']})")
        if select.select([sys.stdin], [], [], 0)[0]:
            line = sys.stdin.readline()
            if not line:
                return
            report = dict(state, cached={str(h): t for h, t in cached.items()})
            print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
