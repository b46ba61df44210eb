"""Base of the toolbox's model compositions: mmengine ``BaseModel`` plus a finite-loss check."""
import torch
from mmengine.model import BaseModel


class ToolboxModel(BaseModel):
    """``BaseModel`` whose ``parse_losses`` stops on a non-finite loss and names the term.

    A NaN/Inf loss would otherwise be back-propagated into every weight before any log line
    shows it; failing at once, with the term's name, keeps the checkpoint on disk usable.
    """

    def parse_losses(self, losses: dict):
        for name, value in losses.items():
            values = value if isinstance(value, (list, tuple)) else [value]
            for v in values:
                if isinstance(v, torch.Tensor) and not torch.isfinite(v).all():
                    raise FloatingPointError(
                        f'loss term {name!r} is not finite ({v.detach().float().cpu().tolist()});'
                        f' lower the learning rate, check the data (tools/check_dataset.py), or '
                        f'enable or tighten gradient clipping (optim_wrapper.clip_grad)')
        return super().parse_losses(losses)
