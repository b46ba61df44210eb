"""Speed and peak memory of our UNETR (ViT + UNETRHead) against ``monai.networks.nets.UNETR``.

Both are the paper configuration (ANCHORS.md 3.5: in 1, out 14, patch 16, feature size 16,
hidden 768, mlp 3072, 12 heads and layers, conv patch projection, instance norm, residual
blocks) on a (batch, 1, size, size, size) float32 volume, with MONAI's random weights copied
into ours (``convert_monai_unetr_state_dict``), so the two compute the same function:

* ``forward``: eval mode under ``torch.no_grad()``;
* ``forward_backward``: train mode, forward, the mean of the logits, backward.

The two are timed alternately, call after call, so that load from other processes hits both
alike. Each JSON line has the medians, ``ratio`` = MONAI's time / ours (above 1: ours is
faster) and the machine. Peak memory (``ours_peak_mib`` / ``peer_peak_mib``, MiB above the
built model, so weights excluded and gradients included): on CUDA
``torch.cuda.max_memory_allocated`` over one extra call of each, after a reset; on CPU the peak
resident set of one call in a child process per model (``common.reset_peak_rss``), since CPU
allocations have no per-call counter.

    python benchmarks/bench_unetr.py [--device cuda] [--size 96] [--batch 1] [--repeats 10]
        [--out benchmarks/results/h200_unetr.jsonl]
"""
from __future__ import annotations

import argparse

import torch

from common import alternate, child_peak_mib, emit, machine

MEMORY_CHILD = '''
import torch
from bench_unetr import build_one, call
from common import peak_rss_mib_above, reset_peak_rss
who, mode, size, batch = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
model = build_one(who, size)  # only the measured model in this process
x = torch.randn(batch, 1, size, size, size, generator=torch.Generator().manual_seed(0))
base = reset_peak_rss()
call(model, x, mode)
print(peak_rss_mib_above(base))
'''


def build_one(who: str, size: int) -> torch.nn.Module:
    """Our UNETR (a ModuleDict of backbone and head) or MONAI's, paper configuration, random
    weights."""
    import toolbox  # noqa: F401  (registers the core)
    from monai.networks.nets import UNETR
    from toolbox.plugins import load_plugins
    from toolbox.registry import MODELS
    load_plugins()
    if who == 'peer':
        return UNETR(1, 14, size, feature_size=16, hidden_size=768, mlp_dim=3072, num_heads=12,
                     proj_type='conv', norm_name='instance', res_block=True)
    backbone = MODELS.build(dict(type='ViT', in_channels=1, img_size=size))
    head = MODELS.build(dict(type='UNETRHead', in_channels=768, num_classes=14,
                             input_channels=1, feature_size=16, norm_cfg=dict(type='IN')))
    return torch.nn.ModuleDict(dict(backbone=backbone, head=head))


def build_pair(size: int, device: str):
    """(ours, MONAI's) with MONAI's random weights copied into ours."""
    from toolbox_plugins.decode_heads.unetr_head import convert_monai_unetr_state_dict
    torch.manual_seed(0)
    peer, ours = build_one('peer', size), build_one('ours', size)
    converted = convert_monai_unetr_state_dict(peer.state_dict())
    for prefix, name in (('backbone.', 'backbone'), ('decode_head.', 'head')):
        ours[name].load_state_dict({k[len(prefix):]: v for k, v in converted.items()
                                    if k.startswith(prefix)}, strict=True)
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


def call(model: torch.nn.Module, x: torch.Tensor, mode: str) -> None:
    """One ``forward`` (eval, no grad) or ``forward_backward`` (train, mean of the logits) of
    ours (a ModuleDict of backbone and head) or MONAI's UNETR."""
    model.train(mode == 'forward_backward')
    with torch.set_grad_enabled(mode == 'forward_backward'):
        logits = model['head'](model['backbone'](x), inputs=x) \
            if isinstance(model, torch.nn.ModuleDict) else model(x)
    if mode == 'forward_backward':
        logits.mean().backward()


def cpu_peak_mib(who: str, mode: str, size: int, batch: int) -> float:
    """Peak resident set (MiB) of one call in a fresh process, above the built model."""
    return child_peak_mib(MEMORY_CHILD, who, mode, size, batch)


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

    def memory(fn, who, mode):
        if args.device.startswith('cuda'):
            return peak_mib(fn, args.device)
        return cpu_peak_mib(who, mode, args.size, args.batch)

    for mode, train, fn_a, fn_b in (('forward', False, ours_forward, peer_forward),
                                    ('forward_backward', True, ours_backward, peer_backward)):
        ours.train(train)
        peer.train(train)
        a, b = alternate(fn_a, fn_b, args.repeats, args.warmup, sync)
        emit(dict(benchmark=f'unetr_{mode}', device=args.device, batch=args.batch,
                  size=args.size, repeats=args.repeats, ours='toolbox ViT + UNETRHead',
                  peer='monai.networks.nets.UNETR', ours_s=round(a, 4), peer_s=round(b, 4),
                  ratio=round(b / a, 3), ours_peak_mib=memory(fn_a, 'ours', mode),
                  peer_peak_mib=memory(fn_b, 'peer', mode),
                  max_abs_diff_eval=float(f'{error.item():.3g}'), machine=info), args.out)


if __name__ == '__main__':
    main()
