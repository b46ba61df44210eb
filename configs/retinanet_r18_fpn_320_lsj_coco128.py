# Ablation of retinanet_r18_fpn_320_copypaste_coco128.py without Copy-Paste: the same
# large-scale-jittering pipeline, seed and schedule, each sample on its own (the mixing wrapper
# only packs it).
_base_ = ['retinanet_r18_fpn_320_copypaste_coco128.py']
train_dataloader = dict(dataset=dict(pipeline=[dict(type='PackInputs')]))
