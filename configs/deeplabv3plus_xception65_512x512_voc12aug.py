# DeepLab v3+ with aligned Xception-65 on Pascal VOC 2012 trainaug, evaluated on val at output
# stride 16, single scale (TF model zoo: 82.20% val with COCO + ImageNet pretraining,
# reference/ANCHORS.md 3.4; this recipe starts from ImageNet weights only). Paper settings:
# separable ASPP (rates 6/12/18) and decoder, 512x512 crops (513 in the paper), batch 16,
# poly lr 0.007, 30k iterations, weight decay 4e-5, BN fine-tuned. The encoder starts from
# timm-format ImageNet weights (`timm.create_model('xception65.tf_in1k', pretrained=True)
# .state_dict()` saved with torch.save); offline, give a local path or
# model.backbone.pretrained=None.
_base_ = ['_base_/models/deeplabv3plus_xception65.py', '_base_/datasets/voc12aug.py',
          '_base_/schedules/schedule_poly_30k.py', '_base_/default_runtime.py']
model = dict(backbone=dict(pretrained='checkpoints/xception65_tf_in1k_timm.pth'))
optim_wrapper = dict(optimizer=dict(weight_decay=4e-5))
default_hooks = dict(logger=dict(interval=50, log_metric_by_epoch=False),
                     checkpoint=dict(by_epoch=False, interval=3000, max_keep_ckpts=3))
log_processor = dict(by_epoch=False)
