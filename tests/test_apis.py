"""Inference API: a checkpoint and images in, predictions in the original image frame out."""
import cv2
import torch

from toolbox.apis import inference, init_model
from toolbox.engine import load_config

from .conftest import REPO_ROOT


def test_inference_on_paths_and_arrays_matches_and_uses_original_frame(tmp_path, demo_root):
    cfg = load_config(str(REPO_ROOT / 'configs/retinanet_r18_fpn_160_demo.py'))
    cfg.model.bbox_head.test_cfg = dict(score_thr=0.0, max_per_img=7)
    torch.manual_seed(0)
    model = init_model(cfg)
    ckpt = tmp_path / 'weights.pth'
    torch.save({'state_dict': model.state_dict()}, ckpt)
    reloaded = init_model(cfg, str(ckpt))
    path = f'{demo_root}/coco/val/val_00000.jpg'
    image = cv2.imread(path)
    big = cv2.resize(image, (320, 240))  # a differently sized image
    from_path, from_array, from_big = inference(reloaded, [path, image, big])
    torch.testing.assert_close(from_path.pred_instances.bboxes, from_array.pred_instances.bboxes)
    assert len(from_path.pred_instances.bboxes) == 7
    boxes = from_big.pred_instances.bboxes
    assert from_big.ori_shape == (240, 320)
    assert (boxes[:, 0::2] <= 320).all() and (boxes[:, 1::2] <= 240).all()
    # one image alone equals the same image batched with one of its size (no extra padding)
    single = inference(reloaded, path)
    pair = inference(reloaded, [path, image])[0]
    torch.testing.assert_close(single.pred_instances.scores, pair.pred_instances.scores)


def test_segmentation_inference_returns_a_map_of_the_original_size():
    import numpy as np
    model = init_model(str(REPO_ROOT / 'configs/deeplabv3plus_r18-d16_camvid.py'))
    image = np.random.RandomState(0).randint(0, 255, (70, 90, 3)).astype(np.uint8)
    result = inference(model, image)
    assert result.pred_sem_seg.data.shape == (1, 70, 90)
    assert result.pred_sem_seg.data.max() < 11
