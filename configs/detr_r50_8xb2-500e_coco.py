# DETR R-50, 500 epochs on COCO 2017 (official: 42.0 box AP), lr x0.1 after 400 epochs.
_base_ = ['./detr_r50_8xb2-150e_coco.py']
max_epochs = 500
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True,
                        milestones=[400], gamma=0.1)]
