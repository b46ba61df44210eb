"""DETR (Carion et al. 2020) against ``transformers.DetrForObjectDetection`` and by hand.

The reference is built offline with random weights (``use_timm_backbone=False``: transformers'
own ResNet-50); its weights are copied into ours through the state-dict map of ANCHORS.md 3.3
(:func:`hf_to_ours`). Found on the way (asserted below, so a transformers change shows up):

* transformers' decoder with ``auxiliary_loss=True`` feeds the *layer-normed* output of each
  layer to the next layer and normalises the last one twice; the official DETR (and ours)
  normalises only the copies used by the heads. With ``auxiliary_loss=False`` both are the
  official computation, so the eval-mode parity of the network uses that setting, and the
  criterion (with auxiliary losses) is compared on the same predictions.
* transformers freezes its own ResNet completely (it looks for ``'stage.1'`` in names that
  read ``'stages.1'``): 18,069,856 trainable parameters instead of DETR's 41,302,368.
"""
import math
import re

import pytest
import torch
from mmengine.structures import InstanceData
from torchvision.ops import box_convert

import toolbox_plugins.necks.channel_mapper  # noqa: F401  (registers ChannelMapper)
from toolbox.engine import load_config
from toolbox.registry import MODELS
from toolbox.structures import DataSample

from .conftest import REPO_ROOT

from transformers import DetrConfig, DetrForObjectDetection  # noqa: E402
from transformers.loss.loss_for_object_detection import (  # noqa: E402
    ForObjectDetectionLoss, HungarianMatcher)

NUM_CLASSES = 91  # COCO's max id + 1, as DETR


def build_ours(config='configs/detr_r50_8xb2-150e_coco.py', num_classes=NUM_CLASSES):
    cfg = load_config(str(REPO_ROOT / config))
    cfg.model.bbox_head.num_classes = num_classes
    cfg.model.backbone.pretrained = None
    return MODELS.build(cfg.model)


def build_head(num_classes=NUM_CLASSES):
    """The recipe's DETR head alone (the criterion and post-processing tests need no network)."""
    cfg = load_config(str(REPO_ROOT / 'configs/detr_r50_8xb2-150e_coco.py'))
    cfg.model.bbox_head.num_classes = num_classes
    return MODELS.build(cfg.model.bbox_head)


def build_theirs(auxiliary_loss=False, dropout=0.1):
    config = DetrConfig(use_timm_backbone=False, use_pretrained_backbone=False,
                        num_labels=NUM_CLASSES, auxiliary_loss=auxiliary_loss, dropout=dropout,
                        attention_dropout=dropout, activation_dropout=dropout)
    return DetrForObjectDetection(config)


def hf_to_ours(hf_state: dict) -> dict:
    """transformers DETR state dict -> ours (ANCHORS.md 3.3, with transformers' ResNet)."""
    out = {}
    qkv = {}
    for key, value in hf_state.items():
        k = key
        k = k.replace('model.backbone.model.embedder.embedder.convolution', 'backbone.conv1')
        k = k.replace('model.backbone.model.embedder.embedder.normalization', 'backbone.bn1')
        m = re.match(r'model\.backbone\.model\.encoder\.stages\.(\d+)\.layers\.(\d+)\.(.*)', k)
        if m:
            stage, block, rest = int(m[1]), m[2], m[3]
            rest = re.sub(r'layer\.(\d)\.convolution',
                          lambda g: f'conv{int(g[1]) + 1}', rest)
            rest = re.sub(r'layer\.(\d)\.normalization', lambda g: f'bn{int(g[1]) + 1}', rest)
            rest = rest.replace('shortcut.convolution', 'downsample.0')
            rest = rest.replace('shortcut.normalization', 'downsample.1')
            k = f'backbone.layer{stage + 1}.{block}.{rest}'
        k = k.replace('model.input_projection', 'neck.convs.0.conv')
        k = k.replace('model.query_position_embeddings', 'query_embedding')
        k = k.replace('model.decoder.layernorm', 'decoder.post_norm')
        k = k.replace('class_labels_classifier', 'bbox_head.fc_cls')
        k = k.replace('bbox_predictor', 'bbox_head.reg_ffn')
        k = k.replace('model.encoder.', 'encoder.').replace('model.decoder.', 'decoder.')
        k = k.replace('.encoder_attn.', '.cross_attn.').replace('.o_proj.', '.out_proj.')
        k = k.replace('.mlp.fc1.', '.ffn.linear1.').replace('.mlp.fc2.', '.ffn.linear2.')
        k = k.replace('self_attn_layer_norm', 'norm1')
        k = k.replace('encoder_attn_layer_norm', 'norm2')
        if k.startswith('encoder.'):
            k = k.replace('final_layer_norm', 'norm2')
        k = k.replace('final_layer_norm', 'norm3')
        m = re.match(r'(.*)\.([qkv])_proj\.(weight|bias)$', k)
        if m:
            qkv.setdefault((m[1], m[3]), {})[m[2]] = value
            continue
        out[k] = value
    for (prefix, kind), parts in qkv.items():
        out[f'{prefix}.in_proj_{kind}'] = torch.cat([parts['q'], parts['k'], parts['v']])
    return out


@pytest.fixture(scope='module')
def pair():
    """(ours, theirs) in eval mode with identical random weights; frozen-BN buffers and
    LayerNorm affines randomised too (fresh ones are the identity and would hide mistakes)."""
    torch.manual_seed(0)
    theirs = build_theirs(auxiliary_loss=False).eval()
    with torch.no_grad():
        for name, buf in theirs.named_buffers():
            if name.endswith(('running_mean', 'bias')):
                buf.copy_(torch.randn_like(buf) * 0.1)
            elif name.endswith(('running_var', 'weight')):
                buf.copy_(torch.rand_like(buf) * 0.5 + 0.75)
        for name, param in theirs.named_parameters():  # trained-like LayerNorms
            if 'layer_norm' in name or 'layernorm' in name:
                param.copy_(torch.randn_like(param) * 0.2 + float(name.endswith('weight')))
    ours = build_ours().eval()
    missing, unexpected = ours.load_state_dict(hf_to_ours(theirs.state_dict()), strict=False)
    assert not unexpected and all(k.endswith('num_batches_tracked') for k in missing), \
        (missing, unexpected)
    return ours, theirs


def sample(boxes, labels, img_shape, batch_input_shape=None, scale_factor=(1.0, 1.0),
           ori_shape=None):
    data_sample = DataSample(metainfo=dict(
        img_shape=img_shape, ori_shape=ori_shape or img_shape, scale_factor=scale_factor,
        batch_input_shape=batch_input_shape or img_shape))
    data_sample.gt_instances = InstanceData(
        bboxes=torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        labels=torch.tensor(labels, dtype=torch.long))
    return data_sample


def hf_labels(samples):
    """Our samples (xyxy pixels) -> transformers' targets (cxcywh normalised by img_shape)."""
    targets = []
    for s in samples:
        h, w = s.img_shape
        boxes = box_convert(s.gt_instances.bboxes, 'xyxy', 'cxcywh') / torch.tensor([w, h, w, h])
        targets.append(dict(class_labels=s.gt_instances.labels, boxes=boxes))
    return targets


BATCH_SHAPE = (128, 160)
SAMPLES = [sample([[10, 20, 60, 90], [30, 30, 100, 120], [90, 5, 150, 60]], [3, 7, 90],
                  (128, 160)),
           sample([[5, 5, 40, 50]], [1], (96, 128), batch_input_shape=BATCH_SHAPE)]


def padded_inputs(seed=1):
    """(2, 3, 128, 160) normalised images, the second one 96 x 128 padded with zeros."""
    g = torch.Generator().manual_seed(seed)
    inputs = torch.randn(2, 3, *BATCH_SHAPE, generator=g)
    inputs[1, :, 96:] = 0
    inputs[1, :, :, 128:] = 0
    return inputs


# ------------------------------------------------------------------ parameter counts
def test_detr_r50_has_the_official_parameter_counts():
    model = build_ours()
    # ANCHORS.md 3.3: frozen BN (no parameters), frozen conv1 + layer1
    assert sum(p.numel() for p in model.parameters()) == 41_524_768
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 41_302_368
    r101 = build_ours('configs/detr_r101_8xb2-500e_coco.py')
    assert sum(p.numel() for p in r101.parameters()) == 60_464_672
    assert sum(p.numel() for p in r101.parameters() if p.requires_grad) == 60_242_272
    theirs = build_theirs()
    assert sum(p.numel() for p in theirs.parameters()) == 41_524_768
    # transformers freezes its whole ResNet (see the module docstring)
    assert sum(p.numel() for p in theirs.parameters() if p.requires_grad) == 18_069_856


# ------------------------------------------------------------------ network parity
def test_eval_outputs_equal_transformers_on_a_padded_batch(pair):
    ours, theirs = pair
    inputs = padded_inputs()
    pixel_mask = torch.zeros(2, *BATCH_SHAPE, dtype=torch.long)
    pixel_mask[0] = 1
    pixel_mask[1, :96, :128] = 1
    with torch.no_grad():
        ref = theirs(pixel_values=inputs, pixel_mask=pixel_mask)
        cls, boxes = ours(inputs, SAMPLES, mode='tensor')
    assert cls.shape == (6, 2, 100, NUM_CLASSES + 1) and boxes.shape == (6, 2, 100, 4)
    assert (cls[-1] - ref.logits).abs().max() < 1e-4
    assert (boxes[-1] - ref.pred_boxes).abs().max() < 1e-4


def test_transformers_auxiliary_decoder_differs_from_the_official_one(pair):
    """With ``auxiliary_loss=True`` transformers' decoder is not DETR's (module docstring)."""
    _, theirs = pair
    aux = build_theirs(auxiliary_loss=True).eval()
    aux.load_state_dict(theirs.state_dict())
    inputs = padded_inputs()
    with torch.no_grad():
        plain, normed = theirs(pixel_values=inputs), aux(pixel_values=inputs)
    assert (plain.logits - normed.logits).abs().max() > 1e-2


def test_padding_mask_is_honoured():
    """The padded image's outputs equal those of the image alone; without the mask they do
    not. A ResNet's border features depend on the padding through its receptive fields (in
    DETR too), so the backbone is swapped for a patch embedding (32 x 32, stride 32), whose
    valid features do not: what is compared is the detector's mask, the positional encoding
    and the attention masks."""
    torch.manual_seed(0)
    model = build_ours().eval()
    patchify = torch.nn.Conv2d(3, 256, 32, stride=32)
    model.extract_feat = lambda inputs: (patchify(inputs),)
    inputs = padded_inputs()
    alone = inputs[1:, :, :96, :128]
    with torch.no_grad():
        cls_b, boxes_b = model(inputs, SAMPLES, mode='tensor')
        cls_a, boxes_a = model(alone, SAMPLES[1:2], mode='tensor')
        unmasked = model(inputs, None, mode='tensor')[0]
    assert (cls_b[:, 1] - cls_a[:, 0]).abs().max() < 1e-4
    assert (boxes_b[:, 1] - boxes_a[:, 0]).abs().max() < 1e-4
    assert (unmasked[:, 1] - cls_a[:, 0]).abs().max() > 1e-2


def test_transformer_ignores_whatever_the_padded_tokens_hold():
    torch.manual_seed(0)
    model = build_ours(num_classes=3).eval()
    mask = torch.zeros(1, 4, 7, dtype=torch.bool)
    mask[:, :, 5:] = True
    mask[:, 3:] = True
    feat = torch.randn(1, 256, 4, 7)
    pos = model.positional_encoding(mask)
    pos_alone = model.positional_encoding(torch.zeros(1, 3, 5, dtype=torch.bool))
    assert torch.allclose(pos[:, :, :3, :5], pos_alone, atol=1e-6)

    def run(feat, pos, mask):
        memory = feat.flatten(2).transpose(1, 2)
        pos = pos.flatten(2).transpose(1, 2)
        with torch.no_grad():
            memory = model.encoder(memory, pos, mask.flatten(1))
            query_pos = model.query_embedding.weight[None]
            return model.decoder(torch.zeros_like(query_pos), memory, query_pos, pos,
                                 mask.flatten(1))

    garbage = feat.clone()
    garbage[:, :, 3:] = 1e3
    garbage[:, :, :, 5:] = -1e3
    out = run(garbage, pos, mask)
    ref = run(feat[:, :, :3, :5], pos_alone, torch.zeros(1, 3, 5, dtype=torch.bool))
    assert (out - ref).abs().max() < 1e-4


def test_attention_equals_torch_multihead_attention():
    from toolbox_plugins.layers.detr_transformer import MultiheadAttention
    torch.manual_seed(0)
    ours, ref = MultiheadAttention(32, 4, dropout=0.1), torch.nn.MultiheadAttention(
        32, 4, dropout=0.1, batch_first=True)
    ours.load_state_dict(ref.state_dict())
    q, k = torch.randn(2, 5, 32), torch.randn(2, 7, 32)
    mask = torch.zeros(2, 7, dtype=torch.bool)
    mask[1, 4:] = True
    for training in (False, True):  # training: no dropout drawn when p = 0
        ours.train(training), ref.train(training)
        ours.dropout = ref.dropout = 0.1 if not training else 0.0
        for query, key in ((q, k), (q, q)):
            out = ours(query, key, key, mask if key is k else None)
            expected = ref(query, key, key, key_padding_mask=mask if key is k else None,
                           need_weights=False)[0]
            assert (out - expected).abs().max() < 1e-5


def test_fast_dropout_drops_p_and_keeps_the_mean():
    from toolbox_plugins.layers.detr_transformer import fast_dropout
    torch.manual_seed(0)
    x = torch.ones(1000, 1000)
    out = fast_dropout(x, 0.1)
    assert abs((out == 0).float().mean().item() - 0.1) < 2e-3  # 1e6 draws: sd 3e-4
    assert torch.allclose(out.unique(), torch.tensor([0.0, 1 / 0.9]))
    assert abs(out.mean().item() - 1.0) < 3e-3
    assert fast_dropout(x, 0.1, training=False) is x
    torch.manual_seed(1)
    a = fast_dropout(x[:3, :5], 0.5)
    torch.manual_seed(1)
    assert torch.equal(a, fast_dropout(x[:3, :5], 0.5))


def test_sine_encoding_by_hand():
    enc = MODELS.build(dict(type='SinePositionalEncoding', num_feats=4))
    mask = torch.zeros(1, 2, 3, dtype=torch.bool)
    pos = enc(mask)  # (1, 8, 2, 3): [y sin, y cos, y sin, y cos, x ...]
    y = 2 / (2 + 1e-6) * 2 * math.pi  # row 2 of 2
    x = 1 / (3 + 1e-6) * 2 * math.pi  # column 1 of 3
    expected_y = [math.sin(y), math.cos(y), math.sin(y / 100), math.cos(y / 100)]
    expected_x = [math.sin(x), math.cos(x), math.sin(x / 100), math.cos(x / 100)]
    assert torch.allclose(pos[0, :, 1, 0], torch.tensor(expected_y + expected_x), atol=1e-6)


# ------------------------------------------------------------------ matcher and criterion
def test_matcher_assignment_equals_transformers():
    torch.manual_seed(0)
    assigner = build_head(num_classes=5).assigner
    num_queries, sizes, (h, w) = 30, [7, 0, 30, 1], (120, 200)
    logits = torch.randn(len(sizes), num_queries, 6)
    boxes = torch.cat([torch.rand(len(sizes), num_queries, 2) * 0.6 + 0.2,
                       torch.rand(len(sizes), num_queries, 2) * 0.3 + 0.05], -1)
    targets = []
    for n in sizes:
        gt = torch.cat([torch.rand(n, 2) * 0.6 + 0.2, torch.rand(n, 2) * 0.3 + 0.05], -1)
        targets.append(dict(class_labels=torch.randint(0, 5, (n,)), boxes=gt))
    ref = HungarianMatcher(class_cost=1, bbox_cost=5, giou_cost=2)(
        dict(logits=logits, pred_boxes=boxes), targets)
    scale = torch.tensor([w, h, w, h])
    for b, target in enumerate(targets):
        result = assigner.assign(
            InstanceData(scores=logits[b], bboxes=box_convert(boxes[b], 'cxcywh', 'xyxy') * scale),
            InstanceData(labels=target['class_labels'],
                         bboxes=box_convert(target['boxes'], 'cxcywh', 'xyxy') * scale),
            img_meta=dict(img_shape=(h, w)))
        pos = result.pos_mask.nonzero().squeeze(1)
        ours_pairs = sorted(zip(pos.tolist(), (result.gt_inds[pos] - 1).tolist()))
        assert ours_pairs == sorted(zip(ref[b][0].tolist(), ref[b][1].tolist()))
        assert len(ours_pairs) == min(num_queries, sizes[b])


def criterion_inputs(seed=0, num_layers=6, num_queries=20):
    g = torch.Generator().manual_seed(seed)
    cls = torch.randn(num_layers, 2, num_queries, NUM_CLASSES + 1, generator=g)
    boxes = torch.cat([torch.rand(num_layers, 2, num_queries, 2, generator=g) * 0.6 + 0.2,
                       torch.rand(num_layers, 2, num_queries, 2, generator=g) * 0.3 + 0.05], -1)
    return cls, boxes


def hf_criterion(cls, boxes, samples, auxiliary_loss=True):
    config = DetrConfig(use_timm_backbone=False, use_pretrained_backbone=False,
                        num_labels=NUM_CLASSES, auxiliary_loss=auxiliary_loss,
                        decoder_layers=cls.shape[0])
    _, loss_dict, _ = ForObjectDetectionLoss(cls[-1], hf_labels(samples), cls.device, boxes[-1],
                                             config, cls, boxes)
    return loss_dict


def to_hf_names(losses: dict) -> dict:
    """``loss_cls_d0`` -> ``loss_ce_0`` etc., and our loss weights taken out (bbox 5, GIoU 2)."""
    out = {}
    for key, value in losses.items():
        m = re.match(r'loss_(cls|bbox|iou)(?:_d(\d+))?$', key)
        name = dict(cls='loss_ce', bbox='loss_bbox', iou='loss_giou')[m[1]]
        weight = dict(cls=1.0, bbox=5.0, iou=2.0)[m[1]]
        out[name + (f'_{m[2]}' if m[2] else '')] = value / weight
    return out


def test_set_criterion_equals_transformers_with_auxiliary_losses():
    head = build_head()
    cls, boxes = criterion_inputs()
    metas = [s.metainfo for s in SAMPLES]
    ours = head.loss_by_feat(cls, boxes, [s.gt_instances for s in SAMPLES], metas)
    assert len(ours) == 18 and all(k.startswith('loss_') for k in ours)
    ref = hf_criterion(cls, boxes, SAMPLES)
    ours = to_hf_names(ours)
    assert set(ours) <= set(ref)
    for key, value in ours.items():
        assert abs(value.item() - ref[key].item()) < 1e-5, (key, value, ref[key])


def test_end_to_end_loss_equals_transformers(pair):
    """Both networks in eval mode (no dropout), the same padded batch: final-layer losses."""
    ours, theirs = pair
    inputs = padded_inputs()
    pixel_mask = torch.zeros(2, *BATCH_SHAPE, dtype=torch.long)
    pixel_mask[0] = 1
    pixel_mask[1, :96, :128] = 1
    with torch.no_grad():
        ref = theirs(pixel_values=inputs, pixel_mask=pixel_mask, labels=hf_labels(SAMPLES))
        losses = to_hf_names(ours(inputs, SAMPLES, mode='loss'))
    for key in ('loss_ce', 'loss_bbox', 'loss_giou'):
        assert abs(losses[key].item() - ref.loss_dict[key].item()) < 1e-5, key


def test_images_without_objects():
    head = build_head(num_classes=3)
    cls, boxes = criterion_inputs(num_layers=2, num_queries=10)
    cls = cls[..., [0, 1, 2, -1]].requires_grad_()
    empty = sample([], [], (64, 80))
    one = sample([[4, 4, 30, 40]], [2], (64, 80))
    metas = [empty.metainfo, empty.metainfo]
    losses = head.loss_by_feat(cls, boxes, [empty.gt_instances] * 2, metas)
    # every query is no-object: the weighted mean is the plain mean of -log p(no-object)
    expected = -cls[-1].log_softmax(-1)[..., -1].mean()
    assert abs(losses['loss_cls'].item() - expected.item()) < 1e-5
    assert losses['loss_bbox'].item() == 0 and losses['loss_iou'].item() == 0
    sum(losses.values()).backward()
    assert torch.isfinite(cls.grad).all() and cls.grad.abs().sum() > 0
    # one image with an object, one without: equal to transformers
    mixed = head.loss_by_feat(cls.detach(), boxes, [one.gt_instances, empty.gt_instances],
                              [one.metainfo, empty.metainfo])
    config = DetrConfig(use_timm_backbone=False, use_pretrained_backbone=False, num_labels=3,
                        auxiliary_loss=True, decoder_layers=2)
    _, ref, _ = ForObjectDetectionLoss(cls.detach()[-1], hf_labels([one, empty]), 'cpu',
                                       boxes[-1], config, cls.detach(), boxes)
    for key, value in to_hf_names(mixed).items():
        assert abs(value.item() - ref[key].item()) < 1e-5, key


# ------------------------------------------------------------------ prediction
def test_predict_top_k_in_the_original_frame():
    """Detector path (the small BCCD recipe): top-k (query, class) softmax scores of the last
    layer, boxes from normalised cxcywh to the input frame, then to the original (x2) frame."""
    torch.manual_seed(0)
    model = build_ours('configs/detr_r18_bccd.py', num_classes=3).eval()
    model.bbox_head.test_cfg['max_per_img'] = 7
    inputs = torch.randn(1, 3, 64, 80)
    shrunk = sample([], [], (64, 80), scale_factor=(0.5, 0.5), ori_shape=(128, 160))
    with torch.no_grad():
        cls, boxes = model(inputs, [shrunk], mode='tensor')
        result = model(inputs, [shrunk], mode='predict')[0].pred_instances
    scores = cls[-1, 0].softmax(-1)[:, :3]
    top = scores.flatten().topk(7)
    assert torch.allclose(result.scores, top.values)
    assert result.labels.tolist() == (top.indices % 3).tolist()
    query = top.indices // 3
    expected = box_convert(boxes[-1, 0, query], 'cxcywh', 'xyxy') * torch.tensor([80, 64] * 2)
    expected = expected.clamp(min=0).minimum(torch.tensor([80., 64.] * 2)) * 2
    assert torch.allclose(result.bboxes, expected, atol=1e-4)


# ------------------------------------------------------------------ DETR's augmentation
def _results(h=100, w=200):
    import numpy as np
    img = np.arange(h * w * 3, dtype=np.float32).reshape(h, w, 3)
    return dict(img=img, img_shape=(h, w),
                gt_bboxes=np.array([[10, 10, 50, 40], [150, 60, 199, 99], [0, 0, 5, 5]],
                                   dtype=np.float32),
                gt_bboxes_labels=np.array([0, 1, 2]),
                gt_ignore_flags=np.array([False, False, True]))


def test_random_choice_resize_picks_one_of_the_scales():
    import numpy as np

    from toolbox.registry import TRANSFORMS
    resize = TRANSFORMS.build(dict(type='RandomChoiceResize',
                                   scales=[(1333, 50), (1333, 80)], keep_ratio=True))
    np.random.seed(0)
    shapes = {resize(_results())['img_shape'] for _ in range(20)}
    assert shapes == {(50, 100), (80, 160)}  # short edge 50 or 80
    out = resize(_results())
    factor = out['img_shape'][0] / 100
    assert np.allclose(out['gt_bboxes'][0], np.array([10, 10, 50, 40]) * factor)
    assert out['scale_factor'] == (factor, factor)


def test_random_size_crop_moves_clips_and_drops_boxes():
    import numpy as np

    from toolbox.registry import TRANSFORMS
    crop = TRANSFORMS.build(dict(type='RandomSizeCrop', min_size=30, max_size=120))
    for seed in range(20):
        np.random.seed(seed)
        src = _results()
        out = crop(_results())
        h, w = out['img_shape']
        assert 30 <= h <= 100 and 30 <= w <= 120 and out['img'].shape[:2] == (h, w)
        # the crop's top-left pixel tells the offset
        flat = int(out['img'][0, 0, 0]) // 3
        y1, x1 = divmod(flat, 200)
        assert np.array_equal(out['img'], src['img'][y1:y1 + h, x1:x1 + w])
        boxes = src['gt_bboxes'] - np.array([x1, y1, x1, y1], dtype=np.float32)
        boxes = np.clip(boxes, 0, [w, h, w, h])
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        assert np.allclose(out['gt_bboxes'], boxes[keep])
        assert out['gt_bboxes_labels'].tolist() == src['gt_bboxes_labels'][keep].tolist()
        assert out['gt_ignore_flags'].tolist() == src['gt_ignore_flags'][keep].tolist()
    # sides shorter than min_size stay whole
    np.random.seed(0)
    out = TRANSFORMS.build(dict(type='RandomSizeCrop', min_size=384, max_size=600))(_results())
    assert out['img_shape'] == (100, 200) and len(out['gt_bboxes']) == 3


def test_detr_coco_pipeline_builds_and_runs():
    import numpy as np

    from toolbox.datasets.transforms import PackInputs  # noqa: F401
    from toolbox.registry import TRANSFORMS
    cfg = load_config(str(REPO_ROOT / 'configs/detr_r50_8xb2-150e_coco.py'))
    steps = [TRANSFORMS.build(t) for t in cfg.train_pipeline[2:-1]]  # flip, random choice
    np.random.seed(0)
    for _ in range(6):
        results = _results(480, 640)
        for step in steps:
            results = step(results)
        short, long = sorted(results['img_shape'])
        # DETR's last step: short edge in 480..800 (step 32), unless the long edge hits 1333
        assert short in range(480, 801, 32) or long == 1333, results['img_shape']
