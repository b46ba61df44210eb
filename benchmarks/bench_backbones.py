"""Speed and memory of our backbones against timm's same architecture, measured in the same run.

For each pair below, both models compute the same feature maps (timm built with
``features_only=True``; ours with the matching ``out_indices``) on a (batch, 3, size, size)
input, in float32:

* ``forward``: eval mode under ``torch.no_grad()``;
* ``forward_backward``: train mode, forward, ``sum(map.mean())`` and backward.

Each JSON line has the median seconds per call of ours and timm's: the two are timed alternately
(``--repeats`` rounds after ``--warmup``, each round ``--inner`` calls of ours then of timm's), so
that clock and load drift hit both alike; the H200 rows of the first version (each model's
repeats in one block, 5 single calls) differed by up to 1.34x between op-for-op identical
ResNet-50s. ``ratio`` = timm time / our time (above 1: ours is faster), ``ratio_iqr`` the
quartiles of the per-round ratios (the spread the median carries); also the parameter counts and
the peak memory of one call: on CUDA ``torch.cuda.max_memory_allocated`` (weights included), on
the CPU the peak resident set above the built model in a child process per model
(``common.child_peak_mib``; tracemalloc does not see torch's allocations).

    python benchmarks/bench_backbones.py [--device cuda] [--size 512] [--batch 2]
        [--repeats 10] [--inner 1] [--only Xception ...] [--out benchmarks/results/FILE.jsonl]

A backbone that is not registered (its plugin missing) or a timm model that this timm lacks is
skipped with a note on stderr.
"""
from __future__ import annotations

import argparse
import statistics
import sys

import torch

from common import alternate_samples, child_peak_mib, emit, machine, ratio_quartiles

MEMORY_CHILD = '''
import torch
from bench_backbones import PAIRS, build_ours, build_timm, make_call
from common import peak_rss_mib_above, reset_peak_rss
name, who, size, batch, backward = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:])
_, ours_cfg, timm_name, timm_kwargs = next(p for p in PAIRS if p[0] == name)
model = build_ours(ours_cfg) if who == 'ours' else build_timm(timm_name, timm_kwargs, size)
x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
call = make_call(model, x, bool(backward), 1)
base = reset_peak_rss()  # the built model and the input are not the call's
call()
print(peak_rss_mib_above(base))
'''

# (name, our config, timm model name, timm create_model keywords). Ours and timm's return the
# same maps: ResNet C2-C5; Xception-65 at output stride 32 and Xception every feature point
# (stride 2-32); VoVNet's four stage outputs; Swin-T's four stage outputs (timm's un-normed and
# channels-last, ours normed and NCHW; the second Swin-T row adds the norms and the layout to
# timm's).
PAIRS = [
    ('ResNet-50', dict(type='ResNet', depth=50, out_indices=(0, 1, 2, 3)),
     'resnet50', dict(out_indices=(1, 2, 3, 4))),
    ('AlignedXception-65', dict(type='AlignedXception', depth=65, output_stride=32,
                                out_indices=(0, 1, 2, 3, 4)),
     'xception65', dict(out_indices=(0, 1, 2, 3, 4))),
    ('Xception', dict(type='Xception', out_indices=(0, 1, 2, 3, 4), stem_padding='valid'),
     'legacy_xception', dict(out_indices=(0, 1, 2, 3, 4))),
    ('VoVNet-39', dict(type='VoVNet', arch='V-39', version=1, out_indices=(0, 1, 2, 3)),
     'vovnet39a', dict(out_indices=(1, 2, 3, 4))),
    ('Swin-T', dict(type='SwinTransformer', arch='T', drop_path_rate=0.0,
                    out_indices=(0, 1, 2, 3)),
     'swin_tiny_patch4_window7_224', dict(out_indices=(0, 1, 2, 3), drop_path_rate=0.0)),
    # like for like: timm's maps through the LayerNorm per output and into the NCHW layout
    # that ours returns (and a convolutional neck takes)
    ('Swin-T normed NCHW', dict(type='SwinTransformer', arch='T', drop_path_rate=0.0,
                                out_indices=(0, 1, 2, 3)),
     'swin_tiny_patch4_window7_224', dict(out_indices=(0, 1, 2, 3), drop_path_rate=0.0,
                                          normed_nchw=True)),
]


class NormedNCHW(torch.nn.Module):
    """A timm ``features_only`` Swin whose (B, H, W, C) maps each go through a LayerNorm and
    become contiguous (B, C, H, W), as our ``SwinTransformer`` returns them."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.norms = torch.nn.ModuleList(torch.nn.LayerNorm(c)
                                         for c in model.feature_info.channels())

    def forward(self, x):
        return [norm(f).permute(0, 3, 1, 2).contiguous()
                for norm, f in zip(self.norms, self.model(x))]


def note(message: str) -> None:
    print(f'[bench_backbones] {message}', file=sys.stderr, flush=True)


def build_ours(cfg: dict):
    """Our backbone, or None (with a note) if its type is not registered."""
    import toolbox  # noqa: F401  (registers the core)
    from toolbox.plugins import load_plugins
    from toolbox.registry import MODELS
    load_plugins()
    if cfg['type'] not in MODELS.module_dict:
        note(f"skipped {cfg['type']}: not registered (its plugin is not installed yet)")
        return None
    return MODELS.build(dict(cfg))


def build_timm(name: str, kwargs: dict, size: int):
    """timm's ``features_only`` model, or None (with a note) if this timm lacks it."""
    import timm
    if name not in timm.list_models(name):
        note(f'skipped timm {name}: not in timm {timm.__version__}')
        return None
    kwargs = dict(kwargs)
    normed_nchw = kwargs.pop('normed_nchw', False)
    if name.startswith('swin'):
        kwargs['img_size'] = size  # its attention masks are built for one size
    model = timm.create_model(name, pretrained=False, features_only=True, **kwargs)
    return NormedNCHW(model) if normed_nchw else model


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def make_call(model, x: torch.Tensor, backward: bool, inner: int):
    """``inner`` forward calls (eval, no_grad) or forward+backward calls (train), synchronised
    on CUDA at the end; sets the model's mode."""
    cuda = x.device.type == 'cuda'
    model.train(backward)

    def call():
        for _ in range(inner):
            if backward:
                model.zero_grad(set_to_none=True)
                sum(out.float().mean() for out in model(x)).backward()
            else:
                with torch.no_grad():
                    model(x)
        if cuda:
            torch.cuda.synchronize()
    return call


def peak_mib(name: str, who: str, model, x: torch.Tensor, backward: bool) -> float:
    """Peak memory of one call in MiB: CUDA allocations (weights included), or on the CPU the
    resident set above the built model in a child process that builds only ``who``."""
    if x.device.type != 'cuda':
        return child_peak_mib(MEMORY_CHILD, name, who, x.shape[-1], x.shape[0], int(backward))
    call = make_call(model, x, backward, 1)
    model.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    call()
    return round(torch.cuda.max_memory_allocated() / 2 ** 20, 1)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--size', type=int, default=512, help='input height and width')
    parser.add_argument('--batch', type=int, default=2)
    parser.add_argument('--repeats', type=int, default=10)
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--inner', type=int, default=1,
                        help='calls per timed repeat (e.g. 20 on a GPU, where one call is '
                             'a few ms)')
    parser.add_argument('--only', nargs='+', metavar='NAME',
                        help=f'a subset of {[p[0] for p in PAIRS]}')
    parser.add_argument('--out', help='append the JSON lines to this file')
    args = parser.parse_args(argv)
    if args.device.startswith('cuda'):
        torch.backends.cudnn.benchmark = True  # both sides pick their fastest kernels
    info = machine()
    unknown = set(args.only or ()) - {p[0] for p in PAIRS}
    if unknown:
        parser.error(f'--only: unknown names {sorted(unknown)}; choose from '
                     f'{[p[0] for p in PAIRS]}')
    for name, ours_cfg, timm_name, timm_kwargs in PAIRS:
        if args.only and name not in args.only:
            continue
        torch.manual_seed(0)
        ours = build_ours(ours_cfg)
        peer = build_timm(timm_name, timm_kwargs, args.size)
        if ours is None or peer is None:
            continue
        ours, peer = ours.to(args.device), peer.to(args.device)
        x = torch.randn(args.batch, 3, args.size, args.size, device=args.device,
                        generator=torch.Generator(args.device).manual_seed(0))
        for mode, backward in (('forward', False), ('forward_backward', True)):
            ours_call = make_call(ours, x, backward, args.inner)
            peer_call = make_call(peer, x, backward, args.inner)
            ours_times, peer_times = alternate_samples(ours_call, peer_call, args.repeats,
                                                       args.warmup)
            ours_s, peer_s = (statistics.median(t) / args.inner
                              for t in (ours_times, peer_times))
            extra = ' + output LayerNorms, NCHW' if 'normed_nchw' in timm_kwargs else ''
            emit(dict(benchmark=f'backbone_{mode}', backbone=name, ours=ours_cfg['type'],
                      peer=f'timm {timm_name} (features_only{extra})', device=args.device,
                      batch=args.batch, size=args.size, repeats=args.repeats,
                      inner=args.inner, ours_s=round(ours_s, 5), peer_s=round(peer_s, 5),
                      ratio=round(peer_s / ours_s, 3),
                      ratio_iqr=ratio_quartiles(ours_times, peer_times),
                      ours_peak_mib=peak_mib(name, 'ours', ours, x, backward),
                      peer_peak_mib=peak_mib(name, 'peer', peer, x, backward),
                      ours_params=n_params(ours), peer_params=n_params(peer), machine=info),
                 args.out)
        del ours, peer
        if args.device.startswith('cuda'):
            torch.cuda.empty_cache()


if __name__ == '__main__':
    main()
