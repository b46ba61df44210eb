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


def test_batched_detection_predicts_nothing_in_the_padding_of_a_smaller_image(demo_root):
    """Two images of different sizes in one call: the smaller one is padded to the larger; no
    detection of it may come from (or lie in) that padding, none may be empty after clipping,
    and the larger (unpadded) image gets exactly its single-image result."""
    cfg = load_config(str(REPO_ROOT / 'configs/retinanet_r18_fpn_160_demo.py'))
    cfg.model.bbox_head.test_cfg = dict(score_thr=0.0, max_per_img=300)
    torch.manual_seed(0)
    model = init_model(cfg)
    image = cv2.imread(f'{demo_root}/coco/val/val_00000.jpg')
    small = image[:image.shape[0] // 2, :image.shape[1] // 3]
    big_result, small_result = inference(model, [image, small])
    h, w = small.shape[:2]
    boxes = small_result.pred_instances.bboxes
    assert len(boxes) > 0
    assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
    assert (boxes[:, 0::2] <= w).all() and (boxes[:, 1::2] <= h).all()
    alone = inference(model, image)
    torch.testing.assert_close(big_result.pred_instances.bboxes, alone.pred_instances.bboxes,
                               atol=1e-4, rtol=0)
    torch.testing.assert_close(big_result.pred_instances.scores, alone.pred_instances.scores,
                               atol=1e-4, rtol=0)


def test_dense_head_scores_in_the_padding_never_become_detections():
    """A RetinaNet head whose only confident locations lie in the padding (anchor centres
    beyond ``img_shape``) predicts nothing for that image, and the same scores inside the
    image give detections."""
    from toolbox.registry import MODELS
    head = MODELS.build(dict(
        type='RetinaHead', num_classes=2, in_channels=8, feat_channels=8, stacked_convs=0,
        anchor_generator=dict(type='AnchorGenerator', octave_base_scale=4, scales_per_octave=1,
                              ratios=[1.0], strides=[8]),
        test_cfg=dict(score_thr=0.5, nms_pre=100, iou_threshold=0.5, max_per_img=100)))
    logits = torch.full((1, 2, 8, 8), -10.0)  # a 64x64 padded input, stride 8
    logits[0, 0, 5:, 5:] = 10.0  # confident only at cells centred beyond 40 px
    deltas = torch.zeros(1, 4, 8, 8)
    padded = head.predict_by_feat([logits], [deltas], [dict(img_shape=(40, 40))])[0]
    whole = head.predict_by_feat([logits], [deltas], [dict(img_shape=(64, 64))])[0]
    assert len(padded) == 0
    assert len(whole) > 0
