"""Speed and peak memory of our UNETR (ViT + UNETRHead) against ``monai.networks.nets.UNETR``.

Both are the paper configuration (ANCHORS.md 3.5: in 1, out 14, patch 16, feature size 16,
hidden 768, mlp 3072, 12 heads and layers, conv patch projection, instance norm, residual
blocks) on a (batch, 1, size, size, size) float32 volume, with MONAI's random weights copied
into ours (``convert_monai_unetr_state_dict``), so the two compute the same function:

* ``forward``: eval mode under ``torch.no_grad()``;
* ``forward_backward``: train mode, forward, the mean of the logits, backward.

The two are timed alternately, call after call, so that load from other processes hits both
alike. Each JSON line has the medians, ``ratio`` = MONAI's time / ours (above 1: ours is
faster) and the machine. Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` over one
extra call of each, after a reset (``ours_peak_mib`` / ``peer_peak_mib``); on CPU there is no
per-call allocator peak to read (tracemalloc does not see torch's allocations and the process
maxrss only grows), so memory is omitted (``null``).

    python benchmarks/bench_unetr.py [--device cuda] [--size 96] [--batch 1] [--repeats 10]
        [--out benchmarks/results/h200_unetr.jsonl]
"""
from __future__ import annotations

import argparse

import torch

from common import alternate, emit, machine


def build_pair(size: int, device: str):
    import toolbox  # noqa: F401  (registers the core)
    from monai.networks.nets import UNETR
    from toolbox.plugins import load_plugins
    from toolbox.registry import MODELS
    from toolbox_plugins.decode_heads.unetr_head import convert_monai_unetr_state_dict
    load_plugins()
    torch.manual_seed(0)
    peer = UNETR(1, 14, size, feature_size=16, hidden_size=768, mlp_dim=3072, num_heads=12,
                 proj_type='conv', norm_name='instance', res_block=True)
    backbone = MODELS.build(dict(type='ViT', in_channels=1, img_size=size))
    head = MODELS.build(dict(type='UNETRHead', in_channels=768, num_classes=14,
                             input_channels=1, feature_size=16, norm_cfg=dict(type='IN')))
    converted = convert_monai_unetr_state_dict(peer.state_dict())
    for prefix, module in (('backbone.', backbone), ('decode_head.', head)):
        module.load_state_dict({k[len(prefix):]: v for k, v in converted.items()
                                if k.startswith(prefix)}, strict=True)
    ours = torch.nn.ModuleDict(dict(backbone=backbone, head=head))
    return ours.to(device), peer.to(device)


def peak_mib(fn, device: str) -> float | None:
    """Peak CUDA memory (MiB) allocated during one call of ``fn``; ``None`` off CUDA."""
    if not device.startswith('cuda'):
        return None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return round(torch.cuda.max_memory_allocated() / 2 ** 20, 1)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--size', type=int, default=96, help='volume side, a multiple of 16')
    parser.add_argument('--batch', type=int, default=1)
    parser.add_argument('--repeats', type=int, default=10)
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--out', help='append the JSON lines to this file')
    args = parser.parse_args(argv)
    ours, peer = build_pair(args.size, args.device)
    x = torch.randn(args.batch, 1, args.size, args.size, args.size,
                    generator=torch.Generator().manual_seed(0)).to(args.device)
    sync = torch.cuda.synchronize if args.device.startswith('cuda') else (lambda: None)

    def ours_logits():
        return ours['head'](ours['backbone'](x), inputs=x)

    def ours_forward():
        with torch.no_grad():
            ours_logits()

    def peer_forward():
        with torch.no_grad():
            peer(x)

    def ours_backward():
        ours.zero_grad(set_to_none=True)
        ours_logits().mean().backward()

    def peer_backward():
        peer.zero_grad(set_to_none=True)
        peer(x).mean().backward()

    with torch.no_grad():
        error = (ours.eval()['head'](ours['backbone'](x), inputs=x) - peer.eval()(x)).abs().max()
    info = machine()
    for mode, train, fn_a, fn_b in (('forward', False, ours_forward, peer_forward),
                                    ('forward_backward', True, ours_backward, peer_backward)):
        ours.train(train)
        peer.train(train)
        a, b = alternate(fn_a, fn_b, args.repeats, args.warmup, sync)
        emit(dict(benchmark=f'unetr_{mode}', device=args.device, batch=args.batch,
                  size=args.size, repeats=args.repeats, ours='toolbox ViT + UNETRHead',
                  peer='monai.networks.nets.UNETR', ours_s=round(a, 4), peer_s=round(b, 4),
                  ratio=round(b / a, 3), ours_peak_mib=peak_mib(fn_a, args.device),
                  peer_peak_mib=peak_mib(fn_b, args.device),
                  max_abs_diff_eval=float(f'{error.item():.3g}'), machine=info), args.out)


if __name__ == '__main__':
    main()
