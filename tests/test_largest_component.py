"""``keep_largest_component`` (the segmentor's ``test_cfg.keep_largest_component``): hand-built
label maps whose parts are known voxel by voxel, MONAI's ``KeepLargestConnectedComponent`` as
the reference, and the wiring through ``EncoderDecoder.predict``."""
import pytest
import torch
from monai.transforms import KeepLargestConnectedComponent

from toolbox.models.segmentors.encoder_decoder import keep_largest_component
from toolbox.structures import DataSample

from .test_volume_core import tiny_segmentor


def _two_part_volume():
    """(1, 6, 6, 6): label 1 a 2x2x2 cube touching a 2x2x2 cube of label 2; a lone voxel of
    each label elsewhere; a label-1 voxel touching the cube by one corner only."""
    pred = torch.zeros(1, 6, 6, 6, dtype=torch.long)
    pred[0, 0:2, 0:2, 0:2] = 1
    pred[0, 0:2, 0:2, 2:4] = 2
    pred[0, 5, 5, 5] = 1
    pred[0, 5, 0, 5] = 2
    pred[0, 2, 2, 2] = 1  # corner neighbour of the label-1 cube: 26-connected to it
    return pred


def test_independent_labels_keep_each_largest_part_with_full_connectivity():
    out = keep_largest_component(_two_part_volume(), applied_labels=(1, 2))
    expected = _two_part_volume()
    expected[0, 5, 5, 5] = expected[0, 5, 0, 5] = 0
    assert torch.equal(out, expected)
    assert (out == 1).sum() == 9 and (out == 2).sum() == 8


def test_union_keeps_the_largest_object_with_all_its_labels():
    pred = _two_part_volume()
    pred[0, 3:6, 3:6, 0] = 2  # a 9-voxel label-2 island: larger than the cube of label 2 alone
    independent = keep_largest_component(pred, applied_labels=(1, 2))
    assert (independent == 2).sum() == 9 and (independent[0, 0:2, 0:2, 2:4] == 0).all()
    union = keep_largest_component(pred, applied_labels=(1, 2), independent=False)
    assert (union[0, 0:2, 0:2, 0:4] > 0).all() and union[0, 2, 2, 2] == 1
    assert (union == 1).sum() + (union == 2).sum() == 17


def test_only_applied_labels_change_and_empty_maps_pass():
    pred = _two_part_volume()
    out = keep_largest_component(pred, applied_labels=(2,))
    assert out[0, 5, 5, 5] == 1 and out[0, 5, 0, 5] == 0
    empty = torch.zeros(1, 4, 4, dtype=torch.long)
    assert torch.equal(keep_largest_component(empty, applied_labels=(1,)), empty)


@pytest.mark.parametrize('independent', [True, False])
@pytest.mark.parametrize('shape', [(1, 9, 11, 7), (1, 13, 10)])
def test_equals_monai(shape, independent):
    gen = torch.Generator().manual_seed(len(shape) + independent)
    pred = torch.randint(0, 3, shape, generator=gen)
    pred[torch.rand(shape, generator=gen) < 0.75] = 0  # sparse: many separate parts
    reference = KeepLargestConnectedComponent(applied_labels=[1, 2], independent=independent,
                                              is_onehot=False)(pred.clone())
    out = keep_largest_component(pred, applied_labels=(1, 2), independent=independent)
    assert torch.equal(out, torch.as_tensor(reference))
    assert not torch.equal(out, pred)  # the case does remove parts


def test_segmentor_applies_it_to_the_labels_only():
    cfg = dict(mode='whole', keep_largest_component=dict(applied_labels=(1, 2)))
    cleaned, plain = tiny_segmentor(cfg).eval(), tiny_segmentor().eval()
    x = torch.randn(1, 1, 8, 8, 8, generator=torch.Generator().manual_seed(3))
    meta = dict(img_shape=(8, 8, 8), ori_shape=(8, 8, 8))
    with torch.no_grad():
        out = cleaned.predict(x, [DataSample(metainfo=meta)])[0]
        ref = plain.predict(x, [DataSample(metainfo=meta)])[0]
    assert torch.equal(out.seg_logits.data, ref.seg_logits.data)
    assert torch.equal(out.pred_sem_seg.data,
                       keep_largest_component(ref.pred_sem_seg.data, applied_labels=(1, 2)))
    with pytest.raises(ValueError, match='keep_largest_component'):
        tiny_segmentor(dict(mode='whole', keep_largest_component=dict(labels=(1,))))
    tiny_segmentor(dict(mode='sliding_window', roi_size=(8, 8, 8),
                        keep_largest_component=dict(applied_labels=(1,), independent=False)))
