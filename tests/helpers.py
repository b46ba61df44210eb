"""Helpers shared by the tests."""
import torch
from torch import nn


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def randomise_bn(model: nn.Module, seed: int = 0, conv_bias: bool = False) -> nn.Module:
    """Non-trivial BN statistics and affines (and conv biases with ``conv_bias``), so that an
    eval-mode parity test is not carried by identity norms. Returns ``model``."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
            elif conv_bias and isinstance(m, nn.Conv2d) and m.bias is not None:
                m.bias.copy_(torch.randn(m.out_channels, generator=gen))
    return model


def load_tool(relative_path: str):
    """A script under tools/ (e.g. ``'train.py'``, ``'analysis/get_flops.py'``) imported by path
    as a module, so that a test can call its ``main(argv)`` / ``parse_args(argv)``."""
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parents[1] / 'tools' / relative_path
    name = 'tool_' + relative_path.replace('/', '_').removesuffix('.py')
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def assert_one_sgd_step_is_finite(model: nn.Module, batch: dict) -> dict:
    """One ``train_step`` of ``model`` (train mode) on a collated ``batch`` with SGD lr 1e-3;
    asserts a positive total loss and finite logged values. Returns the log dict."""
    from mmengine.optim import OptimWrapper
    model.train()
    log_vars = model.train_step(batch, OptimWrapper(torch.optim.SGD(model.parameters(), lr=1e-3)))
    values = torch.stack([torch.as_tensor(v).detach().float() for v in log_vars.values()])
    assert log_vars['loss'] > 0 and torch.isfinite(values).all()
    return log_vars
