"""Pinned numbers of the BCCD recipes: a change of head, assigner, loss or post-processing
semantics moves them.

Each recipe is built with seed 0 and run on one fixed synthetic batch (two images of 240x320
padded to 256x320, resized from 480x640). When these values were pinned, the same initial
weights gave exactly the losses and original-frame predictions (max difference 0.0) of the code
before the core-abstractions refactor; the initial weights themselves differ from that code's
because mmcv's ConvModule draws from the RNG while it is built.
"""
import pytest
import torch
from mmengine.structures import InstanceData

from toolbox.engine import load_config
from toolbox.registry import MODELS
from toolbox.structures import DataSample

from .conftest import REPO_ROOT


def fixed_batch():
    generator = torch.Generator().manual_seed(3)
    inputs = torch.randn(2, 3, 256, 320, generator=generator)
    samples = []
    for boxes, labels in (([[10, 20, 60, 80], [100, 40, 180, 140], [200, 150, 230, 180]],
                           [0, 1, 2]),
                          ([[30, 30, 90, 90]], [2])):
        sample = DataSample(metainfo=dict(img_shape=(240, 320), ori_shape=(480, 640),
                                          scale_factor=(0.5, 0.5), flip=False,
                                          batch_input_shape=(256, 320)))
        sample.gt_instances = InstanceData(bboxes=torch.tensor(boxes, dtype=torch.float32),
                                           labels=torch.tensor(labels))
        samples.append(sample)
    return inputs, samples


@pytest.mark.parametrize('config, losses, first_box', [
    ('refinedet_vgg16_320_bccd.py',
     dict(loss_arm_cls=11.736673, loss_arm_bbox=3.858497, loss_odm_cls=9.875497,
          loss_odm_bbox=2.774526), [194.672272, 328.921814, 279.366211, 480.0]),
    ('retinanet_r18_fpn_320_bccd.py',
     dict(loss_cls=1.130109, loss_bbox=0.926431), [241.749878, 295.712250, 328.976318,
                                                   340.811371]),
])
def test_bccd_recipe_losses_and_predictions_are_pinned(config, losses, first_box):
    cfg = load_config(str(REPO_ROOT / 'configs' / config))
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    inputs, samples = fixed_batch()
    model.eval()
    model.bbox_head.test_cfg.update(score_thr=0.0)
    with torch.no_grad():
        pred = model(inputs, samples, mode='predict')[0].pred_instances
    # the best box, mapped back to the 480x640 original image
    assert pred.bboxes[0].tolist() == pytest.approx(first_box, rel=1e-4)
    model.train()
    got = {k: v.item() for k, v in model(inputs, samples, mode='loss').items()}
    assert got == pytest.approx(losses, rel=1e-4)
