"""The peer a Quix Streams user would write: score each feature event with a bundle's source model.

Vendored from ``shared/peers/quix_app.py`` so a clean clone needs nothing beside it. It runs
in its own virtualenv (``make bench-peers``: quixstreams pins confluent-kafka<2.13, which
conflicts with streamapp's), so it imports nothing from streamapp:

    .peers-venv/bin/python quix_peer.py BOOTSTRAP GROUP FEATURES OUTPUT BUNDLE COUNT torch|numpy

It reads the bundle's MLP backbone (``backbone.pt``, a state_dict of Linear layers each
followed by ReLU), its source head (``head.npz``) and standardization (``manifest.json``),
scores every message on its own (Quix Streams has no batching) and writes
``{event_id, label}`` to OUTPUT with the wall clock as the record timestamp. It stops after
COUNT outputs or 10 s without input. The imports live in :func:`main`: pytest's doctest
collection imports this module in streamapp's environment, which has no quixstreams.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any

__all__ = ["main"]


def _layer_order(prefix: str) -> list[int | str]:
    """``layers.10`` after ``layers.2``."""
    return [int(x) if x.isdigit() else x for x in prefix.split(".")]


def _scorers(bundle: str) -> dict[str, Callable[[dict[str, Any]], dict[str, Any]]]:
    import numpy as np
    import torch
    from torch import nn

    with open(f"{bundle}/manifest.json") as f:
        manifest = json.load(f)
    state = torch.load(f"{bundle}/backbone.pt", weights_only=True)
    layers: list[nn.Module] = []
    prefixes = {k.rsplit(".", 1)[0] for k in state}
    for prefix in sorted(prefixes, key=_layer_order):
        weight = state[prefix + ".weight"].float()
        linear = nn.Linear(weight.shape[1], weight.shape[0])
        linear.weight.data, linear.bias.data = weight, state[prefix + ".bias"].float()
        layers += [linear, nn.ReLU()]
    net = nn.Sequential(*layers).eval()
    head = np.load(f"{bundle}/head.npz")
    coef = torch.tensor(head["coef"], dtype=torch.float32)
    bias = torch.tensor(head["intercept"], dtype=torch.float32)
    mean = torch.tensor(manifest["preprocessing"]["mean"], dtype=torch.float32)
    std = torch.tensor(manifest["preprocessing"]["std"], dtype=torch.float32)
    classes = manifest["classes"]
    np_layers = [
        (m.weight.detach().numpy().T.copy(), m.bias.detach().numpy().copy())
        for m in layers
        if isinstance(m, nn.Linear)
    ]
    np_coef, np_bias = coef.numpy().T.copy(), bias.numpy()
    np_mean, np_std = mean.numpy(), std.numpy()
    torch.set_num_threads(1)

    def score_torch(value: dict[str, Any]) -> dict[str, Any]:
        with torch.inference_mode():
            x = (torch.tensor(value["features"], dtype=torch.float32) - mean) / std
            scores = net(x.unsqueeze(0)) @ coef.T + bias
            return {"event_id": value["event_id"], "label": classes[int(scores.argmax())]}

    def score_numpy(value: dict[str, Any]) -> dict[str, Any]:
        x = (np.asarray(value["features"], np.float32) - np_mean) / np_std
        for weight, b in np_layers:
            x = np.maximum(x @ weight + b, 0)
        label = classes[int((x @ np_coef + np_bias).argmax())]
        return {"event_id": value["event_id"], "label": label}

    return {"torch": score_torch, "numpy": score_numpy}


def main(argv: list[str]) -> None:
    from quixstreams import Application

    bootstrap, group, src, dst, bundle, count, mode = argv[:7]
    app = Application(
        broker_address=bootstrap,
        consumer_group=group,
        auto_offset_reset="earliest",
        consumer_extra_config={"session.timeout.ms": 6000},
        loglevel="WARNING",
    )
    sdf = app.dataframe(app.topic(src, value_deserializer="json"))
    sdf = sdf.apply(_scorers(bundle)[mode])
    sdf = sdf.set_timestamp(lambda value, key, timestamp, headers: int(time.time() * 1000))
    sdf.to_topic(app.topic(dst, value_serializer="json"))
    app.run(count=int(count), timeout=10, collect=False)


if __name__ == "__main__":
    main(sys.argv[1:])
