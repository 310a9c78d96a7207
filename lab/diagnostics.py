"""What goes on inside the tanh net while it trains: per hidden block, the tanh inputs, the fraction
of saturated units, and the gradient norm of the block's weights (``Diagnostics``, a probe that
train.py's runs carry unless ``--no-diagnostics``)."""

from __future__ import annotations

import torch

from lab.nets import TanhMLP
from lab.probe import Probe, Step
from lab.results import rounded
from lab.stats import mean_std

# A unit is saturated when its output is within 0.01 of its activation's bound: |tanh(z)| > 0.99, i.e.
# |z| > 2.65; for a sigmoid, output below 0.01 or above 0.99, i.e. |z| > logit(0.99) = 4.595.
SATURATED = 0.99
SIGMOID_Z_SATURATED = 4.595
QUANTILES = (0.15, 0.50, 0.85)  # as in Figure 1 of Ioffe & Szegedy (2015)
UNIT = 0  # the unit whose tanh input is followed on its own


class Diagnostics(Probe):
    """Per hidden block, at every step of the first epoch and the last step of each later one: what
    goes into each tanh, how much of it saturates, and how large the gradient of the block's Linear
    weight is.

    Forward hooks only read the tanh inputs of the training batch; nothing here touches the
    parameters, the gradients or any random generator, so training is the same with or without it.
    """

    name = "diagnostics"

    def __init__(self, net: TanhMLP):
        self.net = net
        self.latest: list[torch.Tensor | None] = [None] * len(net.blocks)
        self.handles = [
            block.act.register_forward_hook(lambda _m, inputs, _out, i=i: self._keep(i, inputs[0]))
            for i, block in enumerate(net.blocks)
        ]
        self.records: dict[str, list] = {"step": [], "saturation": [], "grad_norm": [], "layer_q": [], "unit_q": []}

    def _keep(self, i: int, z: torch.Tensor) -> None:
        if self.net.training:
            self.latest[i] = z.detach()

    def wants(self, step: Step) -> bool:
        return step.epoch == 0 or step.last_of_epoch

    def measure(self, step: Step, x, y, opt) -> None:
        self.record(step.number)

    @torch.no_grad()
    def record(self, step: int) -> None:
        """Call after backward and before the optimiser step: grads and tanh inputs are this step's."""
        z = torch.stack(self.latest).float()  # (blocks, batch, units)
        q = torch.tensor(QUANTILES, device=z.device)
        self.records["step"].append(step)
        self.records["saturation"].append((z.tanh().abs() > SATURATED).float().mean((1, 2)))
        self.records["grad_norm"].append(torch.stack([b.linear.weight.grad.norm() for b in self.net.blocks]).float())
        self.records["layer_q"].append(torch.quantile(z.flatten(1), q, dim=1).T)  # (blocks, 3)
        self.records["unit_q"].append(torch.quantile(z[:, :, UNIT], q, dim=1).T)  # (blocks, 3)

    def results(self) -> dict:
        for handle in self.handles:
            handle.remove()
        out = {"step": self.records["step"], "quantiles": list(QUANTILES), "unit": UNIT}
        for key in ("saturation", "grad_norm", "layer_q", "unit_q"):
            out[key] = rounded(torch.stack(self.records[key]).tolist()) if self.records[key] else []
        return out


def start_end(runs: list[dict], key: str, block: int, fmt: str) -> str:
    """A diagnostic of one block, mean over seeds, at the first recorded step → at the last."""
    return " → ".join(format(mean_std([run["diagnostics"][key][k][block] for run in runs])[0], fmt) for k in (0, -1))
