"""Time one ε-Seg training step (forward + EpsSegLoss + backward + Adamax step) on the CPU.

Usage: python benchmarks/train_step.py [--batch 32] [--filters 64] [--blocks 5] [--levels 3] [--dims 2] [--steps 3]
                                      [--channels-last] [--amp] [--crop]
Prints the median seconds per step and patches per second for the given network size. With ``--amp`` it
times float32 and bfloat16 autocast steps (``AutocastInferer``, the bundle's ``--train_amp``) alternately in
the same run and prints the speed-up ratio. With ``--crop`` it also times a copy of the network that
reconstructs only the inpainted centre (``EpsSegHVAE(reconstruct_center=1)``, the bundle's
``--reconstruct_center``), alternately with the whole-patch reconstruction, and prints that ratio.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from epsseg_monai.inferers import AutocastInferer
from epsseg_monai.losses import EpsSegLoss
from epsseg_monai.networks import EpsSegHVAE
from epsseg_monai.utils import center_region_slices


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--filters", type=int, default=64)
    parser.add_argument("--blocks", type=int, default=5)
    parser.add_argument("--levels", type=int, default=3)
    parser.add_argument("--latent", type=int, default=32)
    parser.add_argument("--patch", type=int, default=64)
    parser.add_argument("--dims", type=int, default=2, choices=(2, 3))
    parser.add_argument("--classes", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--channels-last", action="store_true", help="channels-last memory format (faster on CPU)")
    parser.add_argument("--amp", action="store_true", help="also time bfloat16 autocast steps and print the ratio")
    parser.add_argument(
        "--crop", action="store_true", help="also time reconstruct_center=1 (centre-only decoder) and print the ratio"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)

    def make_net(reconstruct_center: int | None) -> EpsSegHVAE:
        return EpsSegHVAE(
            args.dims,
            1,
            args.classes,
            num_levels=args.levels,
            num_filters=args.filters,
            num_blocks=args.blocks,
            latent_channels=args.latent,
            patch_size=args.patch,
            reconstruct_center=reconstruct_center,
        )

    nets = {"whole patch": make_net(None)}
    if args.crop:
        nets["centre only"] = make_net(1)
        nets["centre only"].load_state_dict(nets["whole patch"].state_dict())
    loss_fn = EpsSegLoss()
    shape = (args.batch, 1) + (args.patch,) * args.dims
    target = torch.randn(shape)
    masked = target.clone()
    masked[(slice(None), slice(None)) + center_region_slices(shape[2:], 1)] = 0
    labels = torch.arange(args.batch) % args.classes + 1
    if args.channels_last:
        fmt = torch.channels_last if args.dims == 2 else torch.channels_last_3d
        nets = {name: net.to(memory_format=fmt) for name, net in nets.items()}
        target, masked = target.contiguous(memory_format=fmt), masked.contiguous(memory_format=fmt)
    optimizers = {name: torch.optim.Adamax(net.parameters(), lr=3e-5) for name, net in nets.items()}

    precisions = {"float32": AutocastInferer(False)}
    if args.amp:
        precisions["bfloat16"] = AutocastInferer(True)
    cases = [(net_name, name) for net_name in nets for name in precisions]
    times: dict[tuple[str, str], list[float]] = {case: [] for case in cases}
    for _ in range(args.steps + 1):  # alternate the cases so that all see the same machine load
        for net_name, name in cases:
            net, opt = nets[net_name], optimizers[net_name]
            start = time.perf_counter()
            terms = loss_fn(precisions[name](masked, net), target, labels)
            opt.zero_grad()
            terms["loss"].backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
            times[(net_name, name)].append(time.perf_counter() - start)
    params = sum(p.numel() for p in nets["whole patch"].parameters())
    steps = {case: statistics.median(t[1:]) for case, t in times.items()}  # the first step warms up allocators
    for (net_name, name), step in steps.items():
        print(
            f"{args.dims}D patch {args.patch}, batch {args.batch}, filters {args.filters}, blocks {args.blocks}, "
            f"levels {args.levels}, params {params / 1e6:.2f} M, threads {torch.get_num_threads()}, "
            f"channels-last {args.channels_last}, reconstruction {net_name}, {name}: "
            f"{step:.2f} s/step, {args.batch / step:.3g} patches/s"
        )
    for net_name in nets:
        if args.amp:
            ratio = steps[(net_name, "float32")] / steps[(net_name, "bfloat16")]
            print(f"reconstruction {net_name}: bfloat16 / float32 speed: {ratio:.2f}x")
    if args.crop:
        for name in precisions:
            ratio = steps[("whole patch", name)] / steps[("centre only", name)]
            print(f"{name}: centre-only / whole-patch reconstruction speed: {ratio:.2f}x")


if __name__ == "__main__":
    main()
